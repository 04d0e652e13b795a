"""Middlebury ``.flo`` optical flow files.

Layout (all little-endian): float32 magic ``202021.25`` (the bytes ``PIEH``), int32 width,
int32 height, then ``H * W * 2`` float32 values, row-major, ``(u, v)`` interleaved per pixel.
``u`` is the horizontal and ``v`` the vertical displacement in pixels. Values above ``1e9``
mark unknown flow in Middlebury ground truth; they are returned as stored.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

FLO_MAGIC = 202021.25
_HEADER = struct.Struct("<fii")  # magic, width, height
_MAX_SIDE = 1 << 16  # no real flow field is wider or taller than this


def read_flo(path: str | Path) -> Tensor:
    """Read a ``.flo`` file as ``float32 Tensor[2, H, W]`` (channel 0 = u, 1 = v; pixels).

    Raises ``ValueError`` naming the file on a missing file, wrong magic, an absurd size or a
    data length that does not match the header (truncated or trailing bytes).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: .flo file not found")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ValueError(f"{path}: cannot read .flo file: {err}") from err
    if len(data) < _HEADER.size:
        raise ValueError(f"{path}: truncated .flo file: {len(data)} bytes, the header alone is 12")
    magic, width, height = _HEADER.unpack_from(data)
    if magic != FLO_MAGIC:
        raise ValueError(f"{path}: not a .flo file: magic {magic!r}, expected {FLO_MAGIC} ('PIEH')")
    if not (0 < width <= _MAX_SIDE and 0 < height <= _MAX_SIDE):
        raise ValueError(f"{path}: absurd .flo size {width} x {height} (W x H)")
    expected = _HEADER.size + 8 * width * height
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "trailing bytes after the data"
        raise ValueError(
            f"{path}: {problem}: {width} x {height} flow needs {expected} bytes, file has {len(data)}"
        )
    values = np.frombuffer(data, dtype="<f4", offset=_HEADER.size)
    flow = values.reshape(height, width, 2).astype(np.float32)  # (H*W*2,) -> (H, W, 2), native order
    return torch.from_numpy(flow).permute(2, 0, 1).contiguous()  # (H, W, 2) -> (2, H, W)


def write_flo(path: str | Path, flow: Tensor) -> None:
    """Write ``flow`` (``Tensor[2, H, W]``, pixels) as a Middlebury ``.flo`` file."""
    path = Path(path)
    if not isinstance(flow, Tensor) or flow.dim() != 3 or flow.shape[0] != 2:
        shape = tuple(flow.shape) if isinstance(flow, Tensor) else type(flow).__name__
        raise ValueError(f"{path}: flow must be a Tensor[2, H, W], got {shape}")
    if not flow.is_floating_point():
        raise ValueError(f"{path}: flow must be a floating point tensor, got {flow.dtype}")
    _, height, width = flow.shape
    if not (0 < width <= _MAX_SIDE and 0 < height <= _MAX_SIDE):
        raise ValueError(f"{path}: flow size {width} x {height} (W x H) cannot be written as .flo")
    hw2 = flow.detach().cpu().float().permute(1, 2, 0).numpy()  # (2, H, W) -> (H, W, 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.write(_HEADER.pack(FLO_MAGIC, width, height))
        f.write(np.ascontiguousarray(hw2, dtype="<f4").tobytes())
