"""Smoke test of the flow benchmark (``--quick``): it runs and prints the expected rows.

No timing is asserted (DESIGN.md §5): only that the rows are there, the numbers positive and the
memory column follows ``all_pairs_bytes``.
"""

from __future__ import annotations

import pytest
import torch

from structpred.bench.flow import unfold_local_correlation
from structpred.cli import main as cli_main
from structpred.ops.correlation import local_correlation
from tests.bench.markdown import markdown_tables


@pytest.mark.slow
def test_quick_run_prints_every_case_with_positive_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    threads = torch.get_num_threads()
    assert cli_main(["bench", "flow", "--quick", "--threads", "1"]) == 0
    assert torch.get_num_threads() == threads  # given back
    out = capsys.readouterr().out
    assert "QUICK" in out
    models, ops, memory = markdown_tables(out)
    assert models[0][3] == "ratio ours/torchvision" and ops[0][3] == "ratio ours/reference"
    names = [cells[0].split(",")[0] for cells in models[1:]]
    assert names == [
        "raft_small forward (last flow)",
        "raft_small flow() (all 2 flows",
        "raft_large forward (last flow)",
        "raft_large flow() (all 2 flows",
    ]
    assert [cells[0].split(",")[0] for cells in ops[1:]] == [
        "local correlation d=4",
        "all-pairs volume + 4-level pyramid",
        "pyramid lookup r=4",
        "packed pyramid + 12 lookups r=4 (RAFT's path)",
    ]
    for cells in models[1:] + ops[1:]:
        ours, peer, ratio = (float(cells[i]) for i in (1, 2, 3))
        assert ours > 0 and peer > 0
        # times and the ratio are printed to 2 decimals: the ratio of the unrounded times lies
        # between the extremes the rounded times allow (sub-millisecond rows move a lot)
        low, high = max(ours - 0.005, 0.0) / (peer + 0.005), (ours + 0.005) / max(peer - 0.005, 1e-9)
        assert low - 0.005 <= ratio <= high + 0.005, (cells, low, high)
        assert cells[-1].startswith("<= 1")
    sintel = [row for row in memory if row[0] == "368x496"][0]
    assert sintel[1] == "46x62" and float(sintel[2]) == pytest.approx(41.0, abs=0.1)  # 4 levels, float32


def test_unfold_reference_is_a_local_correlation() -> None:
    g = torch.Generator().manual_seed(0)
    f1, f2 = torch.randn(2, 5, 6, 7, generator=g), torch.randn(2, 5, 6, 7, generator=g)
    torch.testing.assert_close(unfold_local_correlation(f1, f2, 2), local_correlation(f1, f2, 2))
