"""``structpred train`` / ``eval`` / ``info`` as a user runs them: resume that cannot lie, the best
checkpoint, the per-epoch line, weights in, ``info``.

One small real run (the digits CNN on scikit-learn's real digits at 8 x 8, 2 epochs of 4 steps)
is trained once per module; each test works on its own copy of it.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from structpred.cli import main
from structpred.engine import checkpoint as ckpt
from structpred.models import get_model

pytestmark = pytest.mark.slow  # each test trains or resumes a (tiny) real run: a few seconds each

MODEL_ARGS = ["--model-arg", "width=8", "--model-arg", "input_size=8"]
TRAIN = [
    "train", "--model", "digits_cnn", "--data", "digits", "--data-arg", "size=8", *MODEL_ARGS,
    "--epochs", "2", "--batch-size", "256", "--lr", "0.01", "--optimizer", "adamw", "--keep-last", "5",
    "--no-progress",
]  # fmt: skip
EPOCH_LINE = re.compile(
    r"^epoch (\d+)/(\d+)  train loss [\d.e+-]+  val loss [\d.e+-]+  val accuracy [\d.]+(  \(best\))?  \d+ s$"
)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A finished 2-epoch run and what ``train`` printed."""
    # capsys is function-scoped: the module's run is captured by hand.
    run = tmp_path_factory.mktemp("runs") / "base"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([*TRAIN, "--out", str(run)]) == 0
    return run, out.getvalue()


def _copy(base: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(base, run)
    return run


def _interrupted(base: Path, tmp_path: Path) -> Path:
    """A copy of the run as if killed after its first epoch (the newest checkpoint gone)."""
    run = _copy(base, tmp_path)
    newest = ckpt.latest_checkpoint(run)
    assert newest is not None
    newest.with_suffix(".safetensors").unlink()
    newest.unlink()
    return run


def _meta(run: Path) -> dict:
    newest = ckpt.latest_checkpoint(run)
    assert newest is not None
    return json.loads(newest.read_text())


def _row(lines: list[str], name: str) -> float:
    (value,) = [float(line.split()[1]) for line in lines if line.split()[:1] == [name]]
    return value


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return ckpt.model_state(ckpt.load_checkpoint(run)[0])


def test_per_epoch_line_final_table_and_best(base_run: tuple[Path, str]) -> None:
    run, out = base_run
    lines = out.splitlines()
    epochs = [m for m in map(EPOCH_LINE.match, lines) if m]
    assert [(m.group(1), m.group(2)) for m in epochs] == [("1", "2"), ("2", "2")], out
    assert epochs[0].group(3) == "  (best)"  # the first validation is the best so far
    assert "val split, top-1 accuracy" in lines  # the table's header names split and kind
    best = json.loads((run / "best.json").read_text())
    assert best["metric"] == "accuracy" and best["higher_is_better"] is True
    assert (run / best["checkpoint"]).is_file()
    assert f"best: epoch {best['epoch']}, val accuracy" in out


def test_resume_with_no_other_flag_ends_where_the_run_would_have(
    base_run: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, _ = base_run
    run = _interrupted(base, tmp_path)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert [m.group(1) for m in map(EPOCH_LINE.match, out.splitlines()) if m] == ["2"]  # epoch 2 only
    resumed, straight = _weights(run), _weights(base)
    assert resumed.keys() == straight.keys()
    for name in straight:  # the config (model args, data args, optimizer, seed...) came back whole
        assert torch.equal(resumed[name], straight[name]), name
    assert _meta(run)["config"]["overrides"] == []


def test_changed_flags_are_refused_with_the_differences(
    base_run: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, _ = base_run
    run = _interrupted(base, tmp_path)
    before = sorted(p.name for p in run.iterdir())
    argv = ["train", "--resume", str(run), "--lr", "0.02", "--model-arg", "width=16", "--data-arg", "size=16"]
    assert main([*argv, "--optimizer", "sgd", "--batch-size", "256"]) == 2  # same batch size: fine
    err = capsys.readouterr().err
    assert "add --override" in err
    assert "--lr: checkpoint 0.01, command line 0.02" in err
    assert "--model-arg width: checkpoint 8, command line 16" in err
    assert "--data-arg size: checkpoint 8, command line 16" in err
    assert "--optimizer: checkpoint 'adamw', command line 'sgd'" in err
    assert "--batch-size" not in err
    assert sorted(p.name for p in run.iterdir()) == before  # nothing trained, nothing written
    # Flags equal to the recorded ones, and harmless ones, pass.
    assert (
        main(["train", "--resume", str(run), "--model", "digits_cnn", "--lr", "0.01", "--workers", "0"]) == 0
    )


def test_override_is_applied_and_recorded_and_a_new_optimizer_starts_fresh(
    base_run: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, _ = base_run
    run = _copy(base, tmp_path)
    argv = [
        "train",
        "--resume",
        str(run),
        "--epochs",
        "3",
        "--optimizer",
        "sgd",
        "--override",
        "--no-progress",
    ]
    assert main(argv) == 0  # no KeyError from AdamW's state in SGD
    out = capsys.readouterr().out
    assert "optimizer changed (adamw -> sgd): fresh optimizer state" in out
    assert [m.group(1) for m in map(EPOCH_LINE.match, out.splitlines()) if m] == ["3"]
    meta = _meta(run)
    assert meta["config"]["optimizer"] == "sgd" and meta["config"]["epochs"] == 3
    (record,) = meta["config"]["overrides"]
    assert record["changes"] == {"epochs": [2, 3], "optimizer": ["adamw", "sgd"]}
    assert record["epoch"] == 1 and record["step"] == _meta(base)["step"]
    assert main(["info", str(run)]) == 0
    assert "override" in capsys.readouterr().out


def test_old_resume_flag_with_out_still_works(
    base_run: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, _ = base_run
    run = _interrupted(base, tmp_path)
    assert main([*TRAIN, "--out", str(run), "--resume"]) == 0  # the original flags, unchanged
    assert torch.equal(_weights(run)["head.weight"], _weights(base)["head.weight"])
    assert main(["train", "--resume", str(run), "--out", str(tmp_path / "other")]) == 2
    assert "name two runs" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "empty")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_eval_last_or_best_and_info(base_run: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    run, _ = base_run
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run)]) == 0
    last = capsys.readouterr().out.splitlines()
    assert last[0].startswith(str(ckpt.latest_checkpoint(run))) and last[1] == "val split, top-1 accuracy"
    # Another input size: the classifier resamples to 16 x 16 itself; other figures, same weights.
    assert main(["eval", "--checkpoint", str(run), "--image-size", "16"]) == 0
    resized = capsys.readouterr().out.splitlines()
    assert _row(resized, "loss") != _row(last, "loss")
    assert main(["eval", "--checkpoint", str(run), "--best", "--split", "test"]) == 0
    best = capsys.readouterr().out.splitlines()
    assert best[0].startswith(str(ckpt.best_checkpoint(run))) and best[1] == "test split, top-1 accuracy"

    assert main(["info", str(run)]) == 0
    info = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    params = sum(p.numel() for p in get_model("digits_cnn", width=8, input_size=8).parameters())
    assert info["model"] == "digits_cnn  task classification"
    assert info["parameters"] == f"{params:,}"
    assert "width=8" in info["builder"] and "size=8" in info["data"]
    assert info["progress"].startswith("epochs 2 of 2 done")
    assert info["best"].startswith("val accuracy") and "adamw" in info["optimizer"]
    assert ".safetensors" in info["files"] and "run directory" in info["files"]
    newest = ckpt.latest_checkpoint(run)
    assert main(["info", str(newest), "--config"]) == 0  # a checkpoint file; the config as JSON
    text = capsys.readouterr().out
    config = json.loads(text[text.index("\n{") + 1 :])
    assert config["model_name"] == "digits_cnn" and config["model_args"] == {"width": 8, "input_size": 8}
    assert main(["info", "/no/such/run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: /no/such/run")


def test_weights_in_freeze_and_image_size_are_recorded_and_resume_does_not_reload(
    base_run: tuple[Path, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base, _ = base_run
    run = tmp_path / "tuned"
    argv = [
        "train", "--model", "digits_cnn", "--data", "digits", "--data-arg", "size=8",
        "--model-arg", "width=8", "--epochs", "2", "--batch-size", "256", "--no-progress",
        "--out", str(run), "--keep-last", "5",
        "--weights", str(base), "--freeze", "features", "--num-classes", "12", "--image-size", "16",
    ]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "loaded 6 tensors from" in out and "(ours: digits_cnn)" in out  # the WeightsReport
    assert "re-initialised (class count differs): head.weight [12, 32] (file: [10, 32])" in out
    assert "--freeze features: frozen features;" in out and "parameters train" in out
    config = _meta(run)["config"]
    assert config["weights"] == str(base) and config["freeze"] == "features"
    assert config["num_classes"] == 12 and config["model_kwargs"]["num_classes"] == 12
    assert config["image_size"] == 16 and config["model_kwargs"]["input_size"] == 16
    tuned, started = _weights(run), _weights(base)
    assert torch.equal(tuned["features.0.0.weight"], started["features.0.0.weight"])  # loaded, frozen
    assert tuned["head.weight"].shape[0] == 12

    # Resume: the checkpoint supersedes the weights file (never read again); freeze applies again.
    newest = ckpt.latest_checkpoint(run)
    assert newest is not None
    newest.with_suffix(".safetensors").unlink()
    newest.unlink()

    def no_reload(*args: object) -> None:
        raise AssertionError("resume loaded the weights file again")

    monkeypatch.setattr("structpred.models.weights.load_weights", no_reload)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert torch.equal(_weights(run)["features.0.0.weight"], started["features.0.0.weight"])
    assert main(["train", "--resume", str(run), "--weights", str(tmp_path), "--override"]) == 2
    assert "does not load another weights file" in capsys.readouterr().err


def test_num_classes_below_the_data_and_image_size_on_sequences_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--model", "digits_cnn", "--data", "digits", "--out", str(tmp_path / "r")]
    assert main([*argv, "--num-classes", "5"]) == 2
    assert "--num-classes 5: --data digits needs at least 10" in capsys.readouterr().err
    seq = ["train", "--model", "rnn_vowels", "--data", "japanese-vowels", "--out", str(tmp_path / "s")]
    assert main([*seq, "--image-size", "32"]) == 2
    assert "reads sequences, not images" in capsys.readouterr().err
    assert not (tmp_path / "r").exists() and not (tmp_path / "s").exists()


def test_a_run_logged_to_a_file_writes_a_few_progress_lines(tmp_path: Path) -> None:
    """`structpred train ... > log 2>&1`: 75 steps, at most five progress lines (not one per redraw)."""
    import subprocess
    import sys

    argv = [*TRAIN, "--epochs", "1", "--batch-size", "16", "--out", str(tmp_path / "run")]
    argv.remove("--no-progress")
    log = tmp_path / "log"
    with open(log, "w") as f:
        done = subprocess.run([sys.executable, "-m", "structpred", *argv], stdout=f, stderr=f, timeout=300)
    text = log.read_text()
    assert done.returncode == 0, text
    assert "\r" not in text
    progress = [line for line in text.splitlines() if line.startswith("epoch 1/1: ")]
    assert 2 <= len(progress) <= 5, text  # start, the quarters that took > 2 s, done
    assert progress[0] == "epoch 1/1: start, 75 items" and progress[-1].startswith("epoch 1/1: done 75/75,")
    assert len(text.splitlines()) < 25  # + validation progress, the epoch line, the table
