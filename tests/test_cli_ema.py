"""``structpred train --ema DECAY[,tau=N]``: a bad value is one line naming the flag before any data
is read; the setting is recorded canonical and compared on resume; ``eval`` says which weights
it uses and ``--raw-weights`` chooses the raw ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from structpred.cli import main
from structpred.engine import checkpoint as ckpt

TRAIN = [
    "train", "--model", "digits_cnn", "--data", "digits", "--data-arg", "size=8", "--model-arg", "width=4",
    "--model-arg", "input_size=8", "--epochs", "1", "--batch-size", "400", "--lr", "0.05", "--no-progress",
]  # fmt: skip


@pytest.mark.parametrize(
    ("value", "line"),
    [
        ("1.5", "error: --ema 1.5: the decay must be in (0, 1), got 1.5"),
        ("0.99,tau=-1", "error: --ema 0.99,tau=-1: tau must be a finite number of steps >= 0, got -1"),
        ("0.99,steps=3", "error: --ema 0.99,steps=3: unknown part 'steps=3' (only tau=N follows the decay)"),
        ("slow", "error: --ema slow: the decay 'slow' is not a number (e.g. 0.999)"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_flag(
    value: str, line: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*TRAIN, "--ema", value, "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.strip() == line
    assert not (tmp_path / "run").exists()  # refused before any data is read


def test_recorded_compared_on_resume_and_eval_says_which_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert main([*TRAIN, "--ema", "0.9,tau=5", "--out", str(run)]) == 0
    meta = json.loads(ckpt.latest_checkpoint(run).read_text())  # type: ignore[union-attr]
    assert meta["config"]["ema"] == "0.9,tau=5" and meta["ema"]["updates"] == 3
    capsys.readouterr()

    assert main(["eval", "--checkpoint", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "weights: the EMA (decay 0.9, tau 5.0, 3 updates); --raw-weights for the raw ones" in out
    assert main(["eval", "--checkpoint", str(run), "--no-progress", "--raw-weights"]) == 0
    out = capsys.readouterr().out
    assert "weights: the raw ones (--raw-weights; the checkpoint also holds their EMA" in out

    # another spelling of the same setting is no change; another value is refused, naming the flag
    assert main(["train", "--resume", str(run), "--ema", "0.90,tau=5.0", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--ema", "0.99", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--ema: checkpoint '0.9,tau=5', command line '0.99,tau=2000'" in err and "--override" in err


def test_export_and_report_take_the_average_unless_raw_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    from structpred.engine.export import load_for_export
    from structpred.engine.run import load_model

    run = tmp_path / "run"
    assert main([*TRAIN, "--ema", "0.9,tau=5", "--out", str(run)]) == 0
    ema = load_for_export(run, None, None)[1].state_dict()
    raw = load_for_export(run, None, None, raw=True)[1].state_dict()
    assert all(torch.equal(v, load_model(run)[0].state_dict()[k]) for k, v in ema.items())
    assert all(torch.equal(v, load_model(run, raw=True)[0].state_dict()[k]) for k, v in raw.items())
    assert any(not torch.equal(ema[k], raw[k]) for k in ema)  # two different sets of weights
    capsys.readouterr()
    out = tmp_path / "m.pt2"
    args = ["export", "--checkpoint", str(run), "--format", "torch-export", "--no-check", "--out", str(out)]
    assert main([*args, "--raw-weights"]) == 0
    assert "weights: the raw ones (--raw-weights" in capsys.readouterr().out
    assert main([*args, "--force"]) == 0
    assert "weights: the EMA (decay 0.9" in capsys.readouterr().out
