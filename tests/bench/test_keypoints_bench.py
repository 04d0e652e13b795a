"""Smoke test of the Keypoint R-CNN benchmark (``--quick``): it runs and prints its table.

No timing is asserted (DESIGN.md §5): only that the row is there and its numbers positive. The
inference case alone (``--only``): the train step's row comes from the same code path.
"""

from __future__ import annotations

import re

import pytest
import torch

from structpred.cli import main as cli_main


@pytest.mark.slow
def test_quick_run_prints_the_inference_row(capsys: pytest.CaptureFixture[str]) -> None:
    threads = torch.get_num_threads()
    assert cli_main(["bench", "keypoints", "--quick", "--threads", "1", "--only", "inference"]) == 0
    assert torch.get_num_threads() == threads  # the benchmark restores torch's thread count
    out = capsys.readouterr().out
    assert "QUICK" in out and "max |keypoint difference|" in out
    rows = [line.strip("|").split("|") for line in out.splitlines() if line.startswith("| ")][1:]
    assert len(rows) == 1
    name = rows[0][0].strip()
    assert name.startswith("keypointrcnn_resnet50_fpn inference, 1 image 96x128")
    assert int(re.search(r"(\d+) detections", name).group(1)) == 10  # type: ignore[union-attr]
    ours, peer, ratio = (float(rows[0][i]) for i in (1, 2, 3))
    assert ours > 0 and peer > 0 and ratio > 0 and rows[0][4].strip().startswith("<= 1")
