"""Selective Search (Uijlings et al., IJCV 2013): class-agnostic region proposals for Fast R-CNN.

One *strategy* is (colour space, Felzenszwalb k, similarity terms). For each strategy the
image is over-segmented with Felzenszwalb-Huttenlocher (skimage, sigma 0.8) in that colour
space, and the segments are grouped bottom-up (:mod:`.grouping`) until one region is left;
every region of the hierarchy is a proposal. Diversification = the union over strategies:

    mode      colour spaces            k                  similarities
    single    HSV                      100                C+T+S+F
    fast      HSV, Lab                 50, 100            C+T+S+F, T+S+F       (8 strategies)
    quality   HSV, Lab, rgI, H, I      50, 100, 150, 300  C+T+S+F, T+S+F, F, S (80 strategies)

Ranking (paper §3.4): in a hierarchy of M regions in creation order, region m has position
``M - m`` (1 = the last merge, the whole image) and gets the value ``position * U(0, 1)``;
all strategies' boxes are sorted by that value, ascending, and duplicate boxes are removed
keeping the first. The random numbers come from ``numpy.random.default_rng(seed)``.

Shape shorthand: H, W image size; N proposals; G ground-truth boxes; K counts.

Convention: boxes are xyxy absolute pixels; the box of a region is (min col, min row,
max col + 1, max row + 1), so it is inside ``[0, W] x [0, H]`` and never empty.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product

import numpy as np
import torch
from skimage import color as skcolor
from skimage.segmentation import felzenszwalb
from torch import Tensor

from ..ops import box_iou
from .grouping import (
    color_histograms,
    hierarchical_grouping,
    relabel,
    texture_codes,
    texture_histograms,
)

logger = logging.getLogger(__name__)

COLOR_SPACES = ("rgb", "hsv", "lab", "rgi", "h", "i")
SIGMA = 0.8
CTSF = ("color", "texture", "size", "fill")
TSF = ("texture", "size", "fill")


@dataclass(frozen=True)
class Strategy:
    """One diversification strategy: colour space, Felzenszwalb ``k`` and similarity terms."""

    color_space: str
    k: float
    similarities: tuple[str, ...]


# mode -> (colour spaces, k values, similarity sets); the paper's Table 5 choices.
MODES: dict[str, tuple[tuple[str, ...], tuple[float, ...], tuple[tuple[str, ...], ...]]] = {
    "single": (("hsv",), (100.0,), (CTSF,)),
    "fast": (("hsv", "lab"), (50.0, 100.0), (CTSF, TSF)),
    "quality": (
        ("hsv", "lab", "rgi", "h", "i"),
        (50.0, 100.0, 150.0, 300.0),
        (CTSF, TSF, ("fill",), ("size",)),
    ),
}


def strategies(mode: str = "fast", scale: float | None = None) -> list[Strategy]:
    """The strategies of ``mode``; ``scale`` replaces the mode's k values by that one k."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {tuple(MODES)}, got {mode!r}")
    spaces, ks, sims = MODES[mode]
    if scale is not None:
        if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not scale > 0:
            raise ValueError(f"scale must be a positive number or None, got {scale!r}")
        ks = (float(scale),)
    return [Strategy(c, k, s) for c, k, s in product(spaces, ks, sims)]


def convert_color(rgb: np.ndarray, space: str) -> np.ndarray:
    """float ``[H, W, 3]`` RGB in [0, 1] -> float64 ``[H, W, C]`` in [0, 1] of ``space``.

    ``rgb``, ``hsv`` (skimage), ``lab`` (L / 100, (a + 128) / 255, (b + 128) / 255), ``rgi``
    (chromaticity r, g and intensity I = mean of R, G, B), ``h`` (hue) and ``i`` (intensity).
    """
    if space == "rgb":
        return rgb.astype(np.float64, copy=False)
    if space in ("hsv", "h"):
        hsv = skcolor.rgb2hsv(rgb)
        return hsv if space == "hsv" else hsv[..., :1]
    if space == "lab":
        lab = skcolor.rgb2lab(rgb)
        lab = np.stack(
            [lab[..., 0] / 100.0, (lab[..., 1] + 128.0) / 255.0, (lab[..., 2] + 128.0) / 255.0], -1
        )
        return np.clip(lab, 0.0, 1.0)
    total = rgb.sum(axis=-1, keepdims=True)  # (H, W, 1)
    intensity = total / 3.0
    if space == "i":
        return intensity
    if space == "rgi":
        chroma = np.where(total > 0, rgb[..., :2] / np.maximum(total, 1e-12), 1.0 / 3.0)
        return np.concatenate([chroma, intensity], axis=-1)
    raise ValueError(f"color space must be one of {COLOR_SPACES}, got {space!r}")


def _to_rgb(image: Tensor) -> np.ndarray:
    """Validate a ``[3, H, W]`` float-in-[0, 1] or uint8 image -> float64 ``[H, W, 3]`` in [0, 1]."""
    if not isinstance(image, Tensor):
        raise ValueError(f"image must be a Tensor[3, H, W], got {type(image).__name__}")
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image must have shape [3, H, W] (RGB, channels first), got {tuple(image.shape)}")
    if image.shape[1] == 0 or image.shape[2] == 0:
        raise ValueError(f"image is empty: shape {tuple(image.shape)}")
    if image.dtype == torch.uint8:
        pixels = image.detach().cpu().double() / 255.0
    elif image.is_floating_point():
        pixels = image.detach().cpu().double()
        if not bool(torch.isfinite(pixels).all()):
            raise ValueError("image has NaN or infinite values")
        lo, hi = float(pixels.min()), float(pixels.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(f"float image must be in [0, 1], got values in [{lo:.4g}, {hi:.4g}]")
        pixels = pixels.clamp(0.0, 1.0)
    else:
        raise ValueError(f"image must be float in [0, 1] or uint8, got {image.dtype}")
    return pixels.permute(1, 2, 0).numpy()  # (3, H, W) -> (H, W, 3)


def _check_int(value: object, name: str, low: int) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


def strategy_hierarchies(
    rgb: np.ndarray, plan: Sequence[Strategy], min_size: int = 20
) -> list[tuple[Strategy, np.ndarray]]:
    """Run grouping for every strategy -> ``(strategy, int64 [M, 4] boxes in creation order)``.

    Work shared between strategies is done once: the colour conversion and texture bins per
    colour space, the segmentation and histograms per (colour space, k).
    """
    out = []
    for space in dict.fromkeys(s.color_space for s in plan):
        image = convert_color(rgb, space)  # (H, W, C)
        codes = texture_codes(image)
        for k in dict.fromkeys(s.k for s in plan if s.color_space == space):
            segments = felzenszwalb(image, scale=k, sigma=SIGMA, min_size=min_size, channel_axis=-1)
            labels, R = relabel(segments)
            color_hist = color_histograms(labels, image, R)
            texture_hist = texture_histograms(labels, codes, R)
            logger.debug("selective search: %s k=%g -> %d initial regions", space, k, R)
            for s in plan:
                if s.color_space == space and s.k == k:
                    hierarchy = hierarchical_grouping(labels, color_hist, texture_hist, s.similarities)
                    out.append((s, hierarchy.boxes))
    return out


def rank_boxes(hierarchies: Sequence[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Boxes of several hierarchies (each ``[M, 4]`` in creation order) -> ranked unique ``[N, 4]``.

    Region ``m`` of a hierarchy of ``M`` gets ``(M - m) * U(0, 1)``; smaller is better.
    """
    if not hierarchies:
        return np.zeros((0, 4), dtype=np.int64)
    values = []
    for boxes in hierarchies:
        M = len(boxes)
        position = np.arange(M, 0, -1, dtype=np.float64)  # M .. 1: the last merge is 1
        values.append(position * rng.random(M))
    boxes = np.concatenate(hierarchies)
    order = np.argsort(np.concatenate(values), kind="stable")
    boxes = boxes[order]
    _, first = np.unique(boxes, axis=0, return_index=True)  # first = best-ranked copy
    return boxes[np.sort(first)]


def selective_search(
    image: Tensor,
    mode: str = "fast",
    max_proposals: int | None = 2000,
    min_size: int = 20,
    seed: int = 0,
    scale: float | None = None,
    min_box_size: int = 2,
) -> Tensor:
    """Selective Search region proposals for one image, best first.

    Args:
        image (Tensor[3, H, W]): RGB, float in [0, 1] or uint8.
        mode: ``"single"`` (1 strategy), ``"fast"`` (8, the paper's Fast) or ``"quality"`` (80).
        max_proposals: keep at most this many (None = all).
        min_size: Felzenszwalb's minimum segment size in pixels.
        seed: seeds the ranking's random numbers (same seed, same order).
        scale: Felzenszwalb k for every strategy instead of the mode's k values.
        min_box_size: drop boxes whose width or height is below this many pixels.
    Returns:
        Tensor[N, 4]: float32 xyxy absolute pixels on ``image``'s device, unique, ranked.
    """
    rgb = _to_rgb(image)
    plan = strategies(mode, scale)
    if max_proposals is not None:
        max_proposals = _check_int(max_proposals, "max_proposals", 1)
    min_size = _check_int(min_size, "min_size", 1)
    min_box_size = _check_int(min_box_size, "min_box_size", 0)
    seed = _check_int(seed, "seed", 0)
    hierarchies = [boxes for _, boxes in strategy_hierarchies(rgb, plan, min_size)]
    boxes = rank_boxes(hierarchies, np.random.default_rng(seed))
    wh = boxes[:, 2:] - boxes[:, :2]
    boxes = boxes[(wh >= min_box_size).all(axis=1)]
    if max_proposals is not None:
        boxes = boxes[:max_proposals]
    return torch.from_numpy(boxes.astype(np.float32)).to(image.device)


def proposal_recall(
    proposals: Sequence[Tensor],
    gt_boxes: Sequence[Tensor],
    counts: Sequence[int],
    iou_thresholds: Sequence[float] = (0.5, 0.7),
) -> dict[float, Tensor]:
    """Recall of ground truth by the top-n proposals, for every n in ``counts``.

    Args:
        proposals: per image Tensor[N, 4] xyxy, ranked best first.
        gt_boxes: per image Tensor[G, 4] xyxy (same number of images; G may be 0).
        counts: the n values (positive ints); an image with fewer proposals uses all it has.
        iou_thresholds: a gt box is covered when its best IoU with the top n is >= t.
    Returns:
        ``{t: Tensor[K]}`` float64: covered gt boxes / all gt boxes, over all images.
    """
    if len(proposals) != len(gt_boxes):
        raise ValueError(f"got proposals for {len(proposals)} images but gt_boxes for {len(gt_boxes)}")
    ns = [_check_int(n, "every count", 1) for n in counts]
    if not ns:
        raise ValueError("counts must not be empty")
    thresholds = [float(t) for t in iou_thresholds]
    if not thresholds or not all(0.0 < t <= 1.0 for t in thresholds):
        raise ValueError(f"iou_thresholds must be non-empty values in (0, 1], got {iou_thresholds}")
    covered = {t: torch.zeros(len(ns), dtype=torch.float64) for t in thresholds}
    total = 0
    for i, (pred, gt) in enumerate(zip(proposals, gt_boxes, strict=True)):
        for name, boxes in (("proposals", pred), ("gt_boxes", gt)):
            if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4:
                raise ValueError(f"{name}[{i}] must be a Tensor[N, 4], got {getattr(boxes, 'shape', boxes)}")
        G = gt.shape[0]
        total += G
        if G == 0 or pred.shape[0] == 0:
            continue
        pred = pred[: max(ns)].to(torch.float64)
        iou = box_iou(gt.to(torch.float64).cpu(), pred.cpu()).nan_to_num(0.0)  # (G, N)
        best = iou.cummax(dim=1).values  # (G, N): best IoU among the top 1..N
        top = torch.tensor([min(n, pred.shape[0]) - 1 for n in ns])
        best_at = best[:, top]  # (G, K)
        for t in thresholds:
            covered[t] += (best_at >= t).sum(dim=0).to(torch.float64)
    if total == 0:
        raise ValueError("gt_boxes holds no boxes: recall is undefined")
    return {t: c / total for t, c in covered.items()}
