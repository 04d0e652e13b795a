"""Smoke test of the detection benchmark (``--quick``): it runs and prints the expected tables.

No timing is asserted (DESIGN.md §5): only that the rows are there and the numbers positive.
"""

from __future__ import annotations

import re

import pytest
import torch

from structpred.bench import detection  # noqa: E402
from structpred.cli import main as cli_main  # noqa: E402
from tests.bench.markdown import markdown_tables

MODEL = "mobilenet_v3_large_320_fpn"


@pytest.mark.slow
def test_quick_run_prints_both_tables_with_positive_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    threads = torch.get_num_threads()
    try:
        assert cli_main(["bench", "detection", "--quick", "--threads", "1", "--models", MODEL]) == 0
    finally:
        torch.set_num_threads(threads)  # the suite sets torch's thread count for its run
    out = capsys.readouterr().out
    assert "QUICK" in out
    timing, throughput = markdown_tables(out)

    header = timing[0]
    ratio_col = next(i for i, c in enumerate(header) if "ratio" in c)
    rows = {cells[0]: cells for cells in timing[1:]}
    assert all(len(cells) == len(header) for cells in rows.values())
    for case in ("inference", "train step"):
        [name] = [n for n in rows if n.startswith(f"fasterrcnn_{MODEL} {case}")]
        assert "160x213" in name
        ours, peer, ratio = (float(rows[name][i]) for i in (1, 2, ratio_col))
        assert ours > 0 and peer > 0 and ratio > 0
        assert rows[name][-1].startswith("<= 1")
    [inference] = [n for n in rows if "inference" in n]
    assert int(re.search(r"(\d+) detections", inference).group(1)) > 0  # type: ignore[union-attr]

    peak = re.search(r"matmul peak: .* ([\d.]+) GFLOP/s", out)
    assert peak and float(peak.group(1)) > 0
    assert len(throughput) == 3  # header + inference + train step
    for cells in throughput[1:]:
        assert cells[0].startswith(f"fasterrcnn_{MODEL}")
        numbers = [float(c) for c in cells[1:]]
        assert len(numbers) == 6 and all(x > 0 for x in numbers)
        assert numbers[0] == pytest.approx(numbers[1], rel=0.05)  # same network, same FLOP count


@pytest.mark.parametrize("argv", [["--models", "resnet18_fpn"], ["--models", ","], ["--repeats", "0"]])
def test_bad_options_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        detection.main(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_throughput_uses_the_reference_count_for_both_sides() -> None:
    row = detection.Throughput(
        "m", peer_gflop=10.0, ours_gflop=12.0, ours_ms=500.0, peer_ms=1000.0, peak_gflops=100.0
    )
    assert row.ours_gflops == pytest.approx(20.0)
    assert row.peer_gflops == pytest.approx(10.0)
    assert row.ours_percent == pytest.approx(20.0)
    assert row.peer_percent == pytest.approx(10.0)
    table = detection.format_throughput([row])
    assert "| m | 10.00 | 12.00 | 20.0 | 10.0 | 20.0 | 10.0 |" in table
