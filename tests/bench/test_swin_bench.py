"""Smoke test of the Swin benchmark (``--quick``): it runs and prints the expected rows.

No timing is asserted (DESIGN.md §5): only that the rows are there and the numbers positive.
"""

from __future__ import annotations

import re

import pytest
import torch

from structpred.bench import swin
from structpred.cli import main as cli_main
from tests.bench.markdown import markdown_tables


@pytest.mark.slow
def test_quick_run_prints_every_case_with_positive_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    threads = torch.get_num_threads()
    assert cli_main(["bench", "swin", "--quick", "--threads", "1"]) == 0
    assert torch.get_num_threads() == threads  # given back
    out = capsys.readouterr().out
    assert "QUICK" in out
    peak = re.search(r"matmul peak ([\d.]+) GFLOP/s", out)
    assert peak and float(peak.group(1)) > 0
    timing, throughput = markdown_tables(out)
    assert timing[0][3] == "ratio ours/timm"
    names = [cells[0] for cells in timing[1:]]
    assert [n.split(",")[0] for n in names] == [
        "swin_tiny_patch4_window7_224 inference",
        "swin_tiny_patch4_window7_224 train step (zero_grad + forward + CE + backward)",
        "Swin-T backbone forward_features (4 NCHW maps)",
    ]
    assert "batch 2, 64x64" in names[0] and "96x96" in names[2]
    for cells in timing[1:]:
        ours, peer, ratio = (float(cells[i]) for i in (1, 2, 3))
        assert ours > 0 and peer > 0 and ratio == pytest.approx(ours / peer, rel=0.02)
        assert cells[-1].startswith("<= 1")
    assert len(throughput) == 4  # header + three cases
    for cells in throughput[1:]:
        numbers = [float(c) for c in cells[1:]]
        assert len(numbers) == 6 and all(x > 0 for x in numbers)
        # The same network (our count may miss the attention inside CPU's fused SDPA kernel).
        assert numbers[0] == pytest.approx(numbers[1], rel=0.1)


@pytest.mark.parametrize("argv", [["--repeats", "0"], ["--threads", "0"]])
def test_bad_options_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        swin.main(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err
