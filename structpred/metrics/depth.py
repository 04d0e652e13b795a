"""Depth and stereo metrics: Eigen et al.'s depth errors with named evaluation presets, disparity
EPE / bad-k / D1, and the two engine metrics (stereo, monocular).

Shape shorthand: B images, H x W pixels.

Convention: disparity is in **pixels of the given image width**, positive, of the **left** view
(left pixel x matches right pixel x - d); depth in metres is ``focal * baseline / (d + doffs)``
(``doffs``: the principal points' x offset in px, Middlebury's calibration). Disparity <= 0 is
unknown, depth <= 0 (or NaN / inf in a ground truth) is unknown.

:func:`depth_metrics` restates ``compute_errors`` of Godard et al.'s ``utils/evaluation_utils.py``
(monodepth, 2017), itself Eigen et al. 2014's measures: over the evaluated pixels,
``abs_rel = mean(|gt - pred| / gt)``, ``sq_rel = mean((gt - pred)^2 / gt)``,
``rmse = sqrt(mean((gt - pred)^2))``, ``rmse_log = sqrt(mean((ln gt - ln pred)^2))`` and
``a_k = mean(max(gt / pred, pred / gt) < 1.25^k)`` (fractions, not percent). A batch is scored
per image and the per-image figures averaged, as ``evaluate_kitti.py`` does (an image without an
evaluated pixel is left out). Computation is float64 (numpy); the reference is float32.

A :class:`DepthPreset` names the protocol choices that papers differ on (``docs/depth_metrics.md``):
the evaluated pixels are ``min_depth < gt < max_depth`` inside the crop; with median scaling the
prediction is first multiplied by ``median(gt) / median(pred)`` over those pixels (Zhou et al.
2017, for scale-less monocular models); then it is clamped to ``[min_depth, max_depth]``
(``evaluate_kitti.py``, monodepth2). Without a preset: pixels where ``gt > 0``, no cap, no crop,
no scaling, no clamp (so the prediction must be positive there).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "DEPTH_KEYS",
    "DEPTH_PRESETS",
    "DepthMetric",
    "DepthPreset",
    "DisparityMetric",
    "depth_metrics",
    "depth_to_disparity",
    "disparity_metrics",
    "disparity_to_depth",
    "get_preset",
]

DEPTH_KEYS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")
DISPARITY_KEYS = ("epe", "bad2", "bad3", "d1")
# The crops of evaluate_kitti.py as fractions (top, bottom, left, right) of the image; the pixel
# bounds are int(fraction * size), rows top:bottom, columns left:right.
CROPS = {
    "garg": (0.40810811, 0.99189189, 0.03594771, 0.96405229),  # Garg et al. ECCV 2016
    "eigen": (0.3324324, 0.91351351, 0.0359477, 0.96405229),  # Godard's fit to Eigen et al. 2014
}
# The engine metrics score a predicted disparity <= MIN_DISPARITY px as MIN_DISPARITY (a model's
# "infinitely far"): its depth is far beyond any ground truth, a large error rather than a crash.
MIN_DISPARITY = 1e-2

ArrayLike = Tensor | np.ndarray


@dataclass(frozen=True)
class DepthPreset:
    """An evaluation protocol: ``min_depth`` < gt < ``max_depth`` (m; None = no cap), ``crop``
    (None, "garg" or "eigen", fractions of the image, :data:`CROPS`), ``median_scaling``; the
    prediction is clamped to ``[min_depth, max_depth]`` where those are set (> 0 / not None)."""

    min_depth: float = 0.0
    max_depth: float | None = None
    crop: str | None = None
    median_scaling: bool = False
    source: str = ""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.min_depth) and self.min_depth >= 0):
            raise ValueError(f"DepthPreset: min_depth must be finite and >= 0, got {self.min_depth}")
        if self.max_depth is not None and not (
            math.isfinite(self.max_depth) and self.max_depth > self.min_depth
        ):
            raise ValueError(f"DepthPreset: max_depth must be finite and > min_depth, got {self.max_depth}")
        if self.crop is not None and self.crop not in CROPS:
            raise ValueError(f"DepthPreset: crop must be None or one of {sorted(CROPS)}, got {self.crop!r}")


_GODARD = "Godard et al. 2017, utils/evaluate_kitti.py"
DEPTH_PRESETS: dict[str, DepthPreset] = {
    # Eigen et al. 2014's crop as Godard re-fitted it (--eigen_crop), 80 m cap.
    "kitti_eigen": DepthPreset(1e-3, 80.0, "eigen", False, f"{_GODARD} --eigen_crop"),
    # Garg et al. 2016's crop, 80 m cap: Godard's Table 1-2 rows, monodepth2 stereo results.
    "kitti_garg": DepthPreset(1e-3, 80.0, "garg", False, f"{_GODARD} --garg_crop"),
    # Zhou et al. 2017 (SfMLearner) and monodepth2's mono protocol: the Eigen *split* scored with
    # the *Garg* crop (SfMLearner: "crop used by Garg ECCV16 to reprocude Eigen NIPS14 results").
    "kitti_eigen_median": DepthPreset(1e-3, 80.0, "garg", True, "Zhou et al. 2017 kitti_eval/eval_depth.py"),
    # Garg et al. 2016's 50 m cap (Godard's "cap 50m" rows), with the Garg crop.
    "cap50": DepthPreset(1e-3, 50.0, "garg", False, f"{_GODARD} --garg_crop --max_depth 50"),
}


def get_preset(preset: str | DepthPreset | None) -> DepthPreset:
    """A preset by name (:data:`DEPTH_PRESETS`), as given, or the no-protocol default for None."""
    if preset is None:
        return DepthPreset()
    if isinstance(preset, DepthPreset):
        return preset
    if isinstance(preset, str) and preset in DEPTH_PRESETS:
        return DEPTH_PRESETS[preset]
    raise ValueError(f"preset must be None, a DepthPreset or one of {sorted(DEPTH_PRESETS)}, got {preset!r}")


def _images(x: Any, name: str) -> np.ndarray:
    """``[H, W]``, ``[1, H, W]`` or ``[B, 1, H, W]`` -> float64 ``(B, H, W)``."""
    if isinstance(x, Tensor):
        x = x.detach().cpu().double().numpy()
    if not isinstance(x, np.ndarray) or x.dtype.kind not in "fiu":
        raise ValueError(
            f"{name} must be a real Tensor or array, got {getattr(x, 'dtype', type(x).__name__)}"
        )
    shape = tuple(x.shape)
    if x.ndim == 2:
        x = x[None]  # (H, W) -> (1, H, W)
    elif x.ndim == 3 and shape[0] == 1:
        pass
    elif x.ndim == 4 and shape[1] == 1:
        x = x[:, 0]  # (B, 1, H, W) -> (B, H, W)
    else:
        raise ValueError(f"{name} must be [H, W], [1, H, W] or [B, 1, H, W], got {shape}")
    if x.size == 0:
        raise ValueError(f"{name} is empty: shape {shape}")
    return x.astype(np.float64)


def _pair(pred: Any, gt: Any) -> tuple[np.ndarray, np.ndarray]:
    p, g = _images(pred, "pred"), _images(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(
            f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} must have one size (no resizing)"
        )
    if not np.isfinite(p).all():
        raise ValueError("pred holds NaN or inf")
    return p, g


def crop_mask(height: int, width: int, crop: str | None) -> np.ndarray:
    """bool ``(H, W)``: True inside the named crop (all True for None)."""
    mask = np.zeros((height, width), dtype=bool)
    if crop is None:
        mask[:] = True
        return mask
    top, bottom, left, right = CROPS[crop]
    mask[int(top * height) : int(bottom * height), int(left * width) : int(right * width)] = True
    return mask


def _errors(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Eigen et al.'s errors over 1-D arrays of evaluated pixels (both > 0)."""
    thresh = np.maximum(gt / pred, pred / gt)
    diff = gt - pred
    return {
        "abs_rel": float(np.mean(np.abs(diff) / gt)),
        "sq_rel": float(np.mean(diff**2 / gt)),
        "rmse": float(np.sqrt(np.mean(diff**2))),
        "rmse_log": float(np.sqrt(np.mean((np.log(gt) - np.log(pred)) ** 2))),
        "a1": float(np.mean(thresh < 1.25)),
        "a2": float(np.mean(thresh < 1.25**2)),
        "a3": float(np.mean(thresh < 1.25**3)),
    }


def _image_errors(pred: np.ndarray, gt: np.ndarray, p: DepthPreset, index: int) -> dict[str, float] | None:
    """One image ``(H, W)`` under preset ``p``; None when no pixel is evaluated."""
    with np.errstate(invalid="ignore"):
        mask = np.isfinite(gt) & (gt > p.min_depth) & crop_mask(gt.shape[0], gt.shape[1], p.crop)
        if p.max_depth is not None:
            mask &= gt < p.max_depth
    if not mask.any():
        return None
    g, d = gt[mask], pred[mask]  # (n,) each
    if p.median_scaling:
        med = float(np.median(d))
        if not med > 0:
            raise ValueError(f"pred[{index}]: median scaling needs a positive median prediction, got {med}")
        d = d * (float(np.median(g)) / med)
    if p.min_depth > 0 or p.max_depth is not None:
        d = np.clip(d, p.min_depth if p.min_depth > 0 else None, p.max_depth)
    if not (d > 0).all():
        raise ValueError(
            f"pred[{index}]: {int((d <= 0).sum())} evaluated pixels have depth <= 0 "
            "(use a preset with min_depth, which clamps, or predict positive depth)"
        )
    return _errors(g, d)


def depth_metrics(
    pred: ArrayLike, gt: ArrayLike, preset: str | DepthPreset | None = None
) -> dict[str, float]:
    """Eigen et al.'s depth errors of ``pred`` against ``gt`` (metres, ``[H, W]``, ``[1, H, W]`` or
    ``[B, 1, H, W]``, one size) -> ``{abs_rel, sq_rel, rmse, rmse_log, a1, a2, a3}``.

    Per image, then averaged over the images that have an evaluated pixel (NaN for every key
    when none has). ``preset``: None (``gt > 0``, no cap / crop / scaling), a name in
    :data:`DEPTH_PRESETS` or a :class:`DepthPreset`. NaN / inf in ``pred`` is a ``ValueError``;
    in ``gt`` it means unknown.
    """
    p = get_preset(preset)
    pr, gt_ = _pair(pred, gt)
    per_image = [e for i in range(pr.shape[0]) if (e := _image_errors(pr[i], gt_[i], p, i)) is not None]
    if not per_image:
        return {k: math.nan for k in DEPTH_KEYS}
    return {k: float(np.mean([e[k] for e in per_image])) for k in DEPTH_KEYS}


def _disparity_counts(
    pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None
) -> tuple[float, int, int, int, int]:
    """Sum of |err|, pixels, > 2 px, > 3 px, D1 outliers over known pixels of ``(B, H, W)`` arrays."""
    with np.errstate(invalid="ignore"):
        mask = np.isfinite(gt) & (gt > 0)
    if valid is not None:
        mask &= valid
    err = np.abs(pred[mask] - gt[mask])  # (n,)
    d1 = (err > 3.0) & (err > 0.05 * gt[mask])
    return float(err.sum()), int(err.size), int((err > 2.0).sum()), int((err > 3.0).sum()), int(d1.sum())


def _disparity_result(total: float, n: float, bad2: float, bad3: float, d1: float) -> dict[str, float]:
    if n == 0:
        return {k: math.nan for k in DISPARITY_KEYS}
    return {"epe": total / n, "bad2": 100.0 * bad2 / n, "bad3": 100.0 * bad3 / n, "d1": 100.0 * d1 / n}


def disparity_metrics(pred: ArrayLike, gt: ArrayLike, valid: ArrayLike | None = None) -> dict[str, float]:
    """Stereo errors (px) of ``pred`` against ``gt`` (``[H, W]``, ``[1, H, W]`` or ``[B, 1, H, W]``)
    -> ``{epe, bad2, bad3, d1}``, pixel-weighted over all known pixels of the batch.

    Known: ``gt > 0``, finite, and ``valid`` (bool, ``gt``'s shape or ``[B, H, W]``) where given.
    ``epe`` is the mean ``|pred - gt|``; ``bad2`` / ``bad3`` the percent of pixels off by more than
    2 / 3 px (Middlebury); ``d1`` KITTI 2015's D1: percent off by > 3 px **and** > 5 % of ``gt``.
    NaN for every key when no pixel is known.
    """
    pr, g = _pair(pred, gt)
    v = None
    if valid is not None:
        if not isinstance(valid, Tensor | np.ndarray) or valid.dtype not in (torch.bool, np.bool_):
            raise ValueError(
                f"valid must be a bool Tensor or array, got {getattr(valid, 'dtype', type(valid))}"
            )
        v = valid.detach().cpu().numpy() if isinstance(valid, Tensor) else valid
        if v.size != g.size:
            raise ValueError(f"valid {tuple(v.shape)} does not match gt {tuple(gt.shape)}")
        v = v.reshape(g.shape)
    return _disparity_result(*_disparity_counts(pr, g, v))


def _scalar(x: float | Tensor, name: str, positive: bool = True) -> float:
    value = float(x.item()) if isinstance(x, Tensor) and x.numel() == 1 else x
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)  # numpy scalars too
    if not ok or not math.isfinite(value) or (positive and value <= 0):
        raise ValueError(f"{name} must be a {'positive ' if positive else ''}finite number, got {x!r}")
    return float(value)


def disparity_to_depth(
    disp: Tensor, focal: float | Tensor, baseline: float | Tensor, doffs: float | Tensor = 0.0
) -> Tensor:
    """Disparity (px, any shape) -> depth (m) = ``focal * baseline / (disp + doffs)``.

    ``focal`` in px, ``baseline`` in m, ``doffs`` in px. Unknown disparity (<= 0, NaN, inf)
    gives depth 0 (unknown), and so does ``disp + doffs <= 0``.
    """
    if not isinstance(disp, Tensor) or not disp.is_floating_point():
        raise ValueError(f"disp must be a float Tensor, got {getattr(disp, 'dtype', type(disp).__name__)}")
    fb = _scalar(focal, "focal") * _scalar(baseline, "baseline")
    shifted = disp + _scalar(doffs, "doffs", positive=False)
    known = torch.isfinite(disp) & (disp > 0) & (shifted > 0)
    return torch.where(known, fb / torch.where(known, shifted, 1.0), 0.0)


def depth_to_disparity(
    depth: Tensor, focal: float | Tensor, baseline: float | Tensor, doffs: float | Tensor = 0.0
) -> Tensor:
    """Depth (m, any shape) -> disparity (px) = ``focal * baseline / depth - doffs``; the inverse of
    :func:`disparity_to_depth`. Unknown depth (<= 0, NaN, inf), or a disparity that comes out
    <= 0, gives disparity 0 (unknown)."""
    if not isinstance(depth, Tensor) or not depth.is_floating_point():
        raise ValueError(f"depth must be a float Tensor, got {getattr(depth, 'dtype', type(depth).__name__)}")
    fb = _scalar(focal, "focal") * _scalar(baseline, "baseline")
    known = torch.isfinite(depth) & (depth > 0)
    disp = fb / torch.where(known, depth, 1.0) - _scalar(doffs, "doffs", positive=False)
    return torch.where(known & (disp > 0), disp, 0.0)


# ----------------------------------------------------------------------------- engine metrics


def _pred_list(preds: Any, targets: list[dict[str, Tensor]], who: str) -> list[Tensor]:
    """``{"disparity": [B, 1, H, W]}`` or B dicts of ``[1, H, W]`` -> B tensors ``(H, W)``."""
    if not isinstance(targets, list | tuple) or not all(isinstance(t, dict) for t in targets):
        raise ValueError(f"{who}: targets must be a list of dicts")
    items = preds if isinstance(preds, list | tuple) else [preds]
    maps: list[Tensor] = []
    for k, item in enumerate(items):
        d = item.get("disparity") if isinstance(item, dict) else None
        if (
            not isinstance(d, Tensor)
            or not d.is_floating_point()
            or d.dim() not in (3, 4)
            or d.shape[-3] != 1
        ):
            shape = tuple(d.shape) if isinstance(d, Tensor) else type(d).__name__
            raise ValueError(
                f"{who}: preds[{k}]['disparity'] must be float [B, 1, H, W] or [1, H, W], got {shape}"
            )
        d = d.detach().float().cpu()
        maps.extend(d[:, 0] if d.dim() == 4 else [d[0]])  # (B, 1, H, W) -> B x (H, W)
    if len(maps) != len(targets):
        raise ValueError(f"{who}: {len(maps)} predicted disparity maps for {len(targets)} targets")
    for i, m in enumerate(maps):
        if m.numel() == 0 or not torch.isfinite(m).all():
            raise ValueError(f"{who}: predicted disparity {i} is empty or holds NaN / inf")
    return maps


def _target_map(t: dict[str, Tensor], key: str, size: tuple[int, int], i: int, who: str) -> np.ndarray | None:
    value = t.get(key)
    if value is None:
        return None
    want = (size,) if key == "valid" else ((1, *size), size)
    if not isinstance(value, Tensor) or tuple(value.shape) not in want:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(
            f"{who}: targets[{i}]['{key}'] must be [1, H, W] / [H, W] with H, W = {size}, got {shape}"
        )
    out = value.detach().cpu().reshape(size).numpy()  # (H, W)
    return out.astype(bool) if key == "valid" else out.astype(np.float64)


def _calibration(t: dict[str, Tensor], i: int, who: str) -> tuple[float, float, float] | None:
    if t.get("focal") is None or t.get("baseline") is None:
        return None
    where = f"{who}: targets[{i}]"
    doffs = t.get("doffs")
    return (
        _scalar(t["focal"], f"{where}['focal']"),
        _scalar(t["baseline"], f"{where}['baseline']"),
        0.0 if doffs is None else _scalar(doffs, f"{where}['doffs']", positive=False),
    )


class _Accumulator:
    """Pixel-weighted disparity errors and per-image depth errors, shared by the two metrics."""

    def __init__(self, preset: str | DepthPreset | None) -> None:
        self.preset = get_preset(preset)
        self.reset()

    def reset(self) -> None:
        self.disp = [0.0, 0, 0, 0, 0]  # sum |err|, pixels, > 2 px, > 3 px, D1 outliers
        self.depth: list[dict[str, float]] = []
        self.protocols: set[str] = set()
        self.images = 0
        self.seen_depth = False  # some target could be scored in depth (even without a pixel)

    def add_disparity(self, pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None) -> None:
        counts = _disparity_counts(pred[None], gt[None], None if valid is None else valid[None])
        self.disp = [a + b for a, b in zip(self.disp, counts, strict=True)]

    def add_depth(self, pred: np.ndarray, gt: np.ndarray, preset: DepthPreset, protocol: str, i: int) -> None:
        self.seen_depth = True
        errors = _image_errors(pred, gt, preset, i)
        if errors is not None:
            self.depth.append(errors)
            self.protocols.add(protocol)

    def result(self, with_depth: bool) -> dict[str, Any]:
        out: dict[str, Any] = _disparity_result(*self.disp)
        out["valid_pixels"] = int(self.disp[1])
        if with_depth:
            for k in DEPTH_KEYS:
                out[k] = float(np.mean([e[k] for e in self.depth])) if self.depth else math.nan
            out["depth_images"] = len(self.depth)
            out["protocol"] = "+".join(sorted(self.protocols)) or "none"
        out["images"] = self.images
        return out


class DisparityMetric:
    """The stereo task's metric: ``update(preds, targets)``, ``compute()``, ``reset()``.

    ``preds``: ``{"disparity": float[B, 1, H, W]}`` (px) or a list of such dicts; targets: B dicts
    with ``disparity`` ``[1, H, W]`` (px, required), optional ``valid`` bool ``[H, W]`` and scalars
    ``focal`` (px), ``baseline`` (m), ``doffs`` (px). ``compute()``: ``epe``, ``bad2``, ``bad3``,
    ``d1`` (percent), pixel-weighted over the dataset, ``valid_pixels``, ``images``; and once a
    target carried ``focal`` + ``baseline``, the depth errors of those images under ``preset``
    (per image, averaged), ``depth_images`` and ``protocol`` = ``"metric"``.
    """

    def __init__(self, preset: str | DepthPreset | None = None) -> None:
        self._acc = _Accumulator(preset)

    def reset(self) -> None:
        self._acc.reset()

    def update(self, preds: Any, targets: list[dict[str, Tensor]]) -> None:
        who = "DisparityMetric"
        maps = _pred_list(preds, targets, who)
        for i, (pred_t, t) in enumerate(zip(maps, targets, strict=True)):
            size = (int(pred_t.shape[0]), int(pred_t.shape[1]))
            gt = _target_map(t, "disparity", size, i, who)
            if gt is None:
                raise ValueError(f"{who}: targets[{i}] has no 'disparity'")
            valid = _target_map(t, "valid", size, i, who)
            pred = pred_t.double().numpy()
            self._acc.add_disparity(pred, gt, valid)
            self._acc.images += 1
            calib = _calibration(t, i, who)
            if calib is not None:
                gt_d = torch.from_numpy(np.where(valid, gt, 0.0) if valid is not None else gt)
                gt_depth = disparity_to_depth(gt_d, *calib).numpy()
                pred_depth = disparity_to_depth(pred_t.double().clamp(min=MIN_DISPARITY), *calib).numpy()
                self._acc.add_depth(pred_depth, gt_depth, self._acc.preset, "metric", i)

    def compute(self) -> dict[str, Any]:
        return self._acc.result(with_depth=self._acc.seen_depth)


class DepthMetric:
    """The monocular task's metric: depth errors averaged per image, plus disparity errors.

    ``preds`` as :class:`DisparityMetric`; targets: B dicts, each with any of ``disparity``
    ``[1, H, W]`` (px), ``depth`` ``[1, H, W]`` (m), ``valid``, ``focal``, ``baseline``, ``doffs``.
    Per image, the first protocol that applies (recorded in ``compute()['protocol']``):

    * ``"metric"``: ``focal`` + ``baseline`` given: predicted depth through the calibration,
      against ``depth`` (else the target disparity through the calibration), under ``preset``;
    * ``"depth_median"``: ``depth`` without calibration: ``1 / disparity`` median-scaled to it;
    * ``"disparity_median"``: only ``disparity``: ``1 / disparity`` of both, median-scaled.

    The two median protocols keep only the preset's crop (a cap in metres means nothing
    there). A target with none of the keys adds no depth figures. ``epe`` / ``bad2`` / ``bad3`` /
    ``d1`` come from the images with ``disparity``.
    """

    def __init__(self, preset: str | DepthPreset | None = None) -> None:
        self._acc = _Accumulator(preset)
        self._median = DepthPreset(crop=self._acc.preset.crop, median_scaling=True)

    def reset(self) -> None:
        self._acc.reset()

    def update(self, preds: Any, targets: list[dict[str, Tensor]]) -> None:
        who = "DepthMetric"
        maps = _pred_list(preds, targets, who)
        for i, (pred_t, t) in enumerate(zip(maps, targets, strict=True)):
            size = (int(pred_t.shape[0]), int(pred_t.shape[1]))
            disp = _target_map(t, "disparity", size, i, who)
            depth = _target_map(t, "depth", size, i, who)
            valid = _target_map(t, "valid", size, i, who)
            calib = _calibration(t, i, who)
            self._acc.images += 1
            pred = pred_t.double().clamp(min=MIN_DISPARITY)  # (H, W)
            if disp is not None:
                self._acc.add_disparity(pred_t.double().numpy(), disp, valid)
            if valid is not None:  # unknown where not valid (0 is unknown for both maps)
                disp = None if disp is None else np.where(valid, disp, 0.0)
                depth = None if depth is None else np.where(valid, depth, 0.0)
            if calib is not None and (depth is not None or disp is not None):
                gt = (
                    depth if depth is not None else disparity_to_depth(torch.from_numpy(disp), *calib).numpy()
                )
                self._acc.add_depth(
                    disparity_to_depth(pred, *calib).numpy(), gt, self._acc.preset, "metric", i
                )
            elif depth is not None:
                self._acc.add_depth(1.0 / pred.numpy(), depth, self._median, "depth_median", i)
            elif disp is not None:
                with np.errstate(divide="ignore"):
                    inverse = np.where(disp > 0, 1.0 / disp, 0.0)
                self._acc.add_depth(1.0 / pred.numpy(), inverse, self._median, "disparity_median", i)

    def compute(self) -> dict[str, Any]:
        return self._acc.result(with_depth=True)
