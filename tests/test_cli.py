"""The ``structpred`` command line, the model registry and the benchmark timing helper."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import structpred
from structpred.bench.timing import Comparison, compare, format_table
from structpred.cli import build_parser, main
from structpred.cli._examples import EXAMPLES
from structpred.models import get_model, list_models, model_info, register_model, registry

# ---------------------------------------------------------------------------- CLI


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == "structpred 0.1.0"
    assert structpred.__version__ == "0.1.0"


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "list-models" in out
    assert "bench" in out


def _verb_parsers() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_verb_shows_its_defaults_and_examples() -> None:
    verbs = _verb_parsers()
    assert {"train", "eval", "predict", "demo", "list-models", "data", "info"} <= set(verbs)
    for name, parser in verbs.items():
        text = parser.format_help()
        if name in EXAMPLES:
            assert "examples:" in text and f"structpred {name}" in text.split("examples:")[1], name
        for action in parser._actions:
            shown = action.default not in (None, False, [], argparse.SUPPRESS) and action.nargs != 0
            if shown and action.help and action.help != argparse.SUPPRESS:
                # Each flag with a default says it (and no "(default: None)" anywhere).
                assert "default" in parser._get_formatter()._get_help_string(action), (name, action.dest)
        assert "(default: None)" not in text, name


def test_train_help_shows_the_real_defaults_of_its_sentinel_flags(capsys) -> None:
    from structpred.engine import TrainConfig

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    d = TrainConfig()
    for flag, value in (
        ("--epochs", d.epochs),
        ("--lr", d.lr),
        ("--optimizer", d.optimizer),
        ("--keep-last", d.keep_last),
    ):
        assert (
            f"(default: {value})" in text.split(flag, 1)[1].split("--", 1)[0] or f"(default: {value})" in text
        ), flag
    assert "with defaults: `structpred list-models`" in text  # where a model's arguments are listed
    assert "coco:DIR" in text and "shapes" in text  # --data lists the specs
    assert "examples:" in text and "--resume runs/shapes" in text


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "usage: structpred" in out
    assert "list-models" in out


def test_list_models_matches_registry(capsys):
    assert main(["list-models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = list_models()
    assert names, "the library registers its models on import"
    assert lines[0].split()[:2] == ["model", "task"]  # a header, then per model, sorted: a row...
    rows, kwargs = lines[1::2], lines[2::2]  # ... and the line of its builder's arguments
    assert [line.split()[0] for line in rows] == names
    assert [line.split()[1] for line in rows] == [model_info(n).task for n in names]
    assert all(line.startswith("    --model-arg: ") for line in kwargs)
    by_name = dict(zip(names, kwargs, strict=True))
    assert "num_classes=6, width=16, fpn_channels=32" in by_name["fasterrcnn_narrow_fpn"]
    assert "**config: FasterRCNNConfig(" in by_name["fasterrcnn_narrow_fpn"]  # its config's fields
    assert "vocab=''" in by_name["lstm_charlm"]
    detection = list_models(task="detection")
    assert main(["list-models", "--task", "detection"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()[1::2]] == detection


def test_list_models_one_model_shows_every_config_field(capsys):
    assert main(["list-models", "fasterrcnn_narrow_fpn"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[1].split()[:3] == [
        "fasterrcnn_narrow_fpn",
        "detection",
        lines[1].split()[2],
    ]
    assert "min_size=800" in lines[2] and "box_detections_per_img=100" in lines[2]  # every field
    assert "class defaults; the builder presets some" in lines[2] and "more" not in lines[2]
    assert main(["list-models", "no_such_model"]) == 2
    assert "unknown model 'no_such_model'" in capsys.readouterr().err


def test_list_models_when_empty(capsys, monkeypatch):
    monkeypatch.setattr(registry, "_MODELS", {})
    assert main(["list-models"]) == 0
    assert capsys.readouterr().out == "no models registered yet\n"
    assert main(["list-models", "--task", "detection"]) == 0
    assert capsys.readouterr().out == "no models for task 'detection'\n"


def test_list_models_prints_registered_names(capsys, monkeypatch):
    monkeypatch.setattr(registry, "_MODELS", {})

    @register_model(task="classification")
    def zeta_net(depth: int = 3, name: str = "z") -> nn.Module:
        """The last one.

        More text, not shown."""
        return nn.Identity()

    @register_model(task="detection", peer_weights=("torchvision",))
    def alpha_net() -> nn.Module:
        return nn.Linear(2, 3)

    assert main(["list-models"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert rows[0] == ["model", "task", "parameters", "loads", "weights", "of", "what"]
    assert rows[1] == ["alpha_net", "detection", "9", "torchvision"]  # no docstring: no summary
    assert rows[2] == ["--model-arg:", "(none)"]
    assert rows[3] == ["zeta_net", "classification", "0", "-", "The", "last", "one."]  # its first line
    assert rows[4] == ["--model-arg:", "depth=3,", "name='z'"]  # from the signature, with defaults
    assert len(rows) == 5
    assert main(["list-models", "--task", "classification"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == [
        "model",
        "zeta_net",
        "--model-arg:",
    ]
    assert list_models(task="detection") == ["alpha_net"]
    assert list_models(task="classification") == ["zeta_net"]


@pytest.mark.parametrize(
    "argv", [["frobnicate"], ["list-models", "--bogus"], ["bench", "nonsense"], ["bench"]]
)
def test_bad_commands_exit_non_zero(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code not in (0, None)
    assert "usage: structpred" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--bogus"], ["--verison"]])
def test_unknown_option_without_command_exits_non_zero(argv, capsys):
    # A mistyped option must not print the help and exit 0 as if all went well.
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code not in (0, None)
    assert "unrecognized arguments" in capsys.readouterr().err


def test_bench_ops_quick(capsys):
    threads = torch.get_num_threads()
    try:
        assert main(["bench", "ops", "--quick", "--repeats", "1"]) == 0
    finally:
        torch.set_num_threads(threads)  # the suite sets torch's thread count for its run
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert any("ratio" in c for c in header)
    ratio_col = next(i for i, c in enumerate(header) if "ratio" in c)
    assert set(table[1].replace("|", "")) <= set("-:")  # Markdown separator row
    rows = {}
    for line in table[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == len(header)
        rows[cells[0]] = cells
    for op in ("nms", "batched_nms", "box_iou", "roi_align", "roi_pool"):
        matching = [name for name in rows if name.split(" ")[0] == op]
        assert matching, f"no row for {op} in\n{out}"
        for name in matching:
            ours, peer, ratio = (float(rows[name][i]) for i in (1, 2, ratio_col))
            assert ours >= 0 and peer >= 0 and ratio >= 0


def test_installed_script_version():
    script = Path(sys.executable).parent / "structpred"
    if not script.exists():  # e.g. an interpreter outside the venv: use the module form
        cmd = [sys.executable, "-m", "structpred.cli", "--version"]
    else:
        cmd = [str(script), "--version"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "structpred 0.1.0"


def test_module_entry_point():
    cmd = [sys.executable, "-m", "structpred.cli", "--version"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "structpred 0.1.0"


# ---------------------------------------------------------------------------- registry


@pytest.fixture
def throwaway():
    """Register into the real registry; always remove what was registered."""
    added: list[str] = []

    def add(fn):
        out = register_model(task="classification")(fn)
        added.append(fn.__name__)
        return out

    try:
        yield add
    finally:
        for name in added:
            registry._MODELS.pop(name, None)


def test_register_and_build(throwaway):
    before = list_models()

    def _structpred_test_tiny(width: int = 4) -> nn.Module:
        return nn.Linear(width, width)

    assert throwaway(_structpred_test_tiny) is _structpred_test_tiny  # the decorator returns the builder
    assert "_structpred_test_tiny" in list_models()
    assert list_models() == sorted(list_models())
    model = get_model("_structpred_test_tiny")
    assert isinstance(model, nn.Linear) and model.in_features == 4
    assert get_model("_structpred_test_tiny", width=3).in_features == 3  # keyword overrides
    info = model_info("_structpred_test_tiny")
    assert info.task == "classification" and info.builder is _structpred_test_tiny and info.peer_weights == ()
    with pytest.raises(TypeError):
        get_model("_structpred_test_tiny", depth=3)
    registry._MODELS.pop("_structpred_test_tiny")
    assert list_models() == before


def test_registry_left_clean_after_throwaway_test():
    assert not any(name.startswith("_structpred_test") for name in list_models())


def test_duplicate_name(throwaway):
    def _structpred_test_dup() -> nn.Module:
        return nn.Identity()

    throwaway(_structpred_test_dup)

    def other() -> nn.Module:
        return nn.ReLU()

    other.__name__ = "_structpred_test_dup"
    with pytest.raises(ValueError, match="_structpred_test_dup.*already registered"):
        register_model(task="detection")(other)
    assert isinstance(get_model("_structpred_test_dup"), nn.Identity)  # the first one stays
    assert model_info("_structpred_test_dup").task == "classification"


def test_register_needs_a_task():
    def _structpred_test_no_task() -> nn.Module:
        return nn.Identity()

    with pytest.raises(TypeError):  # the task is keyword-only and required
        register_model(_structpred_test_no_task)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="needs a task name"):
        register_model(task="")
    assert "_structpred_test_no_task" not in list_models()


def test_unknown_name_lists_known(throwaway):
    def _structpred_test_a() -> nn.Module:
        return nn.Identity()

    def _structpred_test_b() -> nn.Module:
        return nn.Identity()

    throwaway(_structpred_test_a)
    throwaway(_structpred_test_b)
    with pytest.raises(ValueError, match="unknown model 'no_such_model'") as exc:
        get_model("no_such_model")
    assert "_structpred_test_a" in str(exc.value)
    assert "_structpred_test_b" in str(exc.value)


def test_unknown_name_with_empty_registry(monkeypatch):
    monkeypatch.setattr(registry, "_MODELS", {})
    with pytest.raises(ValueError, match="none yet"):
        get_model("fasterrcnn")


# ---------------------------------------------------------------------------- timing


def test_compare_structure():
    calls = {"ours": 0, "peer": 0}

    def ours():
        calls["ours"] += 1

    def peer():
        calls["peer"] += 1
        sum(range(200))

    result = compare("dummy", ours, peer, repeats=5, warmup=2, target=1.5)
    assert isinstance(result, Comparison)
    assert calls == {"ours": 7, "peer": 7}  # warmup + repeats each
    assert result.name == "dummy"
    assert result.target == 1.5
    assert result.ours_ms >= 0 and result.peer_ms > 0
    assert result.ratio == result.ours_ms / result.peer_ms
    assert result.verdict in ("met", "MISSED")
    assert compare("no target", ours, peer, repeats=1, warmup=0).verdict == ""


def test_comparison_ratio_verdict_and_table():
    fast = Comparison("fast op", ours_ms=1.0, peer_ms=4.0, target=1.0)
    slow = Comparison("slow op", ours_ms=3.0, peer_ms=2.0, target=1.0)
    untargeted = Comparison("extra op", ours_ms=2.0, peer_ms=2.0)
    assert fast.ratio == 0.25 and fast.verdict == "met"
    assert slow.ratio == 1.5 and slow.verdict == "MISSED"
    assert untargeted.ratio == 1.0 and untargeted.verdict == ""
    table = format_table([fast, slow, untargeted], "peerlib").splitlines()
    assert "ratio ours/peerlib" in table[0]
    assert table[2] == "| fast op | 1.00 | 4.00 | 0.25 | <= 1 met |"
    assert table[3] == "| slow op | 3.00 | 2.00 | 1.50 | <= 1 MISSED |"
    assert table[4] == "| extra op | 2.00 | 2.00 | 1.00 | - |"


def test_metric_table_names_split_and_kind() -> None:
    from structpred.cli._common import format_metrics

    table = format_metrics(
        {"map": torch.tensor(0.5), "classes": torch.tensor([1, 2]), "confusion": torch.zeros(3, 3)},
        "val",
        "box AP (COCO)",
    ).splitlines()
    assert table[0] == "val split, box AP (COCO)"
    assert table[1].split() == ["map", "0.5000"] and table[2].split() == ["classes", "[1,", "2]"]
    assert table[3].split() == ["confusion", "3", "x", "3", "matrix", "(not", "shown)"]
    assert format_metrics({"loss": 1.0}).splitlines() == [f"{'loss':>24s}  1.0000"]  # no header asked


def test_a_closed_stdout_pipe_ends_quietly() -> None:
    """``structpred list-models | head -1``: no BrokenPipeError traceback on stderr."""
    cmd = [sys.executable, "-m", "structpred.cli", "list-models"]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()  # the reader leaves before anything is written
    err = child.stderr.read().decode()
    assert child.wait(timeout=120) == 141
    assert "Traceback" not in err and "Exception ignored" not in err, err


def test_limit_help_names_every_limit() -> None:
    """``--limit``'s help lists the fields of ``structpred.data.limits.Limits`` (written out so
    ``--help`` does not import the data package)."""
    import dataclasses

    from structpred.cli._data_args import LIMIT_NAMES
    from structpred.data.limits import Limits

    assert LIMIT_NAMES == tuple(f.name for f in dataclasses.fields(Limits))


def test_verbs_that_read_data_take_limit() -> None:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for verb in ("train", "eval", "predict"):
        assert "--limit" in sub.choices[verb].format_help(), verb
    data_sub = next(a for a in sub.choices["data"]._actions if isinstance(a, argparse._SubParsersAction))
    assert "--limit NAME=N" in data_sub.choices["export"].format_help()
