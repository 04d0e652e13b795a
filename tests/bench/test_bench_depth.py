"""Smoke test of the depth benchmark (``--quick``) and its references.

No timing is asserted (DESIGN.md §5): only that the rows are there, the numbers positive and
consistent (images/s = 1000 / ms, GFLOP/s = GFLOP / s), and that the loop references are the ops.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from structpred.bench import depth
from structpred.ops.stereo_volume import concat_volume, correlation_volume
from tests.bench.markdown import markdown_tables


@pytest.mark.slow
def test_quick_run_prints_every_case_with_positive_numbers(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(depth, "QUICK_SIZES", ((32, 64),))
    monkeypatch.setattr(depth, "MODELS", ("stereo_net_narrow", "no_such_depth_model"))
    threads = torch.get_num_threads()
    depth.main(["--quick", "--threads", "1"])
    assert torch.get_num_threads() == threads  # given back
    out = capsys.readouterr().out
    assert "QUICK" in out and "matmul peak" in out
    models, ops = markdown_tables(out)
    assert models[0][:3] == ["case", "ms", "images/s"]
    assert [cells[0] for cells in models[1:]] == [
        "stereo_net_narrow inference, 32x64",
        "stereo_net_narrow train step, 32x64",
    ]
    for cells in models[1:]:
        ms, per_s, gflop, gflops = (float(cells[i]) for i in range(1, 5))
        assert ms > 0 and gflop > 0
        assert per_s == pytest.approx(1e3 / ms, rel=0.02, abs=0.006)
        assert gflops == pytest.approx(gflop / ms * 1e3, rel=0.05, abs=0.06)
    assert float(models[1][6]) > 0 and models[2][6] == "-"  # SGBM beside inference only
    assert "no_such_depth_model: not measured (ValueError: unknown model" in out
    assert [cells[0].split(",")[0] for cells in ops[1:]] == [
        "correlation_volume (banded GEMM)",
        "correlation_volume (banded GEMM) fwd+bwd",
        "concat_volume (strided unfold)",
        "concat_volume (strided unfold) fwd+bwd",
    ]


def test_loop_references_are_the_ops() -> None:
    g = torch.Generator().manual_seed(0)
    left, right = torch.randn(2, 3, 4, 9, generator=g), torch.randn(2, 3, 4, 9, generator=g)
    for D in (1, 4, 12):  # 12 > W: the extra planes stay zero
        torch.testing.assert_close(depth.loop_correlation(left, right, D), correlation_volume(left, right, D))
        torch.testing.assert_close(depth.loop_concat(left, right, D), concat_volume(left, right, D))


def test_pair_is_a_shifted_copy_and_sgbm_finds_the_shift() -> None:
    x = depth.pair(32, 96)
    assert x.shape == (1, 2, 3, 32, 96)
    torch.testing.assert_close(
        x[0, 0, ..., depth.SHIFT :], x[0, 1, ..., : 96 - depth.SHIFT]
    )  # left x = right x - d
    disparity = np.asarray(depth.sgbm_call(x[0])()) / 16.0  # OpenCV's fixed point, 4 fraction bits
    inner = disparity[8:-8, depth.SGBM_DISPARITIES : -8]  # away from the borders SGBM leaves empty
    assert float((abs(inner - depth.SHIFT) < 1).mean()) > 0.9


def test_row_arithmetic() -> None:
    row = depth.Row("x", ms=250.0, gflop=5.0, peak_gflops=40.0, sgbm_ms=50.0)
    assert row.images_per_s == 4.0 and row.gflops == 20.0 and row.peak_percent == 50.0
    table = depth.format_rows([row], ["m: not measured"])
    assert "| x | 250.0 | 4.00 | 5.00 | 20.0 | 50.0 | 50.0 | 5.0 |" in table and "m: not measured" in table
