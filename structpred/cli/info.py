"""``structpred info CHECKPOINT_OR_RUN_DIR``: what a checkpoint holds, read without training.

Model, task, builder arguments, data, classes, epochs done / planned, step, best metric,
optimizer, weights in / frozen parts / overrides, file sizes, parameter count and the config.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n} B"


def _kv(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in values.items()) or "-"


def _parameters(model_name: str, kwargs: dict[str, Any]) -> str:
    import torch

    from ..models import get_model

    try:
        with torch.device("meta"):  # counted without allocating
            model = get_model(model_name, **kwargs)
    except (ValueError, TypeError) as err:
        return f"unknown ({err})"
    total = sum(p.numel() for p in model.parameters())
    return f"{total:,}"


def describe(path: str | Path) -> list[tuple[str, str]]:
    """``(field, text)`` rows describing the checkpoint at ``path`` (a run directory: its newest)."""
    from ..engine import checkpoint as ckpt
    from ..tasks import task_of

    file, meta = ckpt.read_meta(path)
    run_dir = file.parent
    c: dict[str, Any] = meta.get("config", {})
    name = str(c.get("model_name") or "")
    rows: list[tuple[str, str]] = []
    all_ckpts = ckpt.list_checkpoints(run_dir)
    rows.append(("checkpoint", f"{file}  ({len(all_ckpts)} in {run_dir})"))
    task = task_of(name) if name else None
    params = _parameters(name, c.get("model_kwargs", {})) if name else "-"
    rows.append(("model", f"{name or '(not recorded)'}" + (f"  task {task.name}" if task else "")))
    rows.append(("parameters", params))
    rows.append(("builder args", _kv(c.get("model_kwargs", {}))))
    rows.append(("data", f"{c.get('data') or '-'}  ({_kv(c.get('data_kwargs', {}))})"))
    names = c.get("class_names") or []
    if names:
        rows.append(("classes", f"{len(names)}: {', '.join(names)}"))
    done = meta.get("epochs_done", meta.get("epoch", 0))
    position = f"step {meta.get('step_in_epoch', '?')} of epoch {int(meta.get('epoch', 0)) + 1}"
    rows.append(
        (
            "progress",
            f"epochs {done} of {c.get('epochs', '?')} done, step {meta.get('step', '?')} ({position})",
        )
    )
    best = meta.get("best")
    if best:
        at = f"at epoch {best['epoch']} ({best['checkpoint']})"
        rows.append(("best", f"val {best['metric']} {best['value']:.4g} {at}"))
    elif task is not None:
        rows.append(("best", f"none yet (by val {task.headline.key})"))
    metrics = {k: v for k, v in (meta.get("metrics") or {}).items() if isinstance(v, (int, float))}
    if metrics:
        rows.append(("last metrics", ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())))
    schedule = f"{c.get('schedule')} schedule, warm-up {c.get('warmup_steps')} steps"
    rows.append(
        (
            "optimizer",
            f"{c.get('optimizer', '?')}, lr {c.get('lr')}, {schedule}, batch {c.get('batch_size')}, "
            f"weight decay {c.get('weight_decay')}",
        )
    )
    if c.get("weights") or c.get("freeze") or c.get("image_size") or c.get("num_classes"):
        started = (
            f"weights {c.get('weights') or '-'}, freeze {c.get('freeze') or '-'}, "
            f"image size {c.get('image_size') or '-'}, num classes {c.get('num_classes') or '-'}"
        )
        rows.append(("started from", started))
    for record in c.get("overrides") or []:
        changes = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in record["changes"].items())
        rows.append(("override", f"at step {record['step']}: {changes}"))
    weights = file.with_name(meta.get("weights", file.with_suffix(".safetensors").name))
    sizes = [f"{p.name} {_size(p.stat().st_size)}" for p in (weights, file) if p.is_file()]
    total = sum(p.stat().st_size for p in run_dir.rglob("*") if p.is_file())
    rows.append(("files", f"{', '.join(sizes)}; run directory {_size(total)}"))
    return rows


def run(args: argparse.Namespace, rest: list[str]) -> int:
    """Print the rows (and the whole config with ``--config``)."""
    from ..engine import checkpoint as ckpt

    rows = describe(args.checkpoint)
    width = max(len(k) for k, _ in rows)
    for key, text in rows:
        print(f"{key:<{width}}  {text}")
    if args.config:
        _, meta = ckpt.read_meta(args.checkpoint)
        print(json.dumps(meta.get("config", {}), indent=1))
    return 0


def add_parser(sub: Any) -> None:
    """Declare ``info``."""
    p = sub.add_parser(
        "info",
        help="what a checkpoint holds: model, data, classes, epochs, best metric, optimizer, sizes",
    )
    p.add_argument(
        "checkpoint", metavar="CHECKPOINT_OR_RUN_DIR", help="a run directory (its newest) or ckpt-*.json"
    )
    p.add_argument("--config", action="store_true", help="also print the whole recorded config (JSON)")
    p.set_defaults(func=run)
