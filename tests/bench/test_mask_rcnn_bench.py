"""Smoke test of the Mask R-CNN benchmark (``--quick``): it runs and prints its table.

No timing is asserted (DESIGN.md §5): only that the rows are there and the numbers positive.
"""

from __future__ import annotations

import re

import pytest
import torch

from structpred.cli import main as cli_main  # noqa: E402


@pytest.mark.slow
def test_quick_run_prints_the_inference_and_paste_rows(capsys: pytest.CaptureFixture[str]) -> None:
    threads = torch.get_num_threads()
    assert cli_main(["bench", "mask_rcnn", "--quick", "--threads", "1"]) == 0
    assert torch.get_num_threads() == threads  # the benchmark restores torch's thread count
    out = capsys.readouterr().out
    assert "QUICK" in out
    rows = [line.strip("|").split("|") for line in out.splitlines() if line.startswith("| ")][1:]
    names = [r[0].strip() for r in rows]
    assert len(rows) == 2 and names[0].startswith("maskrcnn_resnet50_fpn inference, 1 image 96x128")
    assert names[1].startswith("paste_masks_in_image, 10 masks")
    assert int(re.search(r"(\d+) detections", names[0]).group(1)) == 10  # type: ignore[union-attr]
    for r in rows:
        ours, peer, ratio = (float(r[i]) for i in (1, 2, 3))
        assert ours > 0 and peer > 0 and ratio > 0 and r[4].strip().startswith("<= 1")
