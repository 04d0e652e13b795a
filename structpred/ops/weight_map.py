"""U-Net's pixel-wise loss weight map (Ronneberger, Fischer, Brox 2015, eq. 2).

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))

and the separation borders between touching instances that make those gaps exist.

Shape shorthand: N instances, H x W pixels, K classes.

Convention:
    * ``w_c`` balances the class frequencies of one label map: a pixel of class ``k`` weighs
      ``n / (K' * n_k)`` (``n`` non-ignored pixels, ``n_k`` of them of class ``k``, ``K'`` classes
      present), so every present class carries the same total weight and ``w_c`` averages 1
      over the non-ignored pixels. (The paper does not spell ``w_c`` out; this is the usual
      inverse-frequency reading.) With many classes a part of a few pixels would weigh
      thousands; pass fixed ``class_weights`` (e.g. the training set's,
      :func:`class_frequency_weights`) instead. Ignored pixels weigh 0 in the whole map.
    * ``d1(x)``, ``d2(x)``: Euclidean distance in pixels (centre to centre) from ``x`` to the
      nearest pixel of the nearest and of the second-nearest instance, from
      ``scipy.ndimage.distance_transform_edt`` of each instance's complement.
    * The border term is added on background pixels only (label ``background``): the gaps
      between cells that it is meant to make the network learn (the paper's Fig. 3d). With
      fewer than two instances it is 0 (``d2`` is infinite).
    * Separation borders (the paper: "computed using morphological operations"): an instance
      pixel with a 4-neighbour in another instance becomes background in the training labels,
      so touching instances are 2 px apart; the instance masks stay whole, so these border
      pixels get ``d1 = 0``, ``d2 = 1`` and the full border weight ``~w0``.
    * CPU work on the label map (numpy / scipy; about 0.5 ms per instance on a 128 x 128 crop);
      the result is float32 on the labels' device.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

W0 = 10.0  # the paper's w0
SIGMA = 5.0  # the paper's sigma, pixels


def _check_labels(labels: Tensor, name: str) -> None:
    if (
        not isinstance(labels, Tensor)
        or labels.dim() != 2
        or labels.is_floating_point()
        or labels.dtype == torch.bool
    ):
        desc = (
            f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, Tensor) else type(labels).__name__
        )
        raise ValueError(f"{name} must be an integer Tensor[H, W], got {desc}")


def _check_masks(masks: Tensor, size: tuple[int, ...] | None, name: str) -> None:
    if not isinstance(masks, Tensor) or masks.dim() != 3:
        desc = tuple(masks.shape) if isinstance(masks, Tensor) else type(masks).__name__
        raise ValueError(f"{name} must be a uint8/bool Tensor[N, H, W] of instance masks, got {desc}")
    if masks.dtype not in (torch.uint8, torch.bool):
        raise ValueError(f"{name} must be uint8 or bool (0/1 instance masks), got {masks.dtype}")
    if size is not None and tuple(masks.shape[-2:]) != size:
        raise ValueError(f"{name} are {tuple(masks.shape[-2:])} but the label map is {size}")


def class_balance_weights(
    labels: Tensor, num_classes: int, ignore_index: int = 255, class_weights: Tensor | None = None
) -> Tensor:
    """``w_c``: float32[H, W], ``n / (K' * n_k)`` on a class-``k`` pixel, 0 on ignored ones.

    Args:
        labels: int[H, W] class labels ``0..num_classes-1`` or ``ignore_index``.
        class_weights: float[K] fixed per-class weights (e.g. :func:`class_frequency_weights`
            of a whole training set) instead of this map's own frequencies.
    """
    _check_labels(labels, "labels")
    valid = labels != ignore_index  # (H, W)
    weights = torch.zeros(labels.shape, dtype=torch.float32, device=labels.device)
    if not bool(valid.any()):
        return weights
    values = labels[valid].to(torch.int64)  # (n,)
    if int(values.min()) < 0 or int(values.max()) >= num_classes:
        raise ValueError(f"labels must lie in 0..{num_classes - 1} or be {ignore_index}")
    if class_weights is not None:
        if class_weights.shape != (num_classes,):
            raise ValueError(f"class_weights must be [{num_classes}], got {tuple(class_weights.shape)}")
        per_class = class_weights.to(labels.device, torch.float32)
    else:
        per_class = class_frequency_weights(torch.bincount(values, minlength=num_classes))  # (K,)
    weights[valid] = per_class.to(labels.device)[values]
    return weights


def class_frequency_weights(counts: Tensor) -> Tensor:
    """Inverse-frequency class weights ``n / (K' * n_k)`` from pixel counts ``[K]``: float32[K].

    ``K'`` classes have pixels; an absent class gets 0. Weighted by these, every present class
    carries the same total and the mean pixel weight is 1.
    """
    if not isinstance(counts, Tensor) or counts.dim() != 1 or bool((counts < 0).any()):
        raise ValueError(f"counts must be a non-negative Tensor[K], got {getattr(counts, 'shape', counts)!r}")
    c = counts.to(torch.float64)
    present = int((c > 0).sum())
    if present == 0:
        return torch.zeros(c.shape, dtype=torch.float32)
    return torch.where(c > 0, c.sum() / (present * c.clamp(min=1)), 0.0).to(torch.float32)


def nearest_two_distances(masks: Tensor) -> tuple[Tensor, Tensor]:
    """``(d1, d2)``: float64[H, W] distances (pixels) to the nearest and second-nearest instance.

    ``masks`` uint8/bool[N, H, W]; a pixel inside instance ``i`` is at distance 0 from it.
    Distances to missing instances are ``inf`` (``d2`` everywhere when N < 2). Empty masks are
    skipped.
    """
    _check_masks(masks, None, "masks")
    H, W = masks.shape[-2:]
    d1 = np.full((H, W), np.inf)
    d2 = np.full((H, W), np.inf)
    from scipy.ndimage import distance_transform_edt

    for mask in masks.detach().cpu().numpy().astype(bool):  # (H, W) each
        if not mask.any():
            continue
        d = distance_transform_edt(~mask)  # distance to the nearest pixel of this instance
        d2 = np.minimum(d2, np.maximum(d1, d))  # the running second smallest
        d1 = np.minimum(d1, d)
    return torch.from_numpy(d1), torch.from_numpy(d2)


def border_weights(masks: Tensor, w0: float = W0, sigma: float = SIGMA) -> Tensor:
    """The border term ``w0 * exp(-(d1 + d2)^2 / (2 sigma^2))``: float32[H, W], every pixel.

    ``masks`` uint8/bool[N, H, W]; 0 everywhere with fewer than two non-empty instances.
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    d1, d2 = nearest_two_distances(masks)
    term = w0 * np.exp(-((d1 + d2).numpy() ** 2) / (2.0 * sigma**2))  # exp(-inf) = 0
    return torch.from_numpy(term.astype(np.float32)).to(masks.device)


def unet_weight_map(
    labels: Tensor,
    masks: Tensor,
    num_classes: int,
    w0: float = W0,
    sigma: float = SIGMA,
    class_balance: bool = True,
    background: int = 0,
    ignore_index: int = 255,
    class_weights: Tensor | None = None,
) -> Tensor:
    """The paper's ``w(x)`` (module doc) of one target: float32[H, W].

    Args:
        labels: int[H, W] class labels (``ignore_index`` pixels get weight 0).
        masks: uint8/bool[N, H, W] instance masks of the same image (N may be 0).
        num_classes: K, background included.
        w0, sigma: border weight and width (pixels); paper 10 and 5.
        class_balance: use ``w_c`` (else 1 on every non-ignored pixel).
        class_weights: float[K] fixed ``w_c`` per class (None: this map's own frequencies).
        background: the label whose pixels get the border term.
    """
    _check_labels(labels, "labels")
    _check_masks(masks, tuple(labels.shape), "masks")
    valid = labels != ignore_index  # (H, W)
    if class_balance:
        weights = class_balance_weights(labels, num_classes, ignore_index, class_weights)
    else:
        weights = valid.to(torch.float32)
    if w0 != 0 and masks.shape[0] >= 2:
        border = border_weights(masks, w0, sigma).to(labels.device)  # (H, W)
        weights = weights + torch.where(labels == background, border, 0.0)
    return weights


def separation_borders(labels: Tensor, masks: Tensor, background: int = 0) -> Tensor:
    """``labels int[H, W]`` with every pixel where two instances of ``masks [N, H, W]`` touch
    (a pixel of one with a 4-neighbour in another) set to ``background``; a new tensor."""
    _check_labels(labels, "labels")
    _check_masks(masks, tuple(labels.shape), "masks")
    H, W = labels.shape
    owner = torch.full((H, W), -1, dtype=torch.int64, device=labels.device)  # instance id or -1
    for i, mask in enumerate(masks.to(torch.bool)):
        owner[mask] = i
    contact = torch.zeros(H, W, dtype=torch.bool, device=labels.device)
    for dy, dx in ((0, 1), (1, 0)):  # pixel (y, x) against (y + dy, x + dx)
        a, b = owner[: H - dy, : W - dx], owner[dy:, dx:]  # (H - dy, W - dx) each
        touch = (a >= 0) & (b >= 0) & (a != b)
        contact[: H - dy, : W - dx] |= touch
        contact[dy:, dx:] |= touch
    return torch.where(contact, torch.full_like(labels, background), labels)
