"""Smoke test of the multi-task benchmark (``--quick`` on one tiny case) and its helpers.

No timing is asserted (DESIGN.md §5): only that every table and row is produced, that the printed
numbers are consistent with each other (ratio = unified / singles, GFLOP/s = GFLOP / s), and that
the single-head models the suite builds predict what the unified model predicts.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from structpred.bench import multitask
from structpred.models.multitask import HEAD_KINDS
from tests.bench.markdown import markdown_tables

TINY = multitask.Case("multitask_narrow", 32, 1, 16)


def test_quick_run_prints_every_table_and_row(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(multitask, "QUICK_CASES", (TINY,))
    threads = torch.get_num_threads()
    multitask.main(["--quick", "--threads", "1"])
    assert torch.get_num_threads() == threads  # given back
    out = capsys.readouterr().out
    assert "QUICK" in out and "matmul peak" in out
    ratio, parts, throughput, params = markdown_tables(out)

    assert [cells[0] for cells in ratio[1:]] == [TINY.name]
    unified_ms, singles_ms = float(ratio[1][1]), float(ratio[1][2])
    assert unified_ms > 0 and singles_ms > 0
    assert float(ratio[1][3].strip("*")) == pytest.approx(unified_ms / singles_ms, rel=0.02, abs=0.006)
    assert ratio[1][4].startswith("<= 0.5 ") and ratio[1][4].split()[-1] in ("met", "MISSED")

    assert parts[0][1] == "trunk" and [f"{h} head" for h in HEAD_KINDS] == parts[0][2:6]
    values = [float(v) for v in parts[1][1:]]
    assert len(values) == 2 * len(HEAD_KINDS) + 4 and all(v > 0 for v in values)
    assert values[5] == pytest.approx(sum(values[:5]), abs=0.3)  # trunk + heads
    assert values[-1] == pytest.approx(sum(values[7:11]), abs=0.3)  # sum of singles

    gflop, gflops, _, singles_gflop, singles_gflops = (float(v) for v in throughput[1][1:6])
    assert 0 < gflop < singles_gflop  # the trunk is counted once, not four times
    for g, per_s, ms in ((gflop, gflops, unified_ms), (singles_gflop, singles_gflops, singles_ms)):
        rounding = 0.0005 / ms * 1e3 + 0.05  # GFLOP printed to 3 decimals, GFLOP/s to 1
        assert abs(per_s - g / ms * 1e3) <= rounding + 0.02 * per_s

    assert [cells[0] for cells in params[1:]] == ["multitask_narrow"]
    unified_params, singles_params = (int(v.replace(",", "")) for v in params[1][1:3])
    assert 0 < unified_params < singles_params


def test_single_models_carry_the_unified_weights() -> None:
    unified, singles = multitask.build_models(TINY)
    assert set(singles) == set(HEAD_KINDS)
    images = multitask.shapes_batch(2, 16)
    with torch.no_grad():
        predictions = unified(images)[0]
        features = multitask.trunk(unified, images)
        for head, single in singles.items():
            assert list(single.heads) == [head]
            assert multitask.max_difference(predictions[head], single(images)[0][head]) == 0.0
            on_features = unified.heads[head](features, None, True)[0]
            assert multitask.max_difference(predictions[head], on_features) == 0.0


def test_max_difference() -> None:
    a = {"boxes": [torch.zeros(2, 4)], "depth": torch.ones(1, 1, 2, 2)}
    b = {"boxes": [torch.full((2, 4), 0.5)], "depth": torch.ones(1, 1, 2, 2)}
    assert multitask.max_difference(a, b) == 0.5
    with pytest.raises(RuntimeError, match="shapes"):
        multitask.max_difference(torch.zeros(2), torch.zeros(3), "x")
    with pytest.raises(RuntimeError, match="another structure"):
        multitask.max_difference({"a": torch.zeros(1)}, {"b": torch.zeros(1)})


def test_a_trained_checkpoint_is_timed_and_named(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from structpred.engine import checkpoint as ckpt
    from structpred.models import get_model

    kwargs = {"input_size": 32, "width": 4, "fpn_channels": 8, "dense_channels": 8, "norm_groups": 4,
              "weighting": "uncertainty", "detection": {"score_thresh": 0.01}}  # fmt: skip
    torch.manual_seed(3)
    trained = get_model("multitask_narrow", **kwargs)
    with torch.no_grad():  # weights no random seed gives: the suite must time these
        for p in trained.parameters():
            p.add_(0.01)
    config = {"model_name": "multitask_narrow", "model_kwargs": kwargs, "image_size": 32}
    ckpt.save_checkpoint(tmp_path, 1, trained, None, {"config": config})

    cases = multitask.checkpoint_cases(str(tmp_path))
    assert [(c.input_size, c.batch) for c in cases] == [(32, 8), (32, 1), (256, 8)]
    unified, singles = multitask.build_models(cases[1])
    state = trained.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in unified.state_dict().items())
    images = multitask.shapes_batch(2, 16)
    with torch.no_grad():
        predictions = unified(images)[0]
        for head, single in singles.items():
            assert multitask.max_difference(predictions[head], single(images)[0][head]) == 0.0

    multitask.main(["--quick", "--threads", "1", "--checkpoint", str(tmp_path)])
    out = capsys.readouterr().out
    assert out.startswith(f"weights: trained checkpoint {tmp_path}; load average before / after: ")
    ratio = markdown_tables(out)[0]
    assert [cells[0] for cells in ratio[1:]] == ["multitask_narrow (trained), 32 px input, batch 2"]
    assert float(ratio[1][5]) >= 0  # detections kept per image


def test_random_weights_are_named() -> None:
    assert "(trained)" not in TINY.name
    trained = multitask.Case("multitask_narrow", 32, 1, checkpoint="run")
    assert trained.name == "multitask_narrow (trained), 32 px input, batch 1"
