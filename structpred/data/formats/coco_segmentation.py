"""COCO segmentations (polygons, RLE): validation, rasterisation, encoding.

Everything a file declares is checked here *before* pycocotools' C code sees it: that code does
not bound-check, and a hostile polygon or RLE crashes it (segmentation faults, hangs, gigabytes
allocated, ``OverflowError``). The rules, for an image of ``W x H`` pixels:

- a polygon is ``[x0, y0, x1, y1, ...]``: an even number (>= 6) of finite numbers, at most
  ``limits.max_polygon_vertices`` vertices, at most ``limits.max_polygons_per_annotation``
  polygons per annotation;
- every vertex lies in ``[-W, 2W] x [-H, 2H]``: the image grown by its own size on every side.
  Real exports put vertices a little outside the image (annotation tools let a vertex slip past
  the border; pycocotools clips them correctly), none of the repository's COCO exports
  (DeepForest trees, Roboflow-style, shapes) has any outside, and nothing farther than one image
  away belongs to this image: it is a wrong size or a hostile file;
- the outline of one annotation (pycocotools walks it at 5 steps per pixel and allocates that
  many ints) is at most :data:`MAX_OUTLINE_FACTOR` ``x (H + W)`` pixels (Chebyshev length);
- RLE: ``{"size": [H, W], "counts": str | list[int]}`` with the image's size, non-negative runs
  summing to exactly ``H * W`` (< 2**32, pycocotools' run type), at most ``H * W + 1`` runs.

The image's ``H x W`` is checked against ``limits.max_pixels`` before a mask is allocated.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from .. import limits
from ..records import Segmentation
from ._common import as_int, as_number

# an annotation's outline may be this many times the image's half-perimeter (H + W) long:
# 500 trips around the image, far past any real outline, 10 MB of pycocotools ints at 1000 x 1000
MAX_OUTLINE_FACTOR = 1000
_MAX_RLE_PIXELS = 2**32 - 1  # pycocotools stores runs as uint32
_CHARS_PER_RUN = 7  # a uint32 run needs at most 7 five-bit groups in compressed RLE


def _mask_utils() -> Any:
    try:
        from pycocotools import mask as mask_utils
    except ImportError as err:  # pragma: no cover - pycocotools is a declared dependency
        raise ImportError("COCO masks need pycocotools: pip install pycocotools") from err
    return mask_utils


def number(value: object, what: str) -> float:
    """``as_number`` whose errors stay short and ``ValueError`` (a 400-digit int overflows float)."""
    try:
        return as_number(value, what)
    except OverflowError:
        raise ValueError(f"{what} must be finite, got an integer of {len(str(value))} digits") from None
    except ValueError as err:
        if len(str(err)) <= 200:
            raise
        raise ValueError(f"{what} must be a finite number, got {repr(value)[:40]}...") from None


def integer(value: object, what: str) -> int:
    """``as_int`` with the same short ``ValueError``; a json int is taken exactly (no float)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not -(2**63) <= value < 2**63:
            raise ValueError(f"{what} is outside the 64-bit integer range ({len(str(abs(value)))} digits)")
        return value
    if number(value, what).is_integer():
        return as_int(value, what)
    raise ValueError(f"{what} must be an integer, got {str(value)[:40]!r}")


def check_image_size(height: int, width: int, where: str = "image") -> None:
    """Raise unless ``height x width`` is positive and within ``limits.max_pixels``."""
    if height <= 0 or width <= 0:
        raise ValueError(f"{where}: image size must be positive, got {height} x {width}")
    limits.check("max_pixels", height * width, where, f"image size {height} x {width} (H x W) in pixels")


def _counts_from_string(text: str) -> list[int]:
    """Decode COCO's compressed RLE string (pycocotools' ``rleFrString``) into run lengths.

    Each count is a little-endian run of 5-bit groups stored as ``chr(48 + group)``, bit 0x20
    meaning "more groups follow", bit 0x10 of the last group the sign; counts after the third are
    stored as differences to the count two places before.
    """
    counts: list[int] = []
    pos = 0
    while pos < len(text):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(text):
                raise ValueError("compressed RLE counts end inside a number")
            if shift > 5 * _CHARS_PER_RUN:
                raise ValueError(f"compressed RLE count at character {pos} is longer than a 32-bit run")
            group = ord(text[pos]) - 48
            if not 0 <= group < 64:
                raise ValueError(f"invalid character {text[pos]!r} in compressed RLE counts")
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            pos += 1
            shift += 5
            if not more and group & 0x10:
                value |= -1 << shift  # sign-extend
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def _check_polygons(seg: list[Any], height: int, width: int) -> list[list[float]]:
    limits.check("max_polygons_per_annotation", len(seg), "segmentation", "number of polygons")
    polygons: list[list[float]] = []
    outline = 0.0
    for i, poly in enumerate(seg):
        if not isinstance(poly, list):
            raise ValueError(f"polygon {i} must be a list of coordinates, got {type(poly).__name__}")
        if len(poly) < 6 or len(poly) % 2:
            raise ValueError(f"polygon {i} must have an even number (>= 6) of coordinates, got {len(poly)}")
        limits.check("max_polygon_vertices", len(poly) // 2, f"polygon {i}", "number of vertices")
        coords = [number(v, f"polygon {i} coordinate") for v in poly]
        xy = np.asarray(coords, dtype=np.float64).reshape(-1, 2)  # (2V,) -> (V, 2)
        x, y = xy[:, 0], xy[:, 1]
        outside = (x < -width) | (x > 2 * width) | (y < -height) | (y > 2 * height)  # (V,)
        if outside.any():
            k = int(np.argmax(outside))
            raise ValueError(
                f"polygon {i} vertex {k} ({coords[2 * k]:g}, {coords[2 * k + 1]:g}) lies more than one image "
                f"size outside the {width} x {height} (W x H) image"
            )
        steps = np.abs(np.diff(np.concatenate([xy, xy[:1]]), axis=0)).max(axis=1)  # (V,) closed ring
        outline += float(steps.sum())
        polygons.append(coords)
    if outline > MAX_OUTLINE_FACTOR * (height + width):
        raise ValueError(
            f"polygon outline is {outline:,.0f} px long, over {MAX_OUTLINE_FACTOR} x (H + W) = "
            f"{MAX_OUTLINE_FACTOR * (height + width):,} px for a {width} x {height} (W x H) image"
        )
    return polygons


def _check_rle(seg: dict[str, Any], height: int, width: int) -> Segmentation:
    size = seg.get("size")
    if (
        not isinstance(size, list)
        or len(size) != 2
        or [integer(v, "RLE size") for v in size]
        != [
            height,
            width,
        ]
    ):
        raise ValueError(f"RLE size {repr(size)[:80]} does not match the image size [{height}, {width}]")
    pixels = height * width
    if pixels > _MAX_RLE_PIXELS:
        raise ValueError(f"RLE of a {height} x {width} image: H * W = {pixels:,} is over 32 bits")
    counts = seg.get("counts")
    if isinstance(counts, bytes):
        counts = counts.decode("ascii", errors="replace")
    if isinstance(counts, str):
        if len(counts) > _CHARS_PER_RUN * (pixels + 1):
            raise ValueError(f"compressed RLE: {len(counts):,} characters, too many for H * W = {pixels:,}")
        runs = _counts_from_string(counts)
    elif isinstance(counts, list):
        if len(counts) > pixels + 1:
            raise ValueError(f"RLE has {len(counts):,} runs, more than H * W + 1 = {pixels + 1:,}")
        runs = counts = [integer(v, "RLE count") for v in counts]
    else:
        raise ValueError(f"RLE counts must be a string or a list of ints, got {type(counts).__name__}")
    if len(runs) > pixels + 1:
        raise ValueError(f"RLE has {len(runs):,} runs, more than H * W + 1 = {pixels + 1:,}")
    negative = next((k for k, r in enumerate(runs) if r < 0), None)
    if negative is not None:
        raise ValueError(f"RLE run {negative} is {runs[negative]}; RLE counts must be non-negative")
    if sum(runs) != pixels:
        raise ValueError(f"RLE counts must sum to H * W = {pixels}, got sum {sum(runs)}")
    return {"size": [height, width], "counts": counts}


def check_segmentation(seg: object, height: int, width: int) -> Segmentation:
    """Validate one COCO segmentation for an image of ``height x width``; return it normalised.

    See the module doc for the rules (checked before pycocotools ever sees the data).
    Compressed counts come back as ``str``. Raises ``ValueError`` (``LimitError`` for a count
    limit) naming the polygon / vertex / run.
    """
    check_image_size(height, width)
    if isinstance(seg, list):
        return _check_polygons(seg, height, width)
    if isinstance(seg, dict):
        return _check_rle(seg, height, width)
    raise ValueError(f"segmentation must be polygons (list) or RLE (dict), got {type(seg).__name__}")


def _to_rle(seg: Segmentation, height: int, width: int) -> dict[str, Any] | None:
    """pycocotools RLE of a validated segmentation (``None`` for no polygon)."""
    mask_utils = _mask_utils()
    if isinstance(seg, list):
        if not seg:
            return None
        return dict(mask_utils.merge(mask_utils.frPyObjects(seg, height, width)))
    if isinstance(seg["counts"], list):
        return dict(mask_utils.frPyObjects(seg, height, width))
    return {"size": [height, width], "counts": seg["counts"].encode("ascii")}


def segmentation_to_mask(seg: Segmentation, height: int, width: int) -> Tensor:
    """Rasterise one COCO segmentation to ``uint8 Tensor[H, W]`` (1 inside, 0 outside).

    ``[]`` (no polygon) gives an all-zero mask. Raises ``ValueError`` on a malformed segmentation.
    """
    rle = _to_rle(check_segmentation(seg, height, width), height, width)
    if rle is None:
        return torch.zeros(height, width, dtype=torch.uint8)
    mask = _mask_utils().decode(rle)  # (H, W) uint8, Fortran order
    return torch.from_numpy(np.ascontiguousarray(mask, dtype=np.uint8))


def mask_to_rle(mask: Tensor) -> dict[str, Any]:
    """Encode a binary mask ``Tensor[H, W]`` (nonzero = inside) as compressed COCO RLE:
    ``{"size": [H, W], "counts": str}`` (json-ready)."""
    if not isinstance(mask, Tensor) or mask.dim() != 2:
        shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"mask must be a Tensor[H, W], got {shape}")
    binary = np.asfortranarray(mask.detach().cpu().numpy() != 0, dtype=np.uint8)
    rle = _mask_utils().encode(binary)
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def segmentation_area(seg: Segmentation, height: int, width: int) -> float:
    """Pixel area of a segmentation (what COCO stores as ``area``); 0 for no polygon."""
    rle = _to_rle(check_segmentation(seg, height, width), height, width)
    return 0.0 if rle is None else float(_mask_utils().area(rle))
