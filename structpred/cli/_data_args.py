"""The data flags shared by ``train``, ``eval``, ``predict`` (private): ``--data``, ``--data-arg``,
``--val-fraction``, ``--split-seed`` and ``--limit NAME=N`` (the readers' input limits).

Data on disk (``coco:``, ``voc:``, ``yolo:``, ``masks:``) is read for the model's task: boxes for
a detector, instance masks for an instance segmenter, label maps for a semantic segmenter. The
task comes from ``--model`` (train) or the checkpoint's model (eval) and is passed to
:func:`structpred.data.registry.build_dataset` as ``task``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ._common import key_values

DATA_HELP = (
    "shapes | shapes-objects | digits | digits-distorted | digit-canvas | trees | nuclei | shakespeare "
    "| japanese-vowels | sunspots | adding | shapes_keypoints | coco:DIR|FILE.json "
    "| coco_keypoints:DIR|FILE.json | voc:DIR | yolo:DIR|FILE.yaml | masks:DIR "
    "(layouts on disk: docs/data.md)"
)


def add_data_arguments(p: argparse.ArgumentParser, *, required: bool, default_help: str = "") -> None:
    """``--data SPEC``, ``--data-arg K=V``, ``--val-fraction F`` and ``--split-seed N`` on ``p``."""
    p.add_argument("--data", required=required, default=None, help=DATA_HELP + default_help)
    p.add_argument("--data-arg", action="append", metavar="K=V", help="dataset keyword argument")
    p.add_argument(
        "--val-fraction",
        type=float,
        default=None,
        metavar="F",
        help="data on disk without a val split: this fraction of train, chosen with --split-seed, "
        "is the val split (refused for data with its own val) (default: the data's own splits)",
    )
    p.add_argument(
        "--split-seed", type=int, default=0, metavar="N", help="seed of --val-fraction's choice (default: 0)"
    )
    add_limit_argument(p)


# The names of structpred.data.limits.Limits, written out so that `--help` does not import the
# data package (tests/test_cli.py checks the list against Limits).
LIMIT_NAMES = (
    "max_pixels", "max_annotations_per_image", "max_polygon_vertices", "max_polygons_per_annotation",
    "max_yaml_bytes", "max_yaml_aliases", "max_yaml_depth", "max_text_file_bytes", "max_keypoints_per_object",
)  # fmt: skip
LIMIT_HELP = (
    f"raise (or lower) one input limit of the readers, repeatable: {', '.join(LIMIT_NAMES)} (defaults "
    "and why: docs/limits.md; also STRUCTPRED_<NAME>=N)"
)


def limit_assignment(text: str) -> tuple[str, int]:
    """argparse type of ``--limit``: ``"max_pixels=2e8"`` -> ``("max_pixels", 200000000)``."""
    from ..data.limits import parse_assignment

    try:
        return parse_assignment(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_limit_argument(p: argparse.ArgumentParser) -> None:
    """``--limit NAME=N`` (repeatable) on ``p``; :func:`structpred.cli.main` applies the values
    (:func:`structpred.data.limits.override`) around the verb."""
    p.add_argument(
        "--limit", dest="limits", action="append", type=limit_assignment, metavar="NAME=N", help=LIMIT_HELP
    )


def split_options(args: argparse.Namespace) -> dict[str, Any]:
    """``{"val_fraction": F, "split_seed": N}`` when ``--val-fraction`` is given, else ``{}``."""
    fraction = getattr(args, "val_fraction", None)
    if fraction is None:
        return {}
    return {"val_fraction": fraction, "split_seed": getattr(args, "split_seed", 0)}


def _checkpoint_model(path: str) -> str | None:
    """The model name a checkpoint (run directory or ``ckpt-*.json``) records, or None."""
    from ..engine import checkpoint as ckpt

    target = Path(path)
    if target.is_dir():
        newest = ckpt.latest_checkpoint(target)
        if newest is None:
            return None
        target = newest
    try:
        name = json.loads(target.with_suffix(".json").read_text())["config"]["model_name"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # the engine reports an unreadable checkpoint itself
    return name if isinstance(name, str) else None


def task_name(args: argparse.Namespace) -> str | None:
    """The task of ``--model`` (or of ``--checkpoint``'s model), or None when unknown."""
    from ..tasks import task_of

    model = getattr(args, "model", None)
    if model is None and getattr(args, "checkpoint", None):
        model = _checkpoint_model(args.checkpoint)
    if model is None:
        return None
    try:
        return task_of(model).name
    except (ValueError, KeyError):
        return None  # an unknown model is reported where the model is built


def data_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The dataset keyword arguments the data flags ask for (``--data-arg`` values, the split
    options, and for data on disk the model's ``task``)."""
    kwargs = key_values(args.data_arg, "--data-arg")
    kwargs.update(split_options(args))
    data = getattr(args, "data", None) or ""
    if data.partition(":")[0] in ("coco", "voc", "yolo", "masks") or getattr(args, "checkpoint", None):
        task = task_name(args)
        if task is not None:
            kwargs.setdefault("task", task)
    return kwargs
