"""``structpred export``: a checkpoint or an untrained model to ONNX / torch.export, checked
against eager PyTorch; bad input is one ``error:`` line and exit code 2, before any work."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from structpred.cli import main
from structpred.engine import checkpoint as ckpt
from structpred.models import get_model

SMALL = ["--model-arg", "width=4"]  # digits_cnn with 4 channels: the export is the same code path


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run directory with one checkpoint of a small digits_cnn."""
    torch.manual_seed(3)
    model = get_model("digits_cnn", width=4)
    config = {"model_name": "digits_cnn", "model_kwargs": {"width": 4}}
    ckpt.save_checkpoint(tmp_path / "run", 1, model, None, {"config": config})
    return tmp_path / "run"


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


@pytest.mark.slow  # ~10 s (the ONNX translation)
def test_export_checkpoint_to_onnx_prints_parity(run_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "exported" / "digits.onnx"
    assert main(["export", "--checkpoint", str(run_dir), "--format", "onnx", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert out.is_file() and out.stat().st_size > 1000
    assert "digits_cnn (classification)" in text and "opset 18" in text
    assert "input  images [2, 3, 28, 30], dynamic axes: 0=batch, 2=height, 3=width" in text
    diff = float(re.search(r"max abs diff (\S+)", text).group(1))  # type: ignore[union-attr]
    assert diff < 1e-4
    # The checkpoint's weights are the ones exported: onnxruntime agrees with the restored model.
    from structpred.engine.export import onnx_session, run_onnx
    from structpred.engine.run import load_model

    model, _ = load_model(run_dir)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        preds, _ = model(x)
    (logits, _, _) = run_onnx(onnx_session(out), (x,))
    torch.testing.assert_close(logits[0], preds[0]["class_logits"], atol=1e-5, rtol=1e-5)


def test_export_untrained_model_to_torch_export(tmp_path: Path, capsys) -> None:
    out = tmp_path / "rnn.pt2"
    assert main(["export", "--model", "rnn_adding", "--format", "torch-export", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "torch.export.load vs eager" in text and "dynamic axes: 0=batch" in text
    program = torch.export.load(str(out)).module()
    steps = int(re.search(r"input  inputs \[2, (\d+), 2\]", text).group(1))  # type: ignore[union-attr]
    (value,) = program(torch.rand(5, steps, 2))  # another batch than the example
    assert value.shape == (5, 1)


def test_refuses_to_overwrite_without_force(tmp_path: Path, capsys) -> None:
    out = tmp_path / "model.onnx"
    out.write_text("keep me")
    err = _error(capsys, ["export", "--model", "digits_cnn", *SMALL, "--out", str(out)])
    assert "exists; pass --force" in err
    assert out.read_text() == "keep me"


def test_never_writes_over_the_checkpoint(run_dir: Path, capsys) -> None:
    for victim in sorted(run_dir.iterdir()):
        before = victim.read_bytes()
        argv = ["export", "--checkpoint", str(run_dir), "--out", str(victim), "--force"]
        assert "outputs never overwrite inputs" in _error(capsys, argv)
        assert victim.read_bytes() == before


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "no_such_model"], "unknown model 'no_such_model'"),
        (["--checkpoint", "/nonexistent/run"], "no such run directory or file"),
        (
            ["--model", "digits_cnn", "--format", "tflite"],
            "--format 'tflite' is not one of onnx, torch-export",
        ),
    ],
)
def test_bad_input_is_one_line(argv: list[str], message: str, tmp_path: Path, capsys) -> None:
    err = _error(capsys, ["export", *argv, "--out", str(tmp_path / "m.onnx")])
    assert message in err
    assert not (tmp_path / "m.onnx").exists()


def test_model_args_only_with_model(run_dir: Path, tmp_path: Path, capsys) -> None:
    argv = ["export", "--checkpoint", str(run_dir), *SMALL, "--out", str(tmp_path / "m.onnx")]
    assert "--model-arg goes with --model" in _error(capsys, argv)


def test_unwritable_or_folder_out(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    err = _error(capsys, ["export", "--model", "digits_cnn", "--out", str(blocker / "m.onnx")])
    assert "cannot create its folder" in err
    err = _error(capsys, ["export", "--model", "digits_cnn", "--out", str(tmp_path)])
    assert "is a folder" in err


def test_help_tells_it_apart_from_data_export(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # help wraps lines
    assert "export export a model to ONNX" in text and "(datasets: structpred data export)" in text


@pytest.mark.parametrize(
    ("model", "hint"), [("rnn_adding", "please report it"), ("fasterrcnn_narrow_fpn", "tie")]
)
def test_a_failed_check_keeps_the_file_and_exits_1_saying_why(
    model: str, hint: str, tmp_path: Path, capsys, monkeypatch
) -> None:
    import structpred.engine.export as export

    monkeypatch.setattr(export, "check_file", lambda *a, **k: float("inf"))  # as when outputs differ
    monkeypatch.setattr(export, "export_onnx", lambda spec, out: Path(out).write_bytes(b"onnx"))
    out = tmp_path / "m.onnx"
    assert main(["export", "--model", model, "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {out} was written but does not match"), err
    assert hint in err[0] and out.exists()
