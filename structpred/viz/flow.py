"""Pictures of optical flow: the Middlebury colour coding of a field or a batch, and its legend.

Convention: flow is ``(u, v)`` in pixels, u = +x (right), v = +y (down), as in ``.flo`` files
and the ``optical_flow`` task. The colour of one vector is Middlebury's ``computeColor`` (Baker
et al., "A Database and Evaluation Methodology for Optical Flow", IJCV 2011), implemented once
in ``structpred.viz.colors``: hue = direction on the 55-colour wheel (RY 15, YG 6, GC 4, CB 11,
BM 13, MR 6; +x red, +y yellow, -x cyan, -y blue), saturation = magnitude / ``max_flow``,
zero flow white, vectors longer than ``max_flow`` at 75 % brightness. Invalid pixels (NaN,
inf, ``|u|`` or ``|v|`` > 1e9 = unknown in ``.flo``, or ``valid`` False) are **black** and do
not count towards the default ``max_flow``.

torchvision's ``flow_to_image`` is the peer: same colours within ±1 on finite flow (it has no
invalid pixels, and an exact ``+x`` vector with ``v = -0.0`` lands on its last wheel row instead
of the first).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .colors import UNKNOWN_FLOW_THRESHOLD
from .colors import flow_to_color as _flow_field_to_color

__all__ = ["flow_legend", "flow_to_color"]


def _shape(x: object) -> object:
    return tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__


def flow_to_color(flow: Tensor, max_flow: float | None = None, valid: Tensor | None = None) -> Tensor:
    """Colour-code flow ``[2, H, W]`` -> ``uint8[3, H, W]``, or ``[B, 2, H, W]`` -> ``uint8[B, 3, H, W]``.

    ``max_flow`` (pixels) is the magnitude drawn fully saturated; by default the largest valid
    magnitude over the **whole batch**, so the pictures of one batch share one scale (as
    torchvision's ``flow_to_image``). ``valid`` (bool ``[H, W]`` / ``[B, H, W]``, optional)
    marks pixels with known flow; the others are drawn black.
    """
    if not isinstance(flow, Tensor) or flow.dim() not in (3, 4) or flow.shape[-3] != 2:
        raise ValueError(f"flow must be a Tensor[2, H, W] or [B, 2, H, W] (u, v), got {_shape(flow)}")
    if not flow.is_floating_point():
        raise ValueError(f"flow must be a floating point tensor, got {flow.dtype}")
    if max_flow is not None and not (max_flow > 0 and math.isfinite(max_flow)):
        raise ValueError(f"max_flow must be a positive finite number, got {max_flow}")
    batched = flow.dim() == 4
    fields = flow.detach().cpu().double()
    fields = fields if batched else fields.unsqueeze(0)  # (B, 2, H, W)
    B, _, H, W = fields.shape
    if valid is not None:
        if not isinstance(valid, Tensor) or valid.dtype != torch.bool:
            raise ValueError(
                f"valid must be a bool Tensor, got {getattr(valid, 'dtype', type(valid).__name__)}"
            )
        want = (B, H, W) if batched else (H, W)
        if tuple(valid.shape) != want:
            raise ValueError(
                f"valid must have shape {want} to match flow {tuple(flow.shape)}, got {_shape(valid)}"
            )
        mask = valid.cpu().reshape(B, 1, H, W)  # (B, 1, H, W)
        fields = torch.where(mask, fields, math.nan)  # NaN = drawn black by the field colouring
    known = torch.isfinite(fields).all(1) & (fields.abs() <= UNKNOWN_FLOW_THRESHOLD).all(1)  # (B, H, W)
    if max_flow is None:
        rad = torch.where(known, fields.square().sum(1).sqrt(), 0.0)  # (B, H, W)
        largest = float(rad.max()) if rad.numel() else 0.0
        # All-zero (or all-invalid) flow: leave the scale to the field colouring (white / black).
        max_flow = largest if largest > 0 else None
    out = torch.stack([_flow_field_to_color(f, max_flow=max_flow) for f in fields])  # (B, 3, H, W)
    return out if batched else out[0]


def flow_legend(size: int = 151, max_flow: float = 1.0, background: int = 255) -> Tensor:
    """The colour-wheel legend ``uint8[3, size, size]``: the colour of the flow from the centre to each pixel.

    A disk of radius ``(size - 1) / 2`` pixels shows every direction and magnitude up to
    ``max_flow`` (pure wheel colours on the rim, white in the centre; +x right is red, +y
    down is yellow); pixels outside the disk get the grey level ``background``.
    """
    if not isinstance(size, int) or isinstance(size, bool) or size < 3 or size > 4096:
        raise ValueError(f"size must be an int in 3..4096, got {size!r}")
    if not (max_flow > 0 and math.isfinite(max_flow)):
        raise ValueError(f"max_flow must be a positive finite number, got {max_flow}")
    if not isinstance(background, int) or not 0 <= background <= 255:
        raise ValueError(f"background must be an int grey level in 0..255, got {background!r}")
    radius = (size - 1) / 2.0
    coords = torch.arange(size, dtype=torch.float64) - radius  # (S,)
    v, u = torch.meshgrid(coords, coords, indexing="ij")  # (S, S) each; v down, u right
    flow = torch.stack([u, v]) * (max_flow / radius)  # (2, S, S), in units of max_flow
    inside = u.square() + v.square() <= radius * radius  # (S, S)
    out = _flow_field_to_color(flow, max_flow=max_flow)  # (3, S, S)
    return torch.where(inside, out, torch.tensor(background, dtype=torch.uint8))
