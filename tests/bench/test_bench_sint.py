"""Smoke test of the SINT speed benchmark (``--quick``) and its OpenCV baseline trackers.

No timing is asserted (DESIGN.md §5): only that the rows are there, the numbers positive and
consistent (frames/s = tracked frames / s, candidates/s = K / s), and that the baselines track a
patch moved by a known shift.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from structpred.bench import sint
from tests.bench.markdown import markdown_tables


def moving_patch(T: int = 5, step: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """A clip ``[T, 3, 48, 64]``: a textured 12 x 12 patch on a smooth background moved ``step`` px
    right and down a frame; the true boxes ``[T, 4]`` xyxy."""
    g = torch.Generator().manual_seed(0)
    bg = F.avg_pool2d(torch.rand(1, 3, 48, 64, generator=g), 9, 1, 4)[0] * 0.3 + 0.2  # (3, 48, 64)
    patch = torch.rand(3, 12, 12, generator=g)
    frames, boxes = [], []
    for t in range(T):
        x, y = 10 + step * t, 8 + step * t
        f = bg.clone()
        f[:, y : y + 12, x : x + 12] = patch
        frames.append(f)
        boxes.append([x, y, x + 12, y + 12])
    return torch.stack(frames), torch.tensor(boxes, dtype=torch.float32)


def test_ncc_track_follows_a_shifted_patch_exactly() -> None:
    frames, boxes = moving_patch()
    torch.testing.assert_close(sint.ncc_track(frames, boxes[0]), boxes)


def test_mil_track_starts_from_the_box_and_stays_near_the_patch() -> None:
    frames, boxes = moving_patch()
    got = sint.mil_track(frames, boxes[0])
    assert got.shape == (5, 4)
    torch.testing.assert_close(got[0], boxes[0])
    centres = (got[:, :2] + got[:, 2:]) / 2
    assert float((centres - (boxes[:, :2] + boxes[:, 2:]) / 2).abs().max()) < 6  # half the patch


def test_rotating_medians_runs_every_call_each_round() -> None:
    calls: list[str] = []
    ms = sint.rotating_medians([lambda: calls.append("a"), lambda: calls.append("b")], repeats=3, warmup=1)
    assert len(ms) == 2 and all(m >= 0 for m in ms)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then the order rotates


def test_quick_run_prints_both_tables_with_consistent_numbers(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sint, "QUICK_SIZES", ((32, 48),))
    monkeypatch.setattr(sint, "QUICK_LENGTH", 3)
    monkeypatch.setattr(sint, "CANDIDATES", (303, 40))
    threads = torch.get_num_threads()
    sint.main(["--quick", "--threads", "1"])
    assert torch.get_num_threads() == threads  # given back
    out = capsys.readouterr().out
    assert "QUICK" in out
    tracks, rois = markdown_tables(out)
    assert tracks[0][:3] == ["frames", "SINT ms", "SINT frames/s"]
    assert [cells[0] for cells in tracks[1:]] == ["32x48, T = 3"]
    cells = [float(c) for c in tracks[1][1:]]
    for ms, fps in zip(cells[0:6:2], cells[1:6:2], strict=True):
        # ms is printed to 0.1: allow its rounding
        assert ms > 0 and fps == pytest.approx(2 / ms * 1e3, rel=0.01 + 0.05 / ms, abs=0.06)
    assert [r[0] for r in rois[1:]] == [
        "backbone (c2, c3), one 32x48 frame",
        "RoI-align + embed + score, 303 candidates, 32x48",
        "RoI-align + embed + score, 40 candidates, 32x48",
    ]
    assert rois[1][2] == "-"
    for r, K in zip(rois[2:], (303, 40), strict=True):
        ms, per_s = float(r[1]), float(r[2])
        assert ms > 0 and per_s == pytest.approx(K / ms * 1e3, rel=0.01 + 0.005 / ms, abs=1)
