"""Smoke test of ``structpred bench segmentation --quick``: the CRF and Mask R-CNN tables both print.

No timing is asserted (DESIGN.md §5): only that the rows are there and the numbers positive.
"""

from __future__ import annotations

import pytest
import torch

from structpred.cli import main as cli_main  # noqa: E402


@pytest.mark.slow
def test_quick_run_prints_both_tables(capsys: pytest.CaptureFixture[str]) -> None:
    threads = torch.get_num_threads()
    assert cli_main(["bench", "segmentation", "--quick", "--repeats", "1", "--threads", "1"]) == 0
    assert torch.get_num_threads() == threads
    out = capsys.readouterr().out
    rows = [
        line.strip("|").split("|") for line in out.splitlines() if line.startswith("| ") and "---" not in line
    ]
    names = [r[0].strip() for r in rows if not r[0].strip().startswith("op")]
    assert any(n.startswith("dense_crf 24x32 K21") and "agreement 1.0000" in n for n in names), names
    assert any(n.startswith("maskrcnn_resnet50_fpn inference") for n in names), names
    for r in rows:
        if r[0].strip() != "op":
            assert float(r[1]) > 0 and float(r[2]) > 0
