"""Smoke test of ``structpred bench yolo --quick``: the rows and the verdict appear, the YOLOs fused.

No timing is asserted (DESIGN.md §5): only that the rows are there and the numbers positive.
"""

from __future__ import annotations

import pytest
import torch

from structpred.bench import yolo
from structpred.cli import main as cli_main


def test_yolos_are_timed_fused_unless_asked_not_to() -> None:
    fused = yolo._build("yolo_lite", {})
    assert fused.is_fused and not fused.training  # type: ignore[union-attr]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    plain = yolo._build("yolo_lite", {}, fuse=False)
    assert not plain.is_fused and any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())  # type: ignore[union-attr]


@pytest.mark.slow
def test_quick_run_prints_rows_and_the_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    threads = torch.get_num_threads()
    models = "yolo_lite,fasterrcnn_narrow_fpn"
    try:
        assert cli_main(["bench", "yolo", "--quick", "--threads", "1", "--cpu-time", "--models", models]) == 0
    finally:
        torch.set_num_threads(threads)  # the suite sets torch's thread count for its run
    out = capsys.readouterr().out
    rows = [line.strip("|").split("|") for line in out.splitlines() if line.startswith("| ")]
    by_model = {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows[1:]}
    assert set(by_model) == {"yolo_lite", "fasterrcnn_narrow_fpn"}
    for cells in by_model.values():
        assert cells[0] == "1" and float(cells[1]) > 0 and float(cells[3]) > 0  # batch, images/s, GFLOP
    assert by_model["fasterrcnn_narrow_fpn"][2] == "1.00"
    assert "fused (YOLO.fuse())" in out and "yolo_lite batch 1:" in out and "clock: CPU time" in out
