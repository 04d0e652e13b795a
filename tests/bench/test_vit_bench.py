"""Smoke test of the ViT benchmark (``--quick``): it runs and prints the expected tables.

No timing is asserted (DESIGN.md §5): only that the rows are there and the numbers positive.
"""

from __future__ import annotations

import re

import pytest
import torch

from structpred.bench import vit
from structpred.cli import main as cli_main
from tests.bench.markdown import markdown_tables


@pytest.mark.slow
def test_quick_run_prints_both_tables_with_positive_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    threads = torch.get_num_threads()
    assert cli_main(["bench", "vit", "--quick", "--threads", "1"]) == 0
    assert torch.get_num_threads() == threads  # given back
    out = capsys.readouterr().out
    assert "QUICK" in out
    timing, throughput = markdown_tables(out)
    header = timing[0]
    assert header[3] == "ratio ours/timm"
    rows = {cells[0]: cells for cells in timing[1:]}
    for case in ("inference", "train step"):
        [name] = [n for n in rows if n.startswith(f"vit_tiny_patch16_224 {case}")]
        assert "batch 2, 64x64" in name
        ours, peer, ratio = (float(rows[name][i]) for i in (1, 2, 3))
        assert ours > 0 and peer > 0 and ratio == pytest.approx(ours / peer, rel=0.02)
        assert rows[name][-1].startswith("<= 1")
    peak = re.search(r"matmul peak: ([\d.]+) GFLOP/s", out)
    assert peak and float(peak.group(1)) > 0
    assert len(throughput) == 3  # header + inference + train step
    for cells in throughput[1:]:
        numbers = [float(c) for c in cells[1:]]
        assert len(numbers) == 6 and all(x > 0 for x in numbers)
        assert numbers[0] == pytest.approx(numbers[1], rel=0.05)  # the same network, the same FLOPs


@pytest.mark.parametrize("argv", [["--repeats", "0"], ["--threads", "0"]])
def test_bad_options_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        vit.main(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err
