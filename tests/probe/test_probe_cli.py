# ruff: noqa: E501  (the case tables read one case per line)
"""The probe (issue 15): bad flags, output folders, devices and data arguments per CLI verb.

Each case runs ``structpred.cli.main`` in-process and asserts: exit code != 0, exactly one line
holding ``error:`` on stderr, no traceback, and the words that name the flag / file / field.
docs/errors.md lists the cases and the exit codes.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from structpred.cli import main
from structpred.data import limits

Argv = Callable[[Path], list[str]]


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``(exit code, the one error line)``; asserts the one-line contract."""
    with limits.override():  # --limit must not leak out of a verb; restore whatever happens
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse: usage line(s) + "structpred VERB: error: ..."
            code = exit_.code  # type: ignore[assignment]
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    assert code not in (0, None), (code, err)
    return int(code), lines[0]


def read_only(tmp: Path) -> Path:
    """A folder this process cannot write in: a mode-555 one, or /sys when running as root
    (root ignores file modes; sysfs refuses new folders to everyone)."""
    if os.geteuid() == 0:
        return Path("/sys")
    folder = tmp / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


def a_file(tmp: Path) -> Path:
    path = tmp / "file.txt"
    path.write_text("x")
    return path


def image(tmp: Path) -> Path:
    path = tmp / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    return path


def voc_missing_image(tmp: Path) -> str:
    root = tmp / "VOC2012"
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "Annotations" / "a.xml").write_text(
        "<annotation><filename>a.jpg</filename><size><width>8</width><height>8</height></size>"
        "<object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax>"
        "</bndbox></object></annotation>"
    )
    (root / "classes.txt").write_text("cat\n")
    return f"voc:{root}"


EXPORT = ["data", "export", "shapes", "--format", "yolo", "--max-images", "1", "--data-arg", "size=16", "--data-arg", "num_images=1"]  # fmt: skip
TRAIN = ["train", "--model", "digits_cnn", "--epochs", "1", "--no-progress"]

# (id, argv builder, exit code, regex the error line matches)
CASES: list[tuple[str, Argv, int, str]] = [
    # ---- devices, every verb that takes --device (checked before the verb runs)
    (
        "train cuda without GPU",
        lambda t: [*TRAIN, "--data", "digits", "--device", "cuda"],
        2,
        r"error: --device cuda: no CUDA GPU here",
    ),
    (
        "train cuda:1",
        lambda t: [*TRAIN, "--data", "digits", "--device", "cuda:1"],
        2,
        r"error: --device cuda:1: no CUDA GPU here",
    ),
    (
        "train device nonsense",
        lambda t: [*TRAIN, "--data", "digits", "--device", "nonsense"],
        2,
        r"error: --device 'nonsense': not a device; use cpu, cuda or cuda:N",
    ),
    (
        "train device empty",
        lambda t: [*TRAIN, "--data", "digits", "--device", ""],
        2,
        r"error: --device '': not a device",
    ),
    (
        "train device cuda:-1",
        lambda t: [*TRAIN, "--data", "digits", "--device", "cuda:-1"],
        2,
        r"error: --device 'cuda:-1': not a device",
    ),
    (
        "train device mps",
        lambda t: [*TRAIN, "--data", "digits", "--device", "mps"],
        2,
        r"error: --device mps: not available here",
    ),
    (
        "eval cuda without GPU",
        lambda t: ["eval", "--checkpoint", str(t), "--device", "cuda"],
        2,
        r"error: --device cuda: no CUDA GPU",
    ),
    (
        "eval device typo",
        lambda t: ["eval", "--checkpoint", str(t), "--device", "cpuu"],
        2,
        r"error: --device 'cpuu': not a device",
    ),
    (
        "predict cuda without GPU",
        lambda t: ["predict", "--checkpoint", str(t), str(t), "--device", "cuda"],
        2,
        r"error: --device cuda: no CUDA GPU",
    ),
    (
        "predict device gpu",
        lambda t: ["predict", "--checkpoint", str(t), str(t), "--device", "gpu"],
        2,
        r"error: --device 'gpu': not a device",
    ),
    # ---- output folders
    (
        "export out read-only",
        lambda t: [*EXPORT, "--out", str(read_only(t) / "x")],
        1,
        r"error: .*/x.*: (Permission denied|Operation not permitted)$",
    ),
    (
        "export out is a file",
        lambda t: [*EXPORT, "--out", str(a_file(t))],
        1,
        r"error: .*file\.txt.*: (File exists|Not a directory)$",
    ),
    (
        "export out under a file",
        lambda t: [*EXPORT, "--out", str(a_file(t) / "sub")],
        1,
        r"error: .*file\.txt/sub.*: Not a directory$",
    ),
    (
        "export out /dev/full",
        lambda t: [*EXPORT, "--out", "/dev/full/x"],
        1,
        r"error: /dev/full/x.*: Not a directory$",
    ),
    (
        "train out is a file",
        lambda t: [*TRAIN, "--data", "digits", "--out", str(a_file(t))],
        1,
        r"error: .*file\.txt: File exists$",
    ),
    (
        "train out read-only",
        lambda t: [*TRAIN, "--data", "digits", "--out", str(read_only(t) / "run")],
        1,
        r"error: .*/run: (Permission denied|Operation not permitted)$",
    ),
    (
        "data unknown spec",
        lambda t: ["data", "export", "foo:bar", "--format", "coco", "--out", str(t / "o")],
        2,
        r"error: unknown dataset 'foo:bar'; known: shapes",
    ),
    (
        "data typo suggests",
        lambda t: ["data", "export", "digitz", "--format", "coco", "--out", str(t / "o")],
        2,
        r"error: unknown dataset 'digitz'; did you mean 'digits'\?",
    ),
    (
        "data layout typo suggests",
        lambda t: ["data", "export", "cooc:x", "--format", "coco", "--out", str(t / "o")],
        2,
        r"did you mean 'coco:x'\?",
    ),
    (
        "data argument on a built-in",
        lambda t: ["data", "export", "digits:big", "--format", "coco", "--out", str(t / "o")],
        2,
        r"error: --data digits takes no ':big'",
    ),
    (
        "data-arg unknown key",
        lambda t: [
            "data",
            "export",
            "digits",
            "--format",
            "coco",
            "--out",
            str(t / "o"),
            "--data-arg",
            "szie=8",
        ],
        2,
        r"error: dataset 'digits' takes no argument 'szie' \(--data-arg szie=\.\.\.\)",
    ),
    (
        "data-arg wrong type",
        lambda t: [
            "data",
            "export",
            "shapes",
            "--format",
            "coco",
            "--out",
            str(t / "o"),
            "--data-arg",
            "num_objects=5",
        ],
        2,
        r"error: dataset 'shapes' cannot take num_objects=5 \(TypeError: object of type 'int' has no len\(\)\); check the --data-arg types",
    ),
    (
        "data-arg no equals",
        lambda t: [*EXPORT, "--out", str(t / "o"), "--data-arg", "size"],
        2,
        r"error: --data-arg expects K=V, got 'size'",
    ),
    (
        "data-arg empty key",
        lambda t: [*EXPORT, "--out", str(t / "o"), "--data-arg", "=3"],
        2,
        r"error: --data-arg expects K=V, got '=3'",
    ),
    (
        "data coco without path",
        lambda t: [*TRAIN, "--data", "coco:", "--out", str(t / "r")],
        2,
        r"error: --data coco:PATH needs a directory",
    ),
    (
        "data yolo missing",
        lambda t: [*TRAIN, "--data", f"yolo:{t}/nope", "--out", str(t / "r")],
        2,
        r"error: yolo:.*nope: no such folder or yaml file",
    ),
    (
        "data voc a file",
        lambda t: [*TRAIN, "--data", f"voc:{a_file(t)}", "--out", str(t / "r")],
        2,
        r"error: voc:.*file\.txt: not a directory",
    ),
    (
        "data masks missing",
        lambda t: [*TRAIN, "--data", f"masks:{t}/nope", "--out", str(t / "r")],
        2,
        r"error: .*nope",
    ),
    (
        "train unknown data",
        lambda t: [*TRAIN, "--data", "foo:bar", "--out", str(t / "r")],
        2,
        r"error: unknown dataset 'foo:bar'",
    ),
    (
        "train data typo",
        lambda t: [*TRAIN, "--data", "digit", "--out", str(t / "r")],
        2,
        r"did you mean 'digits'\?",
    ),
    (
        "train missing image",
        lambda t: [*TRAIN, "--data", voc_missing_image(t), "--out", str(t / "r")],
        2,
        r"error: .*a\.xml: <filename> 'a\.jpg' not found",
    ),
    (
        "train val-fraction 2",
        lambda t: [*TRAIN, "--data", voc_missing_image(t), "--val-fraction", "2", "--out", str(t / "r")],
        2,
        r"--val-fraction must be in \(0, 1\), got 2",
    ),
    (
        "train val-fraction nan",
        lambda t: [*TRAIN, "--data", voc_missing_image(t), "--val-fraction", "nan", "--out", str(t / "r")],
        2,
        r"--val-fraction must be in \(0, 1\), got nan",
    ),
    (
        "train val-fraction builtin",
        lambda t: [*TRAIN, "--data", "digits", "--val-fraction", "0.2", "--out", str(t / "r")],
        2,
        r"--val-fraction is for data on disk",
    ),
    (
        "train val-fraction word",
        lambda t: [*TRAIN, "--data", "digits", "--val-fraction", "half"],
        2,
        r"argument --val-fraction: invalid float value: 'half'",
    ),
    (
        "train split-seed word",
        lambda t: [*TRAIN, "--data", "digits", "--split-seed", "x"],
        2,
        r"argument --split-seed: invalid int value",
    ),
    # ---- --limit on every verb that reads data
    (
        "train limit unknown",
        lambda t: [*TRAIN, "--data", "digits", "--limit", "max_pixel=5"],
        2,
        r"argument --limit: --limit 'max_pixel=5': expected NAME=VALUE",
    ),
    (
        "train limit zero",
        lambda t: [*TRAIN, "--data", "digits", "--limit", "max_pixels=0"],
        2,
        r"argument --limit: --limit max_pixels: expected a positive integer, got '0'",
    ),
    (
        "train limit negative",
        lambda t: [*TRAIN, "--data", "digits", "--limit", "max_pixels=-5"],
        2,
        r"expected a positive integer, got '-5'",
    ),
    (
        "train limit fraction",
        lambda t: [*TRAIN, "--data", "digits", "--limit", "max_pixels=1.5"],
        2,
        r"expected a positive integer, got '1\.5'",
    ),
    (
        "train limit 1e30",
        lambda t: [*TRAIN, "--data", "digits", "--limit", "max_pixels=1e30"],
        2,
        r"expected a positive integer, got '1e30'",
    ),
    (
        "train limit nan",
        lambda t: [*TRAIN, "--data", "digits", "--limit", "max_pixels=nan"],
        2,
        r"expected a positive integer, got 'nan'",
    ),
    (
        "eval limit no value",
        lambda t: ["eval", "--checkpoint", str(t), "--limit", "max_pixels"],
        2,
        r"argument --limit: .*expected NAME=VALUE",
    ),
    (
        "eval limit word",
        lambda t: ["eval", "--checkpoint", str(t), "--limit", "max_pixels=many"],
        2,
        r"argument --limit: --limit max_pixels: expected a positive integer",
    ),
    (
        "predict limit empty",
        lambda t: ["predict", "--checkpoint", str(t), str(t), "--limit", ""],
        2,
        r"argument --limit: .*expected NAME=VALUE",
    ),
    (
        "data export limit word",
        lambda t: [*EXPORT, "--out", str(t / "o"), "--limit", "lots"],
        2,
        r"argument --limit: expected NAME=N or a number of images, got 'lots'",
    ),
    (
        "data export limit unknown",
        lambda t: [*EXPORT, "--out", str(t / "o"), "--limit", "max_yaml=3"],
        2,
        r"argument --limit: --limit 'max_yaml=3'",
    ),
    (
        "yolo over a --limit",
        lambda t: [
            *TRAIN,
            "--data",
            f"yolo:{_yolo(t)}",
            "--limit",
            "max_yaml_bytes=10",
            "--out",
            str(t / "r"),
        ],
        2,
        r"data\.yaml: size of the yaml file \(bytes\) is \d+, over the limit max_yaml_bytes=10",
    ),
    # ---- bad flags per verb (argparse: exit 2, one "error:" line after the usage)
    (
        "train unknown flag",
        lambda t: [*TRAIN, "--data", "digits", "--epochz", "2"],
        2,
        r"error: unrecognized arguments: --epochz 2",
    ),
    (
        "train epochs word",
        lambda t: [*TRAIN, "--data", "digits", "--epochs", "two"],
        2,
        r"argument --epochs: invalid int value: 'two'",
    ),
    (
        "train lr word",
        lambda t: [*TRAIN, "--data", "digits", "--lr", "fast"],
        2,
        r"argument --lr: invalid float value: 'fast'",
    ),
    (
        "train optimizer unknown",
        lambda t: [*TRAIN, "--data", "digits", "--optimizer", "adam"],
        2,
        r"argument --optimizer: invalid choice: 'adam'",
    ),
    (
        "train amp unknown",
        lambda t: [*TRAIN, "--data", "digits", "--amp", "fp8"],
        2,
        r"argument --amp: invalid choice: 'fp8'",
    ),
    ("train no model", lambda t: ["train", "--data", "digits"], 2, r"error: train needs --model and --data"),
    (
        "train unknown model",
        lambda t: ["train", "--model", "resnet9000", "--data", "digits", "--out", str(t / "r")],
        2,
        r"error: .*resnet9000",
    ),
    (
        "train model-arg no equals",
        lambda t: [*TRAIN, "--data", "digits", "--model-arg", "width", "--out", str(t / "r")],
        2,
        r"error: --model-arg expects K=V, got 'width'",
    ),
    ("eval missing checkpoint", lambda t: ["eval", "--checkpoint", str(t / "nope")], 2, r"error: .*nope"),
    (
        "eval checkpoint not json",
        lambda t: ["eval", "--checkpoint", str(a_file(t))],
        2,
        r"error: .*file\.txt",
    ),
    (
        "eval batch-size word",
        lambda t: ["eval", "--checkpoint", str(t), "--batch-size", "x"],
        2,
        r"argument --batch-size: invalid int value",
    ),
    ("eval no checkpoint flag", lambda t: ["eval"], 2, r"the following arguments are required: --checkpoint"),
    (
        "predict missing checkpoint",
        lambda t: ["predict", "--checkpoint", str(t / "nope"), str(image(t))],
        2,
        r"error: .*nope",
    ),
    (
        "predict threshold word",
        lambda t: ["predict", "--checkpoint", str(t), "--score-threshold", "high"],
        2,
        r"argument --score-threshold: invalid float value",
    ),
    (
        "export unknown model",
        lambda t: ["export", "--model", "resnet9000", "--out", str(t / "m.onnx")],
        2,
        r"error: .*resnet9000",
    ),
    (
        "export both sources",
        lambda t: ["export", "--model", "x", "--checkpoint", "y", "--out", "z"],
        2,
        r"argument --checkpoint: not allowed with argument --model",
    ),
    (
        "export input-size one number",
        lambda t: ["export", "--model", "x", "--out", "z", "--input-size", "3"],
        2,
        r"argument --input-size: expected 2 arguments",
    ),
    (
        "export model-arg no equals",
        lambda t: ["export", "--model", "digits_cnn", "--model-arg", "w", "--out", str(t / "m.onnx")],
        2,
        r"error: --model-arg expects K=V, got 'w'",
    ),
    (
        "export missing checkpoint",
        lambda t: ["export", "--checkpoint", str(t / "nope"), "--out", str(t / "m.onnx")],
        2,
        r"error: .*nope",
    ),
    ("info missing", lambda t: ["info", str(t / "nope")], 2, r"error: .*nope"),
    ("info empty folder", lambda t: ["info", str(t)], 2, r"error: .*"),
    ("info not json", lambda t: ["info", str(a_file(t))], 2, r"error: .*file\.txt"),
    ("list-models unknown", lambda t: ["list-models", "resnet9000"], 2, r"error: .*resnet9000"),
    (
        "list-models unknown flag",
        lambda t: ["list-models", "--tsk", "detection"],
        2,
        r"unrecognized arguments: --tsk",
    ),
    (
        "data export format unknown",
        lambda t: ["data", "export", "digits", "--format", "tfrecord", "--out", "o"],
        2,
        r"argument --format: invalid choice: 'tfrecord'",
    ),
    (
        "data export no out",
        lambda t: ["data", "export", "digits", "--format", "coco"],
        2,
        r"the following arguments are required: --out",
    ),
    ("data no subcommand", lambda t: ["data"], 2, r"the following arguments are required: DATA_COMMAND"),
    ("demo epochs word", lambda t: ["demo", "--epochs", "x"], 2, r"argument --epochs: invalid int value"),
    ("bench unknown suite", lambda t: ["bench", "nms"], 2, r"argument suite: invalid choice: 'nms'"),
    ("unknown verb", lambda t: ["trian"], 2, r"argument COMMAND: invalid choice: 'trian'"),
]


def _yolo(tmp: Path) -> Path:
    root = tmp / "ds"
    (root / "images" / "train").mkdir(parents=True)
    (root / "data.yaml").write_text("train: images/train\nnames: [cat]\n")
    return root


@pytest.mark.parametrize(("argv", "code", "message"), [pytest.param(a, c, m, id=i) for i, a, c, m in CASES])
def test_bad_command_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: Argv, code: int, message: str
) -> None:
    got, line = run_cli(argv(tmp_path), capsys)
    assert got == code, line
    assert re.search(message, line), line


def test_case_count() -> None:
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids)) >= 60


def test_full_disk_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC while writing (simulated: the image writer raises it) -> exit 1, one line."""
    import structpred.data.export as export

    def full(path: Path, image: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(export, "write_image", full)
    code, line = run_cli([*EXPORT, "--out", str(tmp_path / "o")], capsys)
    assert code == 1 and re.fullmatch(
        r"error: .*o/images/train/000000\.png: No space left on device", line
    ), line


def test_limit_flag_is_in_force_during_the_verb_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import structpred.cli.data as data_verb

    seen: list[tuple[int, int | None]] = []

    def spy(args: object, rest: list[str]) -> int:
        seen.append((limits.current().max_yaml_depth, getattr(args, "max_images", None)))
        return 0

    monkeypatch.setattr(data_verb, "export", spy)
    before = limits.current()
    assert main([*EXPORT, "--out", str(tmp_path / "o"), "--limit", "max_yaml_depth=7", "--limit", "2"]) == 0
    assert seen == [(7, 2)]  # NAME=N is a limit, a plain N the old --limit (now --max-images)
    assert limits.current() == before


def test_a_real_bug_still_shows_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    import structpred.cli.info as info

    def broken(path: object) -> list[tuple[str, str]]:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(info, "describe", broken)
    with pytest.raises(ZeroDivisionError, match="a bug"):
        main(["info", "anything"])


def test_verbose_shows_the_traceback_of_a_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown dataset 'foo'"):
        main(["-v", "data", "export", "foo", "--format", "coco", "--out", str(tmp_path)])


def test_a_missing_image_is_refused_before_the_first_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The annotations name an image that is not there: refused when the dataset is built, so no
    run folder (and no checkpoint) is written and no epoch starts."""
    code, line = run_cli(
        [*TRAIN, "--data", voc_missing_image(tmp_path), "--out", str(tmp_path / "r")], capsys
    )
    assert code == 2 and "a.xml: <filename> 'a.jpg' not found" in line
    assert not (tmp_path / "r").exists()
