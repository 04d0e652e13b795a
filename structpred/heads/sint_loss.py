"""SINT's training signal: the marginal contrastive loss and pair sampling by IoU (Tao, Gavves,
Smeulders, CVPR 2016, eq. 1 and section 4).

Shape shorthand: T frames, M tracks, P pairs, K candidate boxes, D embedding size.

* **Marginal contrastive loss** of a pair of embeddings ``x_j``, ``x_k`` at distance
  ``d = ||x_j - x_k||_2`` with label ``y`` (1 matching, 0 not):
  ``L = 1/2 y d^2 + 1/2 (1 - y) max(0, eps - d)^2``; the mean over the pairs is returned.
* **Pairs**: a query is the true box of the target in one frame; candidates are boxes in another
  frame of the same track, jittered around the true box there (shift and scale). A candidate is a
  positive when its IoU with the true box is >= ``pos_iou`` (0.7), a negative when it is <=
  ``neg_iou`` (0.5); those in between are dropped, as in the paper's sampling (positives IoU > 0.7,
  negatives IoU < 0.5 with the ground truth). Other tracks' true boxes in the search frame are
  added as negatives (look-alike distractors of the shapes world).
* :func:`target_track`: one track per clip target: ``boxes`` ``[T, 4]`` (+ ``visible`` ``[T]``),
  or from a multi-object clip (``tracks`` ``[M, T, 4]``, NaN where unseen, + ``visible``
  ``[M, T]``) the first track seen in frame 0. The model and the tracking task use the same rule.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..ops.boxes import box_iou

__all__ = ["marginal_contrastive_loss", "sample_candidates", "target_track", "track_targets"]


def marginal_contrastive_loss(a: Tensor, b: Tensor, same: Tensor, margin: float = 1.0) -> Tensor:
    """Mean marginal contrastive loss of paired embeddings.

    Args:
        a, b (Tensor[P, D]): embeddings of the two sides of each pair.
        same (bool Tensor[P]): the pair shows the same object (positive).
        margin: ``eps``; non-matching pairs farther apart than it cost nothing.
    Returns:
        scalar Tensor (0 for ``P = 0``, still connected to the graph).
    """
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(
            f"marginal_contrastive_loss: a {tuple(a.shape)} and b {tuple(b.shape)} must be one [P, D]"
        )
    if same.shape != a.shape[:1]:
        raise ValueError(
            f"marginal_contrastive_loss: same must be [P] = [{a.shape[0]}], got {tuple(same.shape)}"
        )
    if not margin > 0:
        raise ValueError(f"marginal_contrastive_loss: margin must be > 0, got {margin}")
    if a.shape[0] == 0:
        return (a.sum() + b.sum()) * 0.0
    # The distance's gradient at d = 0 is 0/0; the tiny floor keeps it finite for identical rows.
    d = (a - b).pow(2).sum(1).add(1e-12).sqrt()  # (P,)
    pos = 0.5 * d.pow(2)
    neg = 0.5 * (margin - d).clamp(min=0).pow(2)
    return torch.where(same.bool(), pos, neg).mean()


def sample_candidates(
    box: Tensor,
    num: int,
    image_size: tuple[int, int],
    generator: torch.Generator | None = None,
    *,
    max_shift: float = 0.6,
    max_log_scale: float = math.log(1.5),
    pos_iou: float = 0.7,
    neg_iou: float = 0.5,
) -> tuple[Tensor, Tensor]:
    """Boxes jittered around the true ``box`` and their labels by IoU.

    Args:
        box (Tensor[4]): the true xyxy box in the search frame, pixels.
        num: candidates drawn (before dropping the ambiguous ones).
        image_size: ``(H, W)``; candidates are clipped to the image.
        max_shift: centre shift, uniform in +-``max_shift`` x the box's width / height.
        max_log_scale: width and height scaled by ``exp(u)``, ``u`` uniform in +-this.
        pos_iou, neg_iou: IoU >= ``pos_iou`` -> positive, <= ``neg_iou`` -> negative.
    Returns:
        (boxes float[K, 4] xyxy, positive bool[K]), K <= ``num``; the true box itself is always
        the first candidate (a positive).
    """
    if box.shape != (4,):
        raise ValueError(f"sample_candidates: box must be one xyxy [4], got {tuple(box.shape)}")
    if not 0 <= neg_iou < pos_iou <= 1:
        raise ValueError(f"sample_candidates: need 0 <= neg_iou < pos_iou <= 1, got {neg_iou}, {pos_iou}")
    H, W = image_size
    w, h = (box[2] - box[0]).clamp(min=1.0), (box[3] - box[1]).clamp(min=1.0)
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    u = torch.rand(num, 4, generator=generator, dtype=torch.float32).to(box) * 2 - 1  # (num, 4) in [-1, 1]
    ncx, ncy = cx + u[:, 0] * max_shift * w, cy + u[:, 1] * max_shift * h
    nw, nh = w * torch.exp(u[:, 2] * max_log_scale), h * torch.exp(u[:, 3] * max_log_scale)
    boxes = torch.stack([ncx - nw / 2, ncy - nh / 2, ncx + nw / 2, ncy + nh / 2], 1)  # (num, 4)
    boxes = torch.cat([box[None], boxes])  # (num + 1, 4): the true box first
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, W)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, H)
    iou = box_iou(boxes, box[None]).nan_to_num(0.0)[:, 0]  # (num + 1,)
    keep = (
        ((iou >= pos_iou) | (iou <= neg_iou))
        & (boxes[:, 2] - boxes[:, 0] >= 1)
        & (boxes[:, 3] - boxes[:, 1] >= 1)
    )
    return boxes[keep], iou[keep] >= pos_iou


def target_track(target: Any, T: int, where: str) -> tuple[Tensor, Tensor]:
    """The one track of a clip's target: ``(boxes float[T, 4] xyxy, visible bool[T])``.

    ``target`` holds ``boxes`` ``[T, 4]`` (optional ``visible`` ``[T]``) or ``tracks``
    ``[M, T, 4]`` (optional ``visible`` ``[M, T]``): then the first track seen in frame 0. A
    frame is visible only when its box is finite with positive width and height. Raises a
    ``ValueError`` naming ``where`` and the field.
    """
    if not isinstance(target, dict):
        raise ValueError(f"{where}: a target must be a dict, got {type(target).__name__}")
    if "boxes" in target:
        boxes, visible = target["boxes"], target.get("visible")
        if not isinstance(boxes, Tensor) or tuple(boxes.shape) != (T, 4) or not boxes.is_floating_point():
            got = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
            raise ValueError(f"{where}: 'boxes' must be a float Tensor[{T}, 4] (xyxy per frame), got {got}")
        if visible is not None and (not isinstance(visible, Tensor) or tuple(visible.shape) != (T,)):
            got = tuple(visible.shape) if isinstance(visible, Tensor) else type(visible).__name__
            raise ValueError(f"{where}: 'visible' must be a bool Tensor[{T}], got {got}")
    elif "tracks" in target:
        tracks, vis = target["tracks"], target.get("visible")
        if not isinstance(tracks, Tensor) or tracks.dim() != 3 or tuple(tracks.shape[1:]) != (T, 4):
            got = tuple(tracks.shape) if isinstance(tracks, Tensor) else type(tracks).__name__
            raise ValueError(f"{where}: 'tracks' must be a float Tensor[M, {T}, 4], got {got}")
        if vis is not None and (not isinstance(vis, Tensor) or vis.shape != tracks.shape[:2]):
            got = tuple(vis.shape) if isinstance(vis, Tensor) else type(vis).__name__
            raise ValueError(f"{where}: 'visible' must be a bool Tensor[M, {T}] beside 'tracks', got {got}")
        seen = _usable(tracks[:, 0]) & (vis[:, 0].bool() if vis is not None else True)  # (M,)
        if not bool(seen.any()):
            raise ValueError(f"{where}: no track is visible in frame 0 (a tracker needs the first box)")
        m = int(seen.nonzero()[0, 0])
        boxes, visible = tracks[m].float(), (vis[m] if vis is not None else None)
    else:
        raise ValueError(
            f"{where}: the target needs 'boxes' [T, 4] (or 'tracks' [M, T, 4]), has {sorted(target)}"
        )
    ok = _usable(boxes)
    if visible is not None:
        ok = ok & visible.bool().to(ok.device)
    return boxes, ok


def track_targets(target: dict[str, Any], T: int, where: str) -> list[tuple[Tensor, Tensor]]:
    """Every track of a clip's target seen in frame 0, each ``(boxes [T, 4], visible [T])`` (the
    training pairs use them all; :func:`target_track` is the first)."""
    if "tracks" not in target or "boxes" in target:
        return [target_track(target, T, where)]
    first = target_track(target, T, where)  # validates
    tracks, vis = target["tracks"], target.get("visible")
    out = [first]
    for m in range(tracks.shape[0]):
        ok = _usable(tracks[m]) & (vis[m].bool() if vis is not None else True)
        if bool(ok[0]) and not torch.equal(tracks[m].float().nan_to_num(-1), first[0].nan_to_num(-1)):
            out.append((tracks[m].float(), ok))
    return out


def _usable(boxes: Tensor) -> Tensor:
    """bool[...]: the xyxy boxes ``[..., 4]`` are finite with positive width and height."""
    return torch.isfinite(boxes).all(-1) & (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
