"""Rectified stereo pairs on disk with ground-truth disparity and calibration (the ``stereo_disparity``
and ``monocular_depth`` tasks' targets): two real Middlebury pairs and the user's own folder.

Shape shorthand: H, W source size; h, w size after ``scale``.

Convention (as :class:`~structpred.data.shapes_views.ShapesStereo` and Middlebury): view 0 = left,
view 1 = right; ``disparity`` float32 ``[1, h, w]`` pixels of the given width, positive, of the
**left** view: left pixel ``x`` matches right pixel ``x - d``; ``valid`` bool ``[h, w]`` where the
disparity is known, positive and ``x - d`` lies in the right image (``disparity`` is 0 where unknown).
Calibration scalars (float32): ``focal`` (px), ``baseline`` (m), ``doffs`` (px, principal-point
x offset ``cx_right - cx_left``): ``depth = focal * baseline / (d + doffs)`` metres. ``scale`` (>= 1)
shrinks an item (images bilinear antialiased, disparity nearest) and multiplies disparity,
``focal`` and ``doffs`` by the width ratio ``w / W`` (~ ``1 / scale``); depth is unchanged.

* :class:`StereoReal` (``stereo-real``): scikit-image's Middlebury 2014 *Motorcycle* (500 x 741;
  NaN / inf = unknown; calibration from ``skimage.data.stereo_motorcycle``'s docstring: focal
  994.978 px, baseline 193.001 mm, doffs 31.086 px, valid for that 741-px width) and Middlebury 2006
  *Aloe* from OpenCV's doc files (``aloeL.jpg``, ``aloeR.jpg``, ``aloeGT.png``: pixel value =
  disparity, 0 = unknown). Aloe has **no calibration here**: its focal length, baseline and
  per-scene disparity offset are not shipped with opencv-doc and could not be confirmed, so its
  targets hold no ``focal`` / ``baseline`` / ``doffs`` (depth metrics use disparity then).
  ``val`` / ``test``: with ground truth; ``train``: the same pairs without it (``image_id`` and
  the calibration only), for self-supervised training on real pairs. Every item carries
  ``stereo`` (bool scalar, True): the marker by which joint transforms (``HorizontalFlip``) know
  a ``[2, 3, h, w]`` item is a rectified pair even when it has no disparity or calibration.
* :class:`StereoFolder` (``stereo-folder:PATH``, :func:`open_stereo_folder`): ``PATH/left/*.png|jpg``,
  ``PATH/right/`` (same file names), optional ``PATH/disparity/<stem>.png`` (16-bit, value / 256
  px, KITTI; 0 = unknown), ``.npy`` or ``.pfm`` (float px; inf = unknown, 0 = unknown too) and optional
  ``PATH/calib.txt`` (Middlebury: ``cam0``, ``doffs``, ``baseline`` in mm, ``width``). Splits:
  ``PATH/<split>/left...`` when present, else the one folder (``--val-fraction`` carves ``val``).

Unrectified pairs are the user's responsibility (docs/depth_data.md shows OpenCV's rectification).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import limits
from .flow_real import (
    EVAL_SPLITS,
    STEREO_PAIRS,
    StereoFlow,
    Transforms,
    _read_disparity_npz,
    _RealPairs,
    _same_size,
    disparity_flow,
    read_disparity_png,
)
from .images import check_file, open_image, read_image, shown_path
from .transforms import Target

SPLITS = ("train", *EVAL_SPLITS)
# skimage.data.stereo_motorcycle's docstring, for its 500 x 741 images
MOTORCYCLE_CALIBRATION = {"focal": 994.978, "baseline": 0.193001, "doffs": 31.086, "width": 741}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DISPARITY_SUFFIXES = (".png", ".npy", ".pfm")


# ----------------------------------------------------------------------------- readers


@dataclasses.dataclass(frozen=True)
class Calibration:
    """A rectified pair's calibration: ``focal`` px, ``baseline`` m, ``doffs`` px, at ``width`` px."""

    focal: float
    baseline: float
    doffs: float = 0.0
    width: int | None = None

    def at_width(self, width: int) -> Calibration:
        """The calibration of the same cameras seen at ``width`` px (focal and doffs scale)."""
        if self.width is None or self.width == width:
            return dataclasses.replace(self, width=width)
        f = width / self.width
        return Calibration(self.focal * f, self.baseline, self.doffs * f, width)

    def target(self) -> Target:
        """``focal``, ``baseline``, ``doffs`` as float32 scalars."""
        return {
            k: torch.tensor(getattr(self, k), dtype=torch.float32) for k in ("focal", "baseline", "doffs")
        }


def _number(text: str, where: str, key: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{where}: {key}={text[:40]!r} is not a number") from None
    if not math.isfinite(value) or abs(value) >= 1e9:
        raise ValueError(f"{where}: {key}={text[:40]!r} is not a finite number below 1e9")
    return value


def parse_calib_txt(data: bytes, where: str = "calib.txt") -> Calibration:
    """A Middlebury ``calib.txt`` (``key=value`` lines; ``cam0=[f 0 cx; 0 f cy; 0 0 1]``, ``doffs``,
    ``baseline`` in mm, ``width``; other keys ignored) -> :class:`Calibration` (baseline in metres).

    ``doffs`` defaults to ``cam1``'s ``cx`` minus ``cam0``'s when ``cam1`` is given, else 0.
    ``ValueError`` naming ``where`` and the field: not text, a line without ``=``, a repeated key,
    ``cam0`` / ``baseline`` missing, a matrix not 3 x 3, a non-finite number, focal or baseline <= 0,
    doffs < 0.
    """
    limits.check("max_text_file_bytes", len(data), where, "file size in bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{where}: not UTF-8 text") from None
    fields: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"{where}: line {number} is not key=value: {line[:60]!r}")
        if key in fields:
            raise ValueError(f"{where}: line {number}: key {key!r} appears twice")
        fields[key] = value.strip()

    def matrix(key: str) -> list[list[float]]:
        body = fields[key]
        if not (body.startswith("[") and body.endswith("]")):
            raise ValueError(f"{where}: {key} must be a matrix [a b c; d e f; g h i], got {body[:60]!r}")
        rows = [row.split() for row in body[1:-1].split(";")]
        if len(rows) != 3 or any(len(row) != 3 for row in rows):
            raise ValueError(f"{where}: {key} must be a 3 x 3 matrix, got {body[:60]!r}")
        return [[_number(v, where, key) for v in row] for row in rows]

    for key in ("cam0", "baseline"):
        if key not in fields:
            raise ValueError(f"{where}: no {key}= line (needed for depth)")
    cam0 = matrix("cam0")
    focal = cam0[0][0]
    baseline_mm = _number(fields["baseline"], where, "baseline")
    if focal <= 0 or baseline_mm <= 0:
        raise ValueError(f"{where}: focal (cam0[0][0]) {focal:g} and baseline {baseline_mm:g} mm must be > 0")
    if "doffs" in fields:
        doffs = _number(fields["doffs"], where, "doffs")
    elif "cam1" in fields:
        doffs = matrix("cam1")[0][2] - cam0[0][2]
    else:
        doffs = 0.0
    if doffs < 0:
        raise ValueError(f"{where}: doffs (cx right - cx left) is {doffs:g} < 0: are left and right swapped?")
    width = None
    if "width" in fields:
        w = _number(fields["width"], where, "width")
        if w != int(w) or not 1 <= w <= 1_000_000:
            raise ValueError(f"{where}: width={fields['width'][:30]!r} is not a positive integer")
        width = int(w)
    return Calibration(focal, baseline_mm / 1000.0, doffs, width)


def read_calib_txt(path: str | Path) -> Calibration:
    """:func:`parse_calib_txt` of a file (``ValueError`` naming it when missing or unreadable)."""
    path = Path(path)
    check_file(path, "calib.txt")
    limits.check("max_text_file_bytes", path.stat().st_size, shown_path(path), "file size in bytes")
    return parse_calib_txt(path.read_bytes(), shown_path(path))


def parse_pfm(data: bytes, where: str = "PFM") -> Tensor:
    """A grey PFM (``Pf``, width height, scale: < 0 little-endian; rows bottom to top) -> float32 ``[H, W]``.

    ``ValueError`` naming ``where``: not ``Pf`` (colour ``PF`` is refused: a disparity has one
    channel), a bad header, a size over ``limits.max_pixels``, too few or too many data bytes.
    """
    match = re.match(rb"(P[fF])\s+(\d{1,9})\s+(\d{1,9})\s+([-+0-9.eE]{1,40})\s", data[:256])
    if match is None:
        raise ValueError(f"{where}: not a PFM file (expected 'Pf', width, height, scale)")
    kind, w, h, scale_text = match.groups()
    if kind != b"Pf":
        raise ValueError(f"{where}: PFM is colour ('PF'); a disparity must be grey ('Pf')")
    width, height = int(w), int(h)
    if width == 0 or height == 0:
        raise ValueError(f"{where}: PFM size is {width} x {height} (W x H); it must not be empty")
    limits.check("max_pixels", width * height, where, f"PFM size {height} x {width} (H x W)")
    try:
        scale = float(scale_text)
    except ValueError:
        raise ValueError(f"{where}: PFM scale {scale_text[:40]!r} is not a number") from None
    if scale == 0 or not math.isfinite(scale):
        raise ValueError(f"{where}: PFM scale must be a non-zero finite number, got {scale}")
    body = data[match.end() :]
    if len(body) != 4 * width * height:
        raise ValueError(f"{where}: PFM holds {len(body)} data bytes, expected {4 * width * height}")
    values = np.frombuffer(body, dtype="<f4" if scale < 0 else ">f4").reshape(height, width)
    return torch.from_numpy(values[::-1].astype(np.float32))  # bottom-up rows -> (H, W) top-down


def read_pfm(path: str | Path) -> Tensor:
    """:func:`parse_pfm` of a file (``ValueError`` naming it when missing or unreadable)."""
    path = Path(path)
    check_file(path, "PFM")
    size = path.stat().st_size
    limits.check("max_pixels", size // 4, shown_path(path), "PFM data size in pixels")
    return parse_pfm(path.read_bytes(), shown_path(path))


def _read_npy(path: Path) -> Tensor:
    """A float ``.npy`` disparity ``[H, W]`` (or ``[1, H, W]``), header checked before loading."""
    where = shown_path(path)
    try:
        with path.open("rb") as fp:
            version = np.lib.format.read_magic(fp)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read_header(fp)
    except (OSError, ValueError, SyntaxError, TypeError) as err:
        raise ValueError(f"{where}: not a .npy array ({type(err).__name__}: {str(err)[:100]})") from None
    if len(shape) == 3 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 2 or dtype.kind not in "fiu":
        raise ValueError(f"{where}: disparity array is {dtype} {shape}, expected numbers [H, W]")
    limits.check("max_pixels", int(shape[0]) * int(shape[1]), where, "disparity size in pixels")
    try:
        values = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f"{where}: cannot read the disparity array: {str(err)[:100]}") from None
    return torch.from_numpy(np.asarray(values, dtype=np.float32).reshape(shape).copy())


def read_disparity_file(path: str | Path, size: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]:
    """A user's disparity file -> (disparity float32 ``[1, H, W]`` px, 0 if unknown; known bool ``[H, W]``).

    ``.png``: 16-bit grey, value / 256 px (KITTI), 0 = unknown (8-bit is refused: its scale is
    ambiguous). ``.npy`` / ``.pfm``: float px, ``inf`` or 0 = unknown. ``ValueError`` naming the file:
    NaN, negative values, values over the width (a wrong scale), a size other than ``size = (H, W)``.
    """
    path = Path(path)
    where = shown_path(path)
    suffix = path.suffix.lower()
    if suffix == ".png":
        with open_image(path, "disparity PNG") as im:
            fmt, mode = im.format, im.mode
        if fmt != "PNG" or mode not in ("I;16", "I;16B", "I"):
            raise ValueError(
                f"{where}: disparity PNG must be 16-bit grey (value / 256 px, KITTI), got {fmt} mode {mode}"
            )
        disparity, known = read_disparity_png(path, divisor=256.0)
        d = disparity[0]
    elif suffix in (".npy", ".pfm"):
        d = _read_npy(path) if suffix == ".npy" else read_pfm(path)
        if bool(torch.isnan(d).any()):
            raise ValueError(f"{where}: disparity holds NaN; mark unknown pixels with inf or 0")
        if bool((d == -math.inf).any()):
            raise ValueError(f"{where}: disparity holds -inf; mark unknown pixels with inf or 0")
        known = torch.isfinite(d) & (d != 0)
    else:
        raise ValueError(
            f"{where}: disparity must be .png (16-bit), .npy or .pfm, got {suffix or 'no suffix'!r}"
        )
    H, W = d.shape
    if H == 0 or W == 0:
        raise ValueError(f"{where}: disparity is empty ({H} x {W}, H x W)")
    if size is not None and (H, W) != tuple(size):
        raise ValueError(
            f"{where}: disparity is {H} x {W} but the left image is {size[0]} x {size[1]} (H x W)"
        )
    d = torch.where(known, d, 0.0)
    if bool((d < 0).any()):
        raise ValueError(
            f"{where}: disparity holds negative values (min {float(d.min()):g}); it must be >= 0"
        )
    if float(d.max()) > W:
        raise ValueError(
            f"{where}: disparity up to {float(d.max()):g} px exceeds the width {W}: wrong scale? "
            "(16-bit PNGs hold 256 x px; .npy / .pfm hold px)"
        )
    return d.unsqueeze(0), known  # (H, W) -> (1, H, W)


def _stereo_target(disparity: Tensor, known: Tensor) -> Target:
    """``disparity`` (0 where not valid) and ``valid`` (known, > 0, ``x - d`` inside the right view)."""
    _, valid = disparity_flow(disparity, known & (disparity[0] > 0))
    return {"disparity": torch.where(valid, disparity[0], 0.0).unsqueeze(0), "valid": valid}


def _check_views(left: Tensor, right: Tensor, left_path: Path, right_path: Path) -> Tensor:
    """Same non-empty size -> the pair ``[2, 3, H, W]``."""
    if min(left.shape[-2:]) == 0:
        raise ValueError(f"{shown_path(left_path)}: image is empty ({left.shape[-2]} x {left.shape[-1]})")
    if left.shape != right.shape:
        raise ValueError(
            f"{shown_path(right_path)}: right image is {right.shape[-2]} x {right.shape[-1]} but the left "
            f"{shown_path(left_path)} is {left.shape[-2]} x {left.shape[-1]} (H x W); a pair must match"
        )
    return torch.stack([left, right])  # (2, 3, H, W)


# ----------------------------------------------------------------------------- datasets


class StereoReal(_RealPairs):
    """Motorcycle and Aloe with disparity and calibration (see the module docstring).

    Args:
        split: ``"val"`` / ``"test"`` (ground truth) or ``"train"`` (none; self-supervised use).
        pairs: which of ``("motorcycle", "aloe")``, in that order.
        scale: downscale factor in [1, 64].
        transforms: a joint ``(views, target) -> (views, target)`` transform.
        cache: keep loaded items in memory.
        root: data root holding ``opencv-doc/`` (default ``$STRUCTPRED_DATA``).
    """

    def __init__(
        self,
        split: str = "val",
        pairs: Sequence[str] = STEREO_PAIRS,
        scale: float = 1.0,
        transforms: Transforms | None = None,
        cache: bool = False,
        root: str | Path | None = None,
    ) -> None:
        super().__init__(split, scale, transforms, cache, SPLITS)
        pairs = (pairs,) if isinstance(pairs, str) else tuple(pairs)
        if not pairs or any(p not in STEREO_PAIRS for p in pairs) or len(set(pairs)) != len(pairs):
            raise ValueError(f"StereoReal: pairs must be a non-empty subset of {STEREO_PAIRS}, got {pairs!r}")
        self.names = pairs
        # the same files as flow-stereo's (its lookup and checks: opencv-doc, scikit-image)
        self.files: dict[str, list[Path]] = StereoFlow("val", pairs=pairs, root=root).files

    def _load(self, index: int) -> tuple[Tensor, Target]:
        name = self.names[index]
        left_path, right_path, gt_path = self.files[name]
        views = _check_views(read_image(left_path), read_image(right_path), left_path, right_path)
        target: Target = {"image_id": torch.tensor(index), "stereo": torch.tensor(True)}
        if name == "motorcycle":
            calib = MOTORCYCLE_CALIBRATION
            if views.shape[-1] != calib["width"]:
                raise ValueError(
                    f"{shown_path(left_path)}: width {views.shape[-1]}, but the calibration is for "
                    f"{calib['width']} px (another scikit-image release?)"
                )
            target |= Calibration(calib["focal"], calib["baseline"], calib["doffs"]).target()
        if self.split != "train":
            disparity, known = read_disparity_png(gt_path) if name == "aloe" else _read_disparity_npz(gt_path)
            _same_size(name, {left_path.name: tuple(views.shape), gt_path.name: tuple(disparity.shape)})
            target |= _stereo_target(disparity, known)
        return self._shrink(views, target)


class StereoFolder(_RealPairs):
    """Rectified pairs in ``root/left``, ``root/right`` (+ ``disparity/``, ``calib.txt``); see the module doc.

    Every item of a folder with ``disparity/`` has ground truth (a missing file is an error);
    ``calib.txt`` adds ``focal`` / ``baseline`` / ``doffs`` (scaled when its ``width`` differs).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "val",
        scale: float = 1.0,
        transforms: Transforms | None = None,
        cache: bool = False,
    ) -> None:
        super().__init__(split, scale, transforms, cache, (split,))
        self.root = Path(root)
        left_dir, right_dir = self.root / "left", self.root / "right"
        for folder in (left_dir, right_dir):
            if not folder.is_dir():
                raise ValueError(
                    f"{shown_path(folder)}: folder not found (stereo-folder needs left/ and right/)"
                )
        lefts = sorted(p for p in left_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not lefts:
            raise ValueError(f"{shown_path(left_dir)}: no .png / .jpg images")
        disp_dir = self.root / "disparity"
        self.pairs: list[tuple[Path, Path, Path | None]] = []
        for left in lefts:
            right = right_dir / left.name
            if not right.is_file():
                raise ValueError(f"{shown_path(right)}: right image not found (for {shown_path(left)})")
            gt = None
            if disp_dir.is_dir():
                found = [
                    disp_dir / (left.stem + s)
                    for s in DISPARITY_SUFFIXES
                    if (disp_dir / (left.stem + s)).is_file()
                ]
                if len(found) != 1:
                    what = "no disparity file" if not found else f"{len(found)} disparity files"
                    raise ValueError(
                        f"{shown_path(disp_dir / left.stem)}.*: {what} for {left.name} "
                        f"(one of {', '.join(DISPARITY_SUFFIXES)})"
                    )
                gt = found[0]
            self.pairs.append((left, right, gt))
        self.names = tuple(p[0].name for p in self.pairs)
        calib_path = self.root / "calib.txt"
        self.calibration = read_calib_txt(calib_path) if calib_path.is_file() else None

    def _load(self, index: int) -> tuple[Tensor, Target]:
        left_path, right_path, gt_path = self.pairs[index]
        views = _check_views(read_image(left_path), read_image(right_path), left_path, right_path)
        target: Target = {"image_id": torch.tensor(index), "stereo": torch.tensor(True)}
        if self.calibration is not None:
            target |= self.calibration.at_width(views.shape[-1]).target()
        if gt_path is not None:
            target |= _stereo_target(*read_disparity_file(gt_path, (views.shape[-2], views.shape[-1])))
        return self._shrink(views, target)


def open_stereo_folder(
    arg: str | Path,
    split: str = "val",
    *,
    task: str | None = None,
    val_fraction: float | None = None,
    split_seed: int = 0,
    **kwargs: Any,
) -> Any:
    """``--data stereo-folder:PATH``: split ``split`` of ``PATH`` (``PATH/<split>/left...`` when
    present, else ``PATH/left...`` as one unsplit set; ``val_fraction`` carves ``val`` from it).
    ``task`` is accepted for the registry and unused; ``kwargs`` go to :class:`StereoFolder`."""
    from .layouts.splits import UNSPLIT, canonical, serve

    if not str(arg):
        raise ValueError("--data stereo-folder:PATH needs a folder, e.g. stereo-folder:datasets/pairs")
    root = Path(arg)
    where = f"stereo-folder:{shown_path(root)}"
    if not root.is_dir():
        raise ValueError(f"{where}: folder not found")
    if (root / "left").is_dir():
        available, folders = [UNSPLIT], {UNSPLIT: root}
    else:
        folders = {
            canonical(p.name): p
            for p in sorted(root.iterdir())
            if canonical(p.name) in SPLITS and (p / "left").is_dir()
        }
        available = list(folders)
        if not available:
            raise ValueError(f"{where}: no left/ folder (nor train|val|test/left/); see docs/depth_data.md")
    return serve(available, split, val_fraction, split_seed, where,
                 lambda s: StereoFolder(folders[s], s if s in SPLITS else "val", **kwargs))  # fmt: skip
