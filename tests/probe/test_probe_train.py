"""Probe (issue 15): bad ``train`` flags and corrupted or partial checkpoints and run folders
given to ``train --resume``, ``eval --checkpoint`` and ``train --weights``; one distinct hostile
input a case.

Every CLI case runs ``structpred.cli.main`` in-process and asserts the exact outcome: exit code
!= 0, exactly one ``error:`` line on stderr naming the file (or flag) and the field, no
traceback. Bad flags are refused before any data is read (the dataset builder fails the test
if called) and before a run folder is made. The few "correct handling" cases assert the
result: an incomplete newest checkpoint is skipped for the previous complete one.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from structpred.cli import main
from structpred.data import limits
from structpred.engine import TrainConfig
from structpred.engine import checkpoint as ckpt
from structpred.models import get_model

NAME = "ckpt-00000002"
ARGS = {"width": 4, "input_size": 16}


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI; assert a failure with one ``error:`` line and no traceback; return that line."""
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse
        code = stop.code  # type: ignore[assignment]
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert code not in (0, None), err
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder as ``structpred train`` leaves it: checkpoints 1 and 2 (the best)."""
    run = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    model = get_model("digits_cnn", **ARGS)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    config = TrainConfig(
        epochs=3, batch_size=16, lr=0.05, progress=False, model_name="digits_cnn", data="digits",
        model_kwargs=dict(ARGS), model_args=dict(ARGS), data_kwargs={"size": 16},
    )  # fmt: skip
    for step in (1, 2):
        best = {"metric": "accuracy", "value": 0.1 * step, "checkpoint": ckpt.checkpoint_name(step)}
        state = {"epoch": step - 1, "step_in_epoch": 1, "config": dataclasses.asdict(config), "best": best}
        ckpt.save_checkpoint(run, step, model, opt, state, keep_last=2, best=True)
    return run


@pytest.fixture
def run(pristine: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(pristine, copy)
    return copy


@pytest.fixture(autouse=True)
def no_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail a case that reads data (``allow_data`` cases re-allow it)."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("data was read before the bad input was refused")

    monkeypatch.setattr("structpred.engine.run.build_dataset", refuse)


# ----------------------------------------------------------------------------- flags
_BASE = ["train", "--model", "digits_cnn", "--data", "digits", "--no-progress"]
_FLAGS: list[tuple[str, list[str], str]] = [  # (case, flags, words of the error line)
    ("lr-inf", ["--lr", "inf"], "--lr inf: must be a finite positive number"),
    ("lr-minus-inf", ["--lr=-inf"], "--lr -inf: must be a finite positive"),
    ("lr-nan", ["--lr", "nan"], "--lr nan: must be a finite positive"),
    ("lr-overflow", ["--lr", "1e999"], "--lr inf: must be a finite positive"),
    ("lr-negative", ["--lr", "-0.1"], "--lr -0.1: must be a finite positive"),
    ("lr-zero", ["--lr", "0"], "--lr 0.0: must be a finite positive"),
    ("lr-text", ["--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
    (
        "clip-negative",
        ["--clip-grad", "-1"],
        "--clip-grad -1.0: must be a finite positive number (> 0) or None",
    ),
    ("clip-nan", ["--clip-grad", "nan"], "--clip-grad nan: must be a finite positive"),
    ("clip-zero", ["--clip-grad", "0"], "--clip-grad 0.0: must be a finite positive"),
    ("clip-inf", ["--clip-grad", "inf"], "--clip-grad inf: must be a finite positive"),
    ("epochs-zero", ["--epochs", "0"], "--epochs 0: must be a positive int"),
    ("epochs-negative", ["--epochs", "-3"], "--epochs -3: must be a positive int"),
    ("epochs-float", ["--epochs", "1.5"], "argument --epochs: invalid int value: '1.5'"),
    ("batch-zero", ["--batch-size", "0"], "--batch-size 0: must be a positive int"),
    ("batch-negative", ["--batch-size", "-8"], "--batch-size -8: must be a positive int"),
    ("workers-negative", ["--workers", "-1"], "--workers -1: must be an int >= 0"),
    ("warmup-negative", ["--warmup", "-5"], "--warmup -5: must be an int >= 0"),
    ("seed-negative", ["--seed", "-1"], "--seed -1: must be an int in [0, 2**32 - 1]"),
    ("seed-too-big", ["--seed", str(2**32)], "--seed 4294967296: must be an int in [0, 2**32 - 1]"),
    ("checkpoint-every-negative", ["--checkpoint-every", "-1"], "--checkpoint-every -1: must be an int >= 0"),
    ("eval-every-zero", ["--eval-every", "0"], "--eval-every 0: must be an int >= 1"),
    ("keep-last-negative", ["--keep-last", "-2"], "--keep-last -2: must be an int >= 0"),
    ("image-size-zero", ["--image-size", "0"], "--image-size 0: must be an int >= 16"),
    ("image-size-tiny", ["--image-size", "8"], "--image-size 8: must be an int >= 16"),
    ("num-classes-zero", ["--num-classes", "0"], "--num-classes 0: must be a positive int"),
    ("optimizer-unknown", ["--optimizer", "rmsprop"], "argument --optimizer: invalid choice: 'rmsprop'"),
]


@pytest.mark.parametrize(("flags", "words"), [c[1:] for c in _FLAGS], ids=[c[0] for c in _FLAGS])
def test_bad_flag_is_refused_up_front(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], words: str
) -> None:
    out = tmp_path / "out"
    line = _cli([*_BASE, "--out", str(out), *flags], capsys)
    assert words in line, line
    assert not out.exists()  # no run folder made


def test_bad_flag_with_resume_is_refused_before_the_checkpoint_is_read(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _cli(["train", "--resume", str(run), "--override", "--lr", "nan"], capsys)
    assert "--lr nan: must be a finite positive number" in line


def test_bad_setting_from_python_is_refused() -> None:
    with pytest.raises(
        ValueError, match=r"^clip_grad_norm must be a finite positive number \(> 0\) or None, got -1$"
    ):
        TrainConfig(clip_grad_norm=-1)


# ----------------------------------------------------------------------------- run folders
def _json(run: Path, name: str = NAME) -> dict[str, Any]:
    return dict(json.loads((run / f"{name}.json").read_text()))


def _edit(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    """A corruption that edits the newest checkpoint's JSON (and drops the older checkpoint)."""

    def apply(run: Path) -> None:
        meta = _json(run)
        change(meta)
        (run / f"{NAME}.json").write_text(json.dumps(meta))
        _only_newest(run)

    return apply


def _only_newest(run: Path) -> None:
    for path in run.glob("ckpt-00000001.*"):
        path.unlink()


def _rewrite_weights(change: Callable[[dict[str, torch.Tensor]], None]) -> Callable[[Path], None]:
    """A corruption of the tensors that keeps the file's recorded size and checksum right."""

    def apply(run: Path) -> None:
        import hashlib

        weights = run / f"{NAME}.safetensors"
        tensors = load_file(str(weights))
        change(tensors)
        save_file(tensors, str(weights))
        blob = weights.read_bytes()
        _edit(lambda m: m.update(weights_bytes=len(blob), weights_sha256=hashlib.sha256(blob).hexdigest()))(
            run
        )

    return apply


def _set_config(key: str, value: Any) -> Callable[[Path], None]:
    return _edit(lambda m: m["config"].__setitem__(key, value))


def _nested(run: Path) -> None:
    (run / f"{NAME}.json").write_text('{"config": ' + "[" * 100_000 + "]" * 100_000 + "}")
    _only_newest(run)


def _bit_flip(run: Path) -> None:
    weights = run / f"{NAME}.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-3] ^= 0x10
    weights.write_bytes(bytes(blob))


def _write(name: str, data: bytes, drop: tuple[str, ...] = ()) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        for old in drop:
            for path in run.glob(old):
                path.unlink()
        (run / name).write_bytes(data)
        _only_newest(run)

    return apply


def _remove(*patterns: str) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        for pattern in patterns:
            for path in run.glob(pattern):
                path.unlink()

    return apply


def _then(*changes: Callable[[Path], Any]) -> Callable[[Path], None]:
    """The corruptions in order."""

    def apply(run: Path) -> None:
        for change in changes:
            change(run)

    return apply


def _no_best(run: Path) -> None:
    _edit(lambda m: m.update(best=None))(run)


def _weights_flag(run: Path) -> list[str]:
    new = str(run.parent / "new")
    return [
        "train",
        "--model",
        "digits_cnn",
        "--data",
        "digits",
        "--out",
        new,
        "--weights",
        str(run / f"{NAME}.json"),
    ]


_FLIP = _then(_only_newest, _bit_flip)
NONE = "no checkpoint (ckpt-*.json) in this directory"
_RESUME: list[tuple[str, Callable[[Path], None], str]] = [  # (case, corruption, words)
    ("best-json-only", _remove("ckpt-*"), NONE),
    ("only-a-temporary", _remove("ckpt-*", "best.json"), NONE),  # + the .tmp written below
    ("orphan-weights", _remove("ckpt-*.json"), NONE),
    ("json-truncated", _write(f"{NAME}.json", b'{"step": 2, "epoch'), NONE),
    ("json-a-list", _write(f"{NAME}.json", b"[1, 2]"), NONE),
    ("json-not-utf8", _write(f"{NAME}.json", b'{"step": "\xff\xfe"}'), NONE),
    ("json-nested-100k", _nested, NONE),
    ("json-empty", _write(f"{NAME}.json", b""), NONE),
    ("json-5000-digit-int", _write(f"{NAME}.json", b'{"step": ' + b"9" * 5000 + b"}"), NONE),  # (fuzz)
    (
        "weights-truncated",
        _then(_only_newest, lambda r: (r / f"{NAME}.safetensors").write_bytes(b"\0" * 64)),
        NONE,
    ),
    ("weights-missing", _remove("ckpt-*.safetensors"), NONE),
    ("weights-traversal", _edit(lambda m: m.update(weights="../" + m["weights"])), NONE),
    ("weights-absolute", _edit(lambda m: m.update(weights="/etc/passwd")), NONE),
    ("weights-bit-flip", _FLIP, f"{NAME}.safetensors: SHA-256 differs"),
    (
        "sha-not-hex",
        _edit(lambda m: m.update(weights_sha256="zz" * 32)),
        "weights_sha256 must be 64 lower-case hex",
    ),
    ("step-text", _edit(lambda m: m.update(step="two")), "step must be an int >= 0, got 'two'"),
    ("step-negative", _edit(lambda m: m.update(step=-1)), "step must be an int >= 0, got -1"),
    ("step-nan", _edit(lambda m: m.update(step=float("nan"))), "step must be an int >= 0, got nan"),
    ("step-bool", _edit(lambda m: m.update(step=True)), "step must be an int >= 0, got True"),
    ("step-missing", _edit(lambda m: m.pop("step")), "step must be an int >= 0, got None"),
    ("epoch-missing", _edit(lambda m: m.pop("epoch")), "not a training checkpoint (no epoch); cannot resume"),
    (
        "step-in-epoch-negative",
        _edit(lambda m: m.update(step_in_epoch=-4)),
        "step_in_epoch must be an int >= 0",
    ),
    ("config-missing", _edit(lambda m: m.pop("config")), "no 'config' entry"),
    ("config-a-list", _edit(lambda m: m.update(config=[1])), "config must be a JSON object, got list"),
    (
        "config-lr-negative",
        _set_config("lr", -1),
        "config.lr: must be a finite positive number (> 0), got -1",
    ),
    (
        "config-lr-text",
        _set_config("lr", "0.1"),
        "config.lr: must be a finite positive number (> 0), got '0.1'",
    ),
    (  # (fuzz) a float setting holding an int beyond float's range: OverflowError before
        "config-lr-400-digits",
        _set_config("lr", 10**400),
        "config.lr: must be a finite positive number (> 0), got 1000000",
    ),
    ("config-epochs-zero", _set_config("epochs", 0), "config.epochs: must be a positive int (>= 1), got 0"),
    ("config-batch-text", _set_config("batch_size", "16"), "config.batch_size: must be a positive int"),
    (
        "config-clip-nan",
        _set_config("clip_grad_norm", float("nan")),
        "config.clip_grad_norm: must be a finite",
    ),
    ("config-optimizer", _set_config("optimizer", "rmsprop"), "config.optimizer: must be 'sgd' or 'adamw'"),
    ("config-seed-negative", _set_config("seed", -5), "config.seed: must be an int in [0, 2**32 - 1]"),
    ("config-model-kwargs-list", _set_config("model_kwargs", [4]), "config.model_kwargs: must be a mapping"),
    ("config-no-model", _set_config("model_name", ""), "records no model name or data spec; cannot resume"),
    ("config-unknown-model", _set_config("model_name", "no_such_net"), "no_such_net"),
    ("rng-missing", _edit(lambda m: m.pop("rng")), "no 'rng' entry"),
    (
        "rng-numpy-garbage",
        _edit(lambda m: m["rng"].update(numpy=["MT19937", [1, 2], 0, 0, 0.0])),
        "rng: not a numpy",
    ),
    (
        "rng-python-short",
        _edit(lambda m: m["rng"].update(python=[3, [0] * 10])),
        "rng: not a numpy / Python RNG",
    ),
    (
        "optimizer-groups-text",
        _edit(lambda m: m["optimizer"].update(param_groups="all")),
        "optimizer.param_groups",
    ),
    ("best-a-number", _edit(lambda m: m.update(best=5)), "best must be a JSON object or null, got int"),
    ("metrics-a-list", _edit(lambda m: m.update(metrics=[0.5])), "metrics must be a JSON object, got list"),
    (
        "rng-torch-float",
        _rewrite_weights(lambda t: t.update({"rng/torch": t["rng/torch"].float()})),
        f"{NAME}.safetensors: rng/torch must be a 1-d uint8 tensor",
    ),
    (
        "rng-torch-short",
        _rewrite_weights(lambda t: t.update({"rng/torch": t["rng/torch"][:10].clone()})),
        f"{NAME}.safetensors: rng/torch is not a torch RNG state",
    ),
]


@pytest.mark.parametrize(("corrupt", "words"), [c[1:] for c in _RESUME], ids=[c[0] for c in _RESUME])
def test_corrupt_run_folder_given_to_resume(
    run: Path, capsys: pytest.CaptureFixture[str], corrupt: Callable[[Path], None], words: str
) -> None:
    corrupt(run)
    (run / f".{NAME}.json.tmp-99").write_text("{")  # a killed save's leftover, always there
    line = _cli(["train", "--resume", str(run)], capsys)
    assert words in line and str(run) in line, line
    assert not (run / f".{NAME}.json.tmp-99").exists()  # cleaned on resume


def test_json_over_the_size_limit(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with limits.override(max_text_file_bytes=1000):
        line = _cli(["train", "--resume", str(run)], capsys)
    assert f"{NAME}.json" in line and "max_text_file_bytes" in line, line


def test_resume_into_a_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _cli(["train", "--resume", str(tmp_path / "nope")], capsys)
    assert f"--resume {tmp_path / 'nope'}: {NONE}" in line


def test_resume_given_a_file(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _cli(["train", "--resume", str(run / f"{NAME}.json")], capsys)
    assert f"{NAME}.json: {NONE}" in line


def test_weights_of_another_model_are_refused_naming_the_file(
    run: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.undo()  # this one reads the data: the model is checked against the tensors after
    _rewrite_weights(lambda t: t.update({"model/features.0.0.weight": torch.zeros(1, 1, 1, 1)}))(run)
    line = _cli(["train", "--resume", str(run)], capsys)
    assert f"{NAME}.safetensors: does not fit" in line and "features.0.0.weight" in line, line


# ----------------------------------------------------------------------------- correct handling
@pytest.mark.parametrize(
    "corrupt",
    [
        lambda r: (r / f"{NAME}.safetensors").unlink(),  # a kill before the weights' rename
        lambda r: (r / f"{NAME}.json").unlink(),  # a kill between the two renames
        lambda r: (r / f"{NAME}.safetensors").write_bytes(b"\0" * 10),  # shorter than recorded
    ],
    ids=["weights-not-renamed", "json-not-renamed", "weights-short"],
)
def test_an_incomplete_newest_checkpoint_gives_way_to_the_previous(
    run: Path, corrupt: Callable[[Path], None]
) -> None:
    corrupt(run)
    assert ckpt.latest_checkpoint(run) == run / "ckpt-00000001.json"
    assert ckpt.best_checkpoint(run) == run / "ckpt-00000001.json"  # best.json's pick is gone
    tensors, meta = ckpt.load_checkpoint(run)
    assert meta["step"] == 1 and ckpt.model_state(tensors)


# ----------------------------------------------------------------------------- eval, --weights
_OTHER: list[tuple[str, Callable[[Path], None], Callable[[Path], list[str]], str]] = [
    # (case, corruption, argv, words of the error line)
    (
        "eval-bit-flip",
        _FLIP,
        lambda r: ["eval", "--checkpoint", str(r)],
        f"{NAME}.safetensors: SHA-256 differs",
    ),
    (
        "eval-best-garbage",
        _then(_no_best, lambda r: (r / "best.json").write_text("[[")),
        lambda r: ["eval", "--checkpoint", str(r), "--best"],
        "no best checkpoint (best.json) in this directory",
    ),
    (
        "eval-best-traversal",
        _then(_no_best, lambda r: (r / "best.json").write_text('{"checkpoint": "../x.json"}')),
        lambda r: ["eval", "--checkpoint", str(r / "best.json")],
        "best.json: names no existing checkpoint",
    ),
    (
        "eval-weights-without-json",
        _remove("ckpt-*.json"),
        lambda r: ["eval", "--checkpoint", str(r / f"{NAME}.safetensors")],
        f"{NAME}.json: no such checkpoint file",
    ),
    ("weights-bit-flip", _FLIP, _weights_flag, f"{NAME}.safetensors: SHA-256 differs"),
    (
        "weights-traversal",
        _edit(lambda m: m.update(weights="../../x.safetensors")),
        _weights_flag,
        "weights must name a file beside it, got '../../x.safetensors'",
    ),
]


@pytest.mark.parametrize(("corrupt", "argv", "words"), [c[1:] for c in _OTHER], ids=[c[0] for c in _OTHER])
def test_corrupt_checkpoint_given_to_eval_or_weights(
    run: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    corrupt: Callable[[Path], None],
    argv: Callable[[Path], list[str]],
    words: str,
) -> None:
    monkeypatch.undo()  # --weights loads after the data is read
    corrupt(run)
    line = _cli(argv(run), capsys)
    assert words in line, line
    assert not (run.parent / "new").exists()
