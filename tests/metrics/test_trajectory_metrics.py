"""metrics.trajectories: drift, occlusion stops and residual motion on hand-made tracks."""

from __future__ import annotations

import math

import pytest
import torch

from structpred.metrics.trajectories import drift, hidden_at, occlusion_stops, residual_motion

NAN = float("nan")


def _line(T: int, start: float, step: float, birth: int = 0, death: int | None = None) -> torch.Tensor:
    x = torch.full((T, 2), NAN)
    death = T if death is None else death
    for t in range(birth, death):
        x[t] = torch.tensor([start + step * (t - birth), 0.0])
    return x


def test_drift_measures_the_gap_at_the_horizon():
    T = 12
    truth = torch.stack([_line(T, 0, 1.0), _line(T, 5, 1.0, birth=1), _line(T, 0, 2.0)])
    tracked = torch.stack([_line(T, 0, 1.1), _line(T, 5, 1.0, birth=1), _line(T, 0, 2.0, death=5)])
    birth = torch.tensor([0, 1, 0])
    visible = ~truth.isnan().any(-1)
    out = drift(tracked, birth, truth, visible, horizons=(0, 4, 10, 11))
    assert out[0]["mean"] == 0 and out[0]["count"] == 3
    assert math.isclose(out[4]["mean"], (0.4 + 0.0 + 0.0) / 3, abs_tol=1e-5)
    assert math.isclose(out[10]["mean"], 0.5, abs_tol=1e-5) and out[10]["count"] == 2  # track 2 dead
    assert out[11]["count"] == 1  # track 1 born at 1 has no frame 12
    # a point hidden at the horizon does not count
    visible[0, 10] = False
    assert drift(tracked, birth, truth, visible, horizons=(10,))[10]["count"] == 1


def test_occlusion_stops():
    T = 10
    visible = torch.ones(4, T, dtype=torch.bool)
    visible[0, 5:] = False  # hidden at 5, tracker stopped at 5: correct
    visible[1, 5:] = False  # hidden at 5, tracker went on to 8: missed
    visible[2, 5:] = False  # hidden at 5, tracker stopped at 2: early
    birth = torch.zeros(4, dtype=torch.long)
    death = torch.tensor([5, 8, 2, 7])  # track 3 stays visible but was stopped: a false stop
    out = occlusion_stops(birth, death, visible, tolerance=1)
    assert out["hidden"] == 3 and math.isclose(out["stopped"], 2 / 3, rel_tol=1e-6)
    assert math.isclose(out["early"], 1 / 3, rel_tol=1e-6)
    assert out["kept_visible"] == 1 and out["false_stops"] == 1.0
    only = occlusion_stops(birth, death, visible, occluded=torch.tensor([True, False, False, False]))
    assert only["hidden"] == 1 and only["stopped"] == 1.0
    assert hidden_at(visible, birth).tolist() == [5, 5, 5, 10]


def test_residual_motion():
    T = 6
    still = torch.stack([_line(T, 3, 0.0), _line(T, 0, 0.0, birth=2)])
    moving = torch.stack([_line(T, 0, 1.5), _line(T, 0, 0.5, death=3)])
    assert residual_motion(still) == 0.0
    both = torch.cat([still, moving])
    assert math.isclose(residual_motion(both, torch.tensor([False, False, True, False])), 1.5)
    assert math.isnan(residual_motion(torch.full((2, 3, 2), NAN)))


def test_bad_inputs():
    with pytest.raises(ValueError, match="positions must be"):
        drift(torch.zeros(3, 4), torch.zeros(3, dtype=torch.long), torch.zeros(3, 4), torch.ones(3, 4))
    with pytest.raises(ValueError, match="birth must be"):
        drift(torch.zeros(3, 4, 2), torch.zeros(2, dtype=torch.long), torch.zeros(3, 4, 2), torch.ones(3, 4))
    with pytest.raises(ValueError, match="tolerance"):
        occlusion_stops(
            torch.zeros(1, dtype=torch.long),
            torch.ones(1, dtype=torch.long),
            torch.ones(1, 3, dtype=torch.bool),
            tolerance=-1,
        )
