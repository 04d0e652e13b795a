"""Smoke test of the RNN benchmark (``--quick``) through the CLI: it runs and prints its rows.

No timing is asserted (DESIGN.md §5): only that every row is there with positive times.
"""

from __future__ import annotations

import re

import pytest
import torch

from structpred.cli import main as cli_main


def test_quick_run_prints_every_row(capsys: pytest.CaptureFixture[str]) -> None:
    threads = torch.get_num_threads()
    try:
        assert cli_main(["bench", "rnn", "--quick", "--repeats", "1", "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| lstm") or line.startswith("| rnn")]
    assert len(rows) == 13  # 3 headline rows + 5 extremes x (fwd+bwd, fwd)
    assert sum("T1000" in r for r in rows) == 2 and sum("H1024" in r for r in rows) == 2
    for row in rows:
        ours, peer, ratio = (float(c) for c in re.split(r"\s*\|\s*", row.strip("| "))[1:4])
        assert ours > 0 and peer > 0
        # the times are printed rounded to 0.01 ms: the ratio lies between the rounded bounds
        low, high = max(ours - 0.005, 0.0) / (peer + 0.005), (ours + 0.005) / max(peer - 0.005, 1e-9)
        assert low * 0.99 - 0.01 <= ratio <= high * 1.01 + 0.01
