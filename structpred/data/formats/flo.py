"""Middlebury ``.flo`` optical flow files.

Layout (all little-endian): float32 magic ``202021.25`` (the bytes ``PIEH``), int32 width,
int32 height, then ``H * W * 2`` float32 values, row-major, ``(u, v)`` interleaved per pixel.
``u`` is the horizontal and ``v`` the vertical displacement in pixels. Values above ``1e9``
mark unknown flow in Middlebury ground truth; they are returned as stored (``+inf`` too, as
unknown); NaN and ``-inf`` are refused. The header's ``W x H`` is checked against
``max_pixels`` (:mod:`structpred.data.limits`) before the data is read.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .. import limits

FLO_MAGIC = 202021.25
_HEADER = struct.Struct("<fii")  # magic, width, height
_MAX_SIDE = 1 << 16  # no real flow field is wider or taller than this


def read_flo(path: str | Path) -> Tensor:
    """Read a ``.flo`` file as ``float32 Tensor[2, H, W]`` (channel 0 = u, 1 = v; pixels).

    Raises ``ValueError`` naming the file on a missing file, wrong magic, an absurd size (or one
    over ``max_pixels``), a data length that does not match the header (truncated or trailing
    bytes), or a NaN / ``-inf`` value (naming the pixel).
    """
    path = Path(path)
    try:
        if not path.is_file():
            raise ValueError(f"{path}: .flo file not found" + (" (a directory)" if path.is_dir() else ""))
        with path.open("rb") as f:
            header = f.read(_HEADER.size)
            if len(header) < _HEADER.size:
                raise ValueError(f"{path}: truncated .flo file: {len(header)} bytes, the header alone is 12")
            magic, width, height = _HEADER.unpack(header)
            if magic != FLO_MAGIC:
                raise ValueError(f"{path}: not a .flo file: magic {magic!r}, expected {FLO_MAGIC} ('PIEH')")
            if not (0 < width <= _MAX_SIDE and 0 < height <= _MAX_SIDE):
                raise ValueError(f"{path}: header: absurd .flo size {width} x {height} (W x H)")
            limits.check("max_pixels", width * height, f"{path}: header", f"flow size {width} x {height}")
            expected = _HEADER.size + 8 * width * height
            data = header + f.read(expected - _HEADER.size + 1)  # never more than the header asks for
    except OSError as err:
        raise ValueError(f"{path}: cannot read .flo file: {err.strerror or err}") from err
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "trailing bytes after the data"
        raise ValueError(
            f"{path}: {problem}: {width} x {height} flow needs {expected} bytes, file has "
            f"{len(data) if len(data) < expected else 'more'}"
        )
    values = np.frombuffer(data, dtype="<f4", offset=_HEADER.size)
    bad = np.flatnonzero(np.isnan(values) | np.isneginf(values))  # +inf > 1e9: unknown flow
    if bad.size:
        y, x, c = np.unravel_index(bad[0], (height, width, 2))
        raise ValueError(
            f"{path}: pixel (x={x}, y={y}) {'uv'[c]} is {values[bad[0]]} ({bad.size} such values); "
            "a .flo holds finite pixels (or > 1e9 for unknown)"
        )
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
