"""Box regression targets (R-CNN parameterisation), as torchvision's ``BoxCoder``.

A box is regressed from a reference box (anchor or proposal) as

    dx = wx * (gx - px) / pw      dy = wy * (gy - py) / ph
    dw = ww * log(gw / pw)        dh = wh * log(gh / ph)

with (x, y) the centre and (w, h) the size. Decoding inverts it, clamping ``dw, dh`` at
``log(1000 / 16)`` so ``exp`` cannot blow up on a wild prediction. Weights ``(10, 10, 5, 5)``
are the RoI heads' usual choice, ``(1, 1, 1, 1)`` the RPN's.

The *linear* coder (FCOS, Tian et al. 2019; torchvision's ``BoxLinearCoder``) regresses a box
as the distances from the reference box's centre to its four sides,

    l = cx - gx1      t = cy - gy1      r = gx2 - cx      b = gy2 - cy

divided by the reference's ``(w, h, w, h)`` when ``normalize_by_size`` (torchvision's FCOS
uses square references of side 8 x stride, so the codes are in units of that size). It works
on any ``[..., 4]`` shape and has no clamp: decoding is linear.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ._checks import check_boxes

DEFAULT_CLIP = math.log(1000.0 / 16)


def _weights(weights: Sequence[float]) -> tuple[float, float, float, float]:
    if len(weights) != 4:
        raise ValueError(f"weights must be (wx, wy, ww, wh), got {weights!r}")
    wx, wy, ww, wh = (float(w) for w in weights)
    return wx, wy, ww, wh


def encode_boxes(
    gt: Tensor, reference: Tensor, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0)
) -> Tensor:
    """Deltas that take ``reference`` boxes to ``gt`` boxes.

    Args:
        gt (Tensor[N, 4]), reference (Tensor[N, 4]): paired xyxy boxes; reference boxes
            must have positive width and height.
        weights: (wx, wy, ww, wh).
    Returns:
        Tensor[N, 4]: (dx, dy, dw, dh).
    """
    check_boxes(gt, "gt", rank2=True)
    check_boxes(reference, "reference", rank2=True)
    if gt.shape[0] != reference.shape[0]:
        raise ValueError(f"gt and reference must pair up: {gt.shape[0]} vs {reference.shape[0]} boxes")
    wx, wy, ww, wh = _weights(weights)
    ex_w = reference[:, 2:3] - reference[:, 0:1]  # (N, 1)
    ex_h = reference[:, 3:4] - reference[:, 1:2]
    ex_x = reference[:, 0:1] + 0.5 * ex_w
    ex_y = reference[:, 1:2] + 0.5 * ex_h
    gt_w = gt[:, 2:3] - gt[:, 0:1]
    gt_h = gt[:, 3:4] - gt[:, 1:2]
    gt_x = gt[:, 0:1] + 0.5 * gt_w
    gt_y = gt[:, 1:2] + 0.5 * gt_h
    dx = wx * (gt_x - ex_x) / ex_w
    dy = wy * (gt_y - ex_y) / ex_h
    dw = ww * torch.log(gt_w / ex_w)
    dh = wh * torch.log(gt_h / ex_h)
    return torch.cat((dx, dy, dw, dh), dim=1)


def decode_boxes(
    deltas: Tensor,
    reference: Tensor,
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    clip: float = DEFAULT_CLIP,
) -> Tensor:
    """Apply deltas to reference boxes.

    Args:
        deltas (Tensor[N, 4*J]): J sets of (dx, dy, dw, dh) per box (J classes, or 1).
        reference (Tensor[N, 4]): xyxy boxes.
        clip: upper bound on dw, dh before ``exp``.
    Returns:
        Tensor[N, 4*J]: xyxy boxes, J sets per row.
    """
    check_boxes(reference, "reference", rank2=True)
    if deltas.dim() != 2 or deltas.shape[1] % 4 != 0 or deltas.shape[0] != reference.shape[0]:
        raise ValueError(
            f"deltas must be [N, 4*J] with N = {reference.shape[0]} reference boxes, "
            f"got {tuple(deltas.shape)}"
        )
    reference = reference.to(deltas.dtype)
    wx, wy, ww, wh = _weights(weights)
    widths = reference[:, 2] - reference[:, 0]  # (N,)
    heights = reference[:, 3] - reference[:, 1]
    ctr_x = reference[:, 0] + 0.5 * widths
    ctr_y = reference[:, 1] + 0.5 * heights
    dx = deltas[:, 0::4] / wx  # (N, J)
    dy = deltas[:, 1::4] / wy
    dw = (deltas[:, 2::4] / ww).clamp(max=clip)
    dh = (deltas[:, 3::4] / wh).clamp(max=clip)
    pred_x = dx * widths[:, None] + ctr_x[:, None]
    pred_y = dy * heights[:, None] + ctr_y[:, None]
    half_w = 0.5 * (torch.exp(dw) * widths[:, None])
    half_h = 0.5 * (torch.exp(dh) * heights[:, None])
    # 4 x (N, J) -> (N, J, 4) -> (N, 4*J)
    return torch.stack(
        (pred_x - half_w, pred_y - half_h, pred_x + half_w, pred_y + half_h), dim=2
    ).flatten(1)


class BoxCoder:
    """torchvision-compatible coder: ``encode_single`` / ``decode_single`` and the list forms."""

    def __init__(
        self, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0), bbox_xform_clip: float = DEFAULT_CLIP
    ) -> None:
        self.weights = _weights(weights)
        self.bbox_xform_clip = bbox_xform_clip

    def encode_single(self, reference_boxes: Tensor, proposals: Tensor) -> Tensor:
        """Deltas ``[N, 4]`` taking ``proposals`` to ``reference_boxes`` (torchvision's names)."""
        return encode_boxes(reference_boxes, proposals, self.weights)

    def decode_single(self, rel_codes: Tensor, boxes: Tensor) -> Tensor:
        """Boxes ``[N, 4*J]`` from deltas ``[N, 4*J]`` and references ``[N, 4]``."""
        return decode_boxes(rel_codes, boxes, self.weights, self.bbox_xform_clip)

    def encode(self, reference_boxes: list[Tensor], proposals: list[Tensor]) -> list[Tensor]:
        """Per-image :meth:`encode_single`, computed in one pass."""
        counts = [len(b) for b in reference_boxes]
        deltas = self.encode_single(torch.cat(reference_boxes), torch.cat(proposals))
        return list(deltas.split(counts, 0))

    def decode(self, rel_codes: Tensor, boxes: list[Tensor]) -> Tensor:
        """Decode ``rel_codes`` against the concatenated per-image ``boxes`` -> ``[N, J, 4]``."""
        total = sum(b.shape[0] for b in boxes)
        concat = torch.cat(boxes)
        if total > 0:
            rel_codes = rel_codes.reshape(total, -1)
        pred = self.decode_single(rel_codes, concat)
        return pred.reshape(total, -1, 4) if total > 0 else pred


# ---------------------------------------------------------------------------- linear (FCOS)


def _centre_and_size(reference: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(cx, cy, (w, h, w, h))`` of xyxy ``reference [..., 4]``: ``[...]``, ``[...]``, ``[..., 4]``."""
    cx = 0.5 * (reference[..., 0] + reference[..., 2])
    cy = 0.5 * (reference[..., 1] + reference[..., 3])
    w = reference[..., 2] - reference[..., 0]
    h = reference[..., 3] - reference[..., 1]
    return cx, cy, torch.stack((w, h, w, h), dim=-1)


def _check_last4(t: object, name: str) -> None:
    if not isinstance(t, Tensor):
        raise ValueError(f"{name} must be a Tensor, got {type(t).__name__}")
    if t.dim() == 0 or t.shape[-1] != 4:
        raise ValueError(f"{name} must have shape [..., 4], got {tuple(t.shape)}")


def encode_linear(gt: Tensor, reference: Tensor, normalize_by_size: bool = True) -> Tensor:
    """Distances (l, t, r, b) from each reference box's centre to the sides of its ``gt`` box.

    Args:
        gt (Tensor[..., 4]), reference (Tensor[..., 4]): xyxy boxes, broadcastable.
        normalize_by_size: divide by the reference's (w, h, w, h).
    Returns:
        Tensor[..., 4]: (l, t, r, b); negative where the centre lies outside ``gt``.
    """
    _check_last4(gt, "gt")
    _check_last4(reference, "reference")
    cx, cy, size = _centre_and_size(reference)
    codes = torch.stack((cx - gt[..., 0], cy - gt[..., 1], gt[..., 2] - cx, gt[..., 3] - cy), dim=-1)
    return codes / size if normalize_by_size else codes


def decode_linear(codes: Tensor, reference: Tensor, normalize_by_size: bool = True) -> Tensor:
    """Boxes from (l, t, r, b) ``codes [..., 4]`` about ``reference [..., 4]`` centres (broadcast);
    the reference is cast to the codes' dtype. Returns xyxy ``[..., 4]``."""
    _check_last4(codes, "codes")
    _check_last4(reference, "reference")
    cx, cy, size = _centre_and_size(reference.to(codes.dtype))
    if normalize_by_size:
        codes = codes * size
    return torch.stack(
        (cx - codes[..., 0], cy - codes[..., 1], cx + codes[..., 2], cy + codes[..., 3]), dim=-1
    )


class BoxLinearCoder:
    """torchvision-compatible linear coder (FCOS): ``encode(reference_boxes, proposals)``,
    ``decode(rel_codes, boxes)``, both on ``[..., 4]``."""

    def __init__(self, normalize_by_size: bool = True) -> None:
        self.normalize_by_size = normalize_by_size

    def encode(self, reference_boxes: Tensor, proposals: Tensor) -> Tensor:
        """Codes ``[..., 4]`` of ``proposals`` (the boxes) about ``reference_boxes`` (torchvision's names)."""
        return encode_linear(proposals, reference_boxes, self.normalize_by_size)

    def decode(self, rel_codes: Tensor, boxes: Tensor) -> Tensor:
        """Boxes ``[..., 4]`` from codes ``[..., 4]`` about reference ``boxes [..., 4]``."""
        return decode_linear(rel_codes, boxes, self.normalize_by_size)
