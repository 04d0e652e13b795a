"""Semantic segmentation metrics from a confusion matrix: mIoU, pixel and mean class accuracy.

Shape shorthand: B batch, K classes, H x W pixels.

The confusion matrix ``C[K, K]`` counts pixels by (true class, predicted class); it is built
with one ``bincount`` per batch. Pixels whose target is ``ignore_index`` are left out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


class MeanIoU:
    """Mean intersection over union over a dataset: ``update`` per batch, then ``compute``.

    Args:
        num_classes: K; labels are ``0..K-1``.
        ignore_index: target value of pixels to leave out (None: every pixel counts).
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if ignore_index is not None and 0 <= ignore_index < num_classes:
            raise ValueError(
                f"ignore_index={ignore_index} is a valid class label (0..{num_classes - 1}); "
                "use a value outside that range, or None"
            )
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        """Zero the confusion matrix."""
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch.

        Args:
            preds: predicted labels ``int[B, H, W]`` or class scores / logits ``float[B, K, H, W]``
                (the arg-max over K is taken).
            target: true labels ``int[B, H, W]`` in ``0..K-1`` or ``ignore_index``.
        """
        K = self.num_classes
        if not isinstance(preds, Tensor) or not isinstance(target, Tensor):
            raise ValueError(
                f"preds and target must be Tensors, got {type(preds).__name__} and {type(target).__name__}"
            )
        if target.dim() != 3 or target.is_floating_point() or target.dtype == torch.bool:
            raise ValueError(
                f"target must be an integer Tensor[B, H, W], got {target.dtype} {tuple(target.shape)}"
            )
        if preds.dim() == 4:
            if not preds.is_floating_point():
                raise ValueError(f"preds as [B, K, H, W] must hold float scores, got {preds.dtype}")
            if preds.shape[1] != K:
                raise ValueError(f"preds has {preds.shape[1]} channels but num_classes={K}")
            labels = preds.argmax(1)  # (B, K, H, W) -> (B, H, W)
        elif preds.dim() == 3:
            if preds.is_floating_point() or preds.dtype == torch.bool:
                raise ValueError(f"preds as [B, H, W] must hold integer labels, got {preds.dtype}")
            labels = preds
        else:
            raise ValueError(
                f"preds must be int[B, H, W] labels or float[B, K, H, W] scores, got {tuple(preds.shape)}"
            )
        if labels.shape != target.shape:
            raise ValueError(
                f"preds labels {tuple(labels.shape)} and target {tuple(target.shape)} differ in shape"
            )
        t = target.detach().reshape(-1).to(torch.int64).cpu()  # (B, H, W) -> (BHW,)
        p = labels.detach().reshape(-1).to(torch.int64).cpu()
        if self.ignore_index is not None:
            keep = t != self.ignore_index
            t, p = t[keep], p[keep]
        if t.numel():
            if int(t.min()) < 0 or int(t.max()) >= K:
                bad = t[(t < 0) | (t >= K)][0].item()
                raise ValueError(
                    f"target holds label {bad}, outside 0..{K - 1} (ignore_index={self.ignore_index})"
                )
            if int(p.min()) < 0 or int(p.max()) >= K:
                bad = p[(p < 0) | (p >= K)][0].item()
                raise ValueError(f"preds holds label {bad}, outside 0..{K - 1}")
        self.confusion += torch.bincount(t * K + p, minlength=K * K).reshape(K, K)  # (K*K,) -> (K, K)

    def compute(self) -> dict[str, Tensor]:
        """Metrics of everything seen (float64; NaN where undefined).

        Returns:
            ``miou``: mean of ``iou_per_class`` over classes present in target or preds;
            ``iou_per_class`` [K] (NaN for a class absent from both); ``pixel_accuracy``;
            ``mean_accuracy`` (mean recall over classes present in target);
            ``accuracy_per_class`` [K] (NaN for a class absent from target);
            ``confusion_matrix`` [K, K] int64 (rows: target, columns: prediction).
        """
        c = self.confusion.to(torch.float64)
        tp = torch.diagonal(c)  # (K,)
        per_target = c.sum(1)
        union = per_target + c.sum(0) - tp
        iou = tp / union  # 0 / 0 -> NaN for absent classes
        acc = tp / per_target
        return {
            "miou": torch.nanmean(iou),
            "iou_per_class": iou,
            "pixel_accuracy": tp.sum() / c.sum(),
            "mean_accuracy": torch.nanmean(acc),
            "accuracy_per_class": acc,
            "confusion_matrix": self.confusion.clone(),
        }


def boundary_band(target: Tensor, width: int = 5, ignore_index: int | None = 255) -> Tensor:
    """Pixels within ``width`` px (Chebyshev distance) of a label edge: ``bool[B, H, W]``.

    The trimap band of DeepLab's boundary evaluation. An edge pixel is one whose label differs
    from its right or lower neighbour (both pixels of the pair are edge pixels); the band is the
    edge map dilated by a ``(2 * width + 1)`` square. Ignored pixels never enter the band.

    Args:
        target: true labels ``int[B, H, W]``.
        width: band half-width in pixels (>= 0; 0 keeps the edge pixels only).
    """
    if not isinstance(target, Tensor) or target.dim() != 3 or target.is_floating_point():
        raise ValueError(
            f"target must be an integer Tensor[B, H, W], got {getattr(target, 'shape', target)!r}"
        )
    if isinstance(width, bool) or not isinstance(width, int) or width < 0:
        raise ValueError(f"width must be an int >= 0, got {width!r}")
    t = target
    edge = torch.zeros_like(t, dtype=torch.bool)  # (B, H, W)
    dx = t[:, :, 1:] != t[:, :, :-1]  # (B, H, W-1): differs from the right neighbour
    dy = t[:, 1:, :] != t[:, :-1, :]  # (B, H-1, W): differs from the lower neighbour
    edge[:, :, 1:] |= dx
    edge[:, :, :-1] |= dx
    edge[:, 1:, :] |= dy
    edge[:, :-1, :] |= dy
    if width > 0:
        k = 2 * width + 1
        band = F.max_pool2d(edge[:, None].float(), k, stride=1, padding=width)[:, 0] > 0  # (B, H, W)
    else:
        band = edge
    if ignore_index is not None:
        band &= t != ignore_index
    return band


class SegmentationMetric:
    """The engine's metric for semantic segmenters: mIoU over all pixels and in the boundary band.

    ``update(preds, targets)`` takes the model's ``{"label_map": int64[B, H, W], ...}`` and the list of
    target dicts (label map under ``target_key``); ``compute()`` gives :class:`MeanIoU`'s
    figures plus ``boundary_miou`` and ``boundary_pixel_accuracy`` (pixels within
    ``boundary_width`` px of a true label edge, see :func:`boundary_band`).
    """

    def __init__(
        self,
        num_classes: int,
        target_key: str = "semantic",
        ignore_index: int | None = 255,
        boundary_width: int = 5,
    ) -> None:
        self.all = MeanIoU(num_classes, ignore_index)
        self.band = MeanIoU(num_classes, ignore_index)
        self.target_key = target_key
        self.ignore_index = ignore_index
        self.boundary_width = boundary_width

    def reset(self) -> None:
        """Forget everything seen."""
        self.all.reset()
        self.band.reset()

    def update(self, preds: dict[str, Tensor], targets: list[dict[str, Tensor]]) -> None:
        """Add a batch of predictions ``{"label_map": int64[B, H, W]}`` and their targets."""
        if not isinstance(preds, dict) or "label_map" not in preds:
            raise ValueError(f"preds must be a dict with 'label_map' [B, H, W], got {type(preds).__name__}")
        missing = [i for i, t in enumerate(targets) if self.target_key not in t]
        if missing:
            raise ValueError(f"targets {missing[:5]} have no {self.target_key!r} label map")
        labels = preds["label_map"]  # (B, H, W)
        target = torch.stack([t[self.target_key] for t in targets]).to(labels.device)  # (B, H, W)
        self.all.update(labels, target)
        band = boundary_band(target, self.boundary_width, self.ignore_index)
        fill = self.ignore_index if self.ignore_index is not None else -1
        if fill == -1:  # every pixel counts in MeanIoU: keep the band's pixels only
            self.band.update(labels[band][None, None], target[band][None, None])
        else:
            self.band.update(labels, torch.where(band, target, torch.full_like(target, fill)))

    def compute(self) -> dict[str, Tensor]:
        """:class:`MeanIoU`'s results, plus ``boundary_miou`` and ``boundary_pixel_accuracy``."""
        out = self.all.compute()
        band = self.band.compute()
        out["boundary_miou"] = band["miou"]
        out["boundary_pixel_accuracy"] = band["pixel_accuracy"]
        return out
