"""Trajectory metrics against ground-truth point tracks: drift, stops at occlusion, camera motion left.

Shape shorthand: P trajectories, T frames.

Inputs are plain tensors (:class:`~structpred.ops.trajectories.Tracks` fields and, for the
truth, e.g. :func:`structpred.data.shapes_motion.true_tracks` of the same points from their
birth frames): tracked positions ``float[P, T, 2]`` (NaN where not alive), ``birth`` /
``death`` ``int64[P]`` (first frame, one past the last), true positions ``float[P, T, 2]`` and
``visible`` ``bool[P, T]`` (the surface is seen, from the birth frame until it is first hidden).

* **Drift after h frames**: ``|tracked - true|`` in pixels at frame ``birth + h``, over the
  trajectories still alive there whose surface is still visible (mean, median, count).
* **Stops at occlusion**: a trajectory whose surface is hidden at frame ``e`` (``visible``
  turns False inside the clip) is *correctly stopped* when the tracker ended it by frame
  ``e + tolerance`` (``death <= e + tolerance``); it is *stopped early* when ``death < e -
  tolerance``. For trajectories whose surface stays visible to the end, the *false stop* share is
  those the tracker ended before the last frame.
* **Residual camera motion** (omega-trajectories): the mean per-frame displacement
  ``|omega[t+1] - omega[t]|`` in px/frame of background trajectories; a perfect camera removal
  leaves 0. The same number on the raw positions is the camera's motion, for comparison.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def _check(points: Tensor, birth: Tensor, name: str) -> tuple[int, int]:
    if not isinstance(points, Tensor) or points.dim() != 3 or points.shape[2] != 2:
        raise ValueError(
            f"{name}: positions must be a Tensor[P, T, 2], got {tuple(getattr(points, 'shape', ()))}"
        )
    P, T, _ = points.shape
    if not isinstance(birth, Tensor) or birth.shape != (P,):
        raise ValueError(f"{name}: birth must be a Tensor[{P}], got {tuple(getattr(birth, 'shape', ()))}")
    return P, T


def drift(
    points: Tensor, birth: Tensor, truth: Tensor, visible: Tensor, horizons: Sequence[int] = (10, 30)
) -> dict[int, dict[str, float]]:
    """Drift in pixels ``h`` frames after each trajectory's birth, for each ``h`` in ``horizons``.

    Returns ``{h: {"mean": px, "median": px, "count": n}}`` (NaN mean / median when no
    trajectory qualifies, e.g. a clip shorter than ``h + 1`` frames).
    """
    P, T = _check(points, birth, "drift")
    if truth.shape != points.shape or visible.shape != (P, T):
        raise ValueError(
            f"drift: truth {tuple(truth.shape)} / visible {tuple(visible.shape)} must match [P, T] = {[P, T]}"
        )
    out: dict[int, dict[str, float]] = {}
    for h in horizons:
        if h < 0:
            raise ValueError(f"drift: horizons must be >= 0, got {h}")
        at = birth + h  # (P,)
        ok = at < T
        idx = torch.nonzero(ok).squeeze(1)
        t = at[idx]
        tracked, true = points[idx, t].double(), truth[idx, t].double()  # (n, 2)
        keep = ~tracked.isnan().any(1) & visible[idx, t]
        err = (tracked[keep] - true[keep]).norm(dim=1)
        n = int(err.numel())
        out[h] = {
            "mean": float(err.mean()) if n else float("nan"),
            "median": float(err.median()) if n else float("nan"),
            "count": float(n),
        }
    return out


def hidden_at(visible: Tensor, birth: Tensor) -> Tensor:
    """int64 ``[P]``: the first frame after ``birth`` where ``visible`` is False (``T`` if none)."""
    P, T = visible.shape
    t = torch.arange(T)
    hidden = ~visible & (t[None] >= birth[:, None])  # (P, T)
    return torch.where(hidden.any(1), hidden.float().argmax(1), torch.full((P,), T)).long()


def occlusion_stops(
    birth: Tensor, death: Tensor, visible: Tensor, occluded: Tensor | None = None, tolerance: int = 1
) -> dict[str, float]:
    """How well the tracker stops where surfaces are hidden (see the module docstring).

    Args:
        birth, death (Tensor[P] int64): the tracker's first frame and one past its last.
        visible (Tensor[P, T] bool): the truth.
        occluded (Tensor[P] bool | None): which hidings to score (e.g. covered by another layer,
            not left the image); None scores them all.
        tolerance: frames of slack on either side.

    Returns:
        ``{"hidden": n, "stopped": share stopped by e + tolerance, "early": share stopped before
        e - tolerance, "kept_visible": n visible to the end, "false_stops": their share ended early}``.
    """
    P, T = visible.shape
    if birth.shape != (P,) or death.shape != (P,):
        raise ValueError(
            f"occlusion_stops: birth {tuple(birth.shape)} and death {tuple(death.shape)} must be [{P}]"
        )
    if tolerance < 0:
        raise ValueError(f"occlusion_stops: tolerance must be >= 0, got {tolerance}")
    e = hidden_at(visible, birth)  # (P,)
    hidden = e < T
    scored = hidden if occluded is None else hidden & occluded.bool()
    stay = ~hidden
    n, m = int(scored.sum()), int(stay.sum())
    nan = float("nan")
    return {
        "hidden": float(n),
        "stopped": float((death[scored] <= e[scored] + tolerance).double().mean()) if n else nan,
        "early": float((death[scored] < e[scored] - tolerance).double().mean()) if n else nan,
        "kept_visible": float(m),
        "false_stops": float((death[stay] < T).double().mean()) if m else nan,
    }


def residual_motion(positions: Tensor, select: Tensor | None = None) -> float:
    """Mean per-frame displacement (px/frame) of the selected trajectories, over frames where a
    trajectory is alive in both ``t`` and ``t + 1``; NaN if none.

    Args:
        positions (Tensor[P, T, 2]): omega (or raw) positions, NaN where not alive.
        select (Tensor[P] bool | None): e.g. the background's trajectories.
    """
    if not isinstance(positions, Tensor) or positions.dim() != 3 or positions.shape[2] != 2:
        raise ValueError(
            f"residual_motion: positions must be a Tensor[P, T, 2], got {tuple(positions.shape)}"
        )
    if select is not None:
        positions = positions[select.bool()]
    step = (positions[:, 1:] - positions[:, :-1]).double().norm(dim=-1)  # (P, T-1)
    step = step[~step.isnan()]
    return float(step.mean()) if step.numel() else float("nan")
