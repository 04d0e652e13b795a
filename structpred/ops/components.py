"""From a semantic label map to instances (connected components) and matching them to the truth.

U-Net predicts classes, not instances; it separates touching cells by predicting the thin
background gap between them (the weighted loss of :mod:`structpred.ops.weight_map` makes it
learn those gaps), so the connected components of its foreground are its instances.

Shape shorthand: H x W pixels, P predicted instances, G true instances.

Convention: components are 4-connected by default (pixels touching only at a corner are
apart; ``connectivity=8`` joins them); instance masks are uint8[N, H, W], ordered by
scipy's labelling (row-major first pixel).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


def instances_from_semantic(
    labels: Tensor, foreground: Sequence[int] = (1,), min_pixels: int = 1, connectivity: int = 4
) -> Tensor:
    """Connected components of the ``foreground`` pixels of ``labels int[H, W]``: uint8[P, H, W].

    Components of fewer than ``min_pixels`` pixels are dropped. All foreground classes form
    one foreground (pass one class at a time for per-class instances).
    """
    if not isinstance(labels, Tensor) or labels.dim() != 2 or labels.is_floating_point():
        raise ValueError(
            f"labels must be an integer Tensor[H, W], got {getattr(labels, 'shape', type(labels))}"
        )
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    if not isinstance(min_pixels, int) or min_pixels < 1:
        raise ValueError(f"min_pixels must be an int >= 1, got {min_pixels!r}")
    from scipy.ndimage import label as label_components

    fg = torch.isin(labels, torch.as_tensor(list(foreground), dtype=labels.dtype, device=labels.device))
    structure = np.ones((3, 3), bool) if connectivity == 8 else None  # None: scipy's cross (4-conn.)
    ids, count = label_components(fg.cpu().numpy(), structure=structure)  # (H, W) 0..count
    ids_t = torch.from_numpy(ids.astype(np.int64))
    sizes = torch.bincount(ids_t.reshape(-1), minlength=count + 1)  # (count + 1,)
    kept = torch.nonzero(sizes[1:] >= min_pixels).reshape(-1) + 1  # (P,) component ids
    masks = ids_t.unsqueeze(0) == kept.view(-1, 1, 1)  # (1, H, W) vs (P, 1, 1) -> (P, H, W)
    return masks.to(torch.uint8).to(labels.device)


def mask_iou_matrix(pred: Tensor, gt: Tensor) -> Tensor:
    """IoU of every pair of masks: ``pred [P, H, W]`` x ``gt [G, H, W]`` (0/1) -> float64[P, G]."""
    if pred.dim() != 3 or gt.dim() != 3 or pred.shape[-2:] != gt.shape[-2:]:
        raise ValueError(
            f"masks must be [P, H, W] and [G, H, W] of one size, got {tuple(pred.shape)}, {tuple(gt.shape)}"
        )
    p = pred.flatten(1).to(torch.float64)  # (P, H, W) -> (P, HW)
    g = gt.flatten(1).to(torch.float64)  # (G, H, W) -> (G, HW)
    inter = p @ g.T  # (P, G)
    union = p.sum(1, keepdim=True) + g.sum(1) - inter  # (P, 1) + (G,) -> (P, G)
    return torch.where(union > 0, inter / union.clamp(min=1), 0.0)


def match_instances(pred: Tensor, gt: Tensor, iou_threshold: float = 0.5) -> Tensor:
    """For each true instance, the index of the predicted one matched to it, or -1: int64[G].

    Greedy one-to-one matching by decreasing IoU, pairs with ``IoU >= iou_threshold`` only
    (above 0.5 a match is unique anyway).
    """
    iou = mask_iou_matrix(pred, gt)  # (P, G)
    P, G = iou.shape
    matched = torch.full((G,), -1, dtype=torch.int64)
    if P == 0 or G == 0:
        return matched
    order = torch.argsort(iou.reshape(-1), descending=True)  # (P*G,)
    used_p = torch.zeros(P, dtype=torch.bool)
    for flat in order.tolist():
        p, g = divmod(flat, G)
        if iou[p, g] < iou_threshold:
            break
        if not used_p[p] and matched[g] < 0:
            used_p[p] = True
            matched[g] = p
    return matched


def close_pairs(masks: Tensor, max_gap: int = 0) -> list[tuple[int, int]]:
    """Pairs ``(i, j)``, ``i < j``, of instances ``masks [N, H, W]`` within ``max_gap`` px.

    Two instances are within ``max_gap`` when some pixel of one lies within Euclidean distance
    ``max_gap + 1`` (centre to centre) of a pixel of the other: ``max_gap=0`` gives the pairs
    sharing a pixel edge (touching), 1 adds those meeting at a corner or one pixel apart. These
    are the pairs a semantic map can only tell apart by a thin background gap.
    """
    if not isinstance(masks, Tensor) or masks.dim() != 3:
        raise ValueError(f"masks must be a Tensor[N, H, W], got {getattr(masks, 'shape', type(masks))}")
    if not isinstance(max_gap, int) or max_gap < 0:
        raise ValueError(f"max_gap must be an int >= 0, got {max_gap!r}")
    from scipy.ndimage import distance_transform_edt

    m = masks.detach().cpu().numpy().astype(bool)  # (N, H, W)
    pairs = []
    for i in range(m.shape[0]):
        if not m[i].any():
            continue
        near = distance_transform_edt(~m[i]) <= max_gap + 1  # (H, W): pixels close to instance i
        pairs += [(i, j) for j in range(i + 1, m.shape[0]) if (near & m[j]).any()]
    return pairs
