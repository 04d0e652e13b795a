"""``structpred list-models``: the registered models, their task, size, arguments and peer weights.

Each model is one row (name, task, parameters with the default arguments, peer weights it
loads, summary) and one line of the builder's keyword arguments with their defaults, read from
its signature (what ``train --model-arg K=V`` accepts). A builder that passes ``**config`` on
to a config dataclass shows that dataclass's fields too (all of them with ``list-models NAME``).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
from typing import Any

import torch


def builder_arguments(builder: Any) -> list[str]:
    """``name=default`` of each keyword argument of ``builder`` (``**config`` as is)."""
    out = []
    for p in inspect.signature(builder).parameters.values():
        if p.kind is p.VAR_KEYWORD:
            out.append(f"**{p.name}")
        elif p.default is p.empty:
            out.append(p.name)
        else:
            out.append(f"{p.name}={p.default!r}")
    return out


def config_fields(builder: Any) -> tuple[str, list[str]]:
    """The config dataclass a ``**config`` builder fills (the one its module defines): its name
    and ``field=default`` of each field (the class's defaults; a builder may preset some)."""
    module = inspect.getmodule(builder)
    found = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and dataclasses.is_dataclass(value)
        and value.__module__ == getattr(module, "__name__", None)
        and value.__name__.endswith("Config")
    ]
    if len(found) != 1:
        return "", []
    cls = found[0]
    fields = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            fields.append(f"{f.name}={f.default!r}")
        else:
            fields.append(f.name)
    return cls.__name__, fields


def list_models(args: argparse.Namespace, rest: list[str]) -> int:
    """Print the registered models (of ``--task`` if given; one model in full with a name)."""
    from ..models import get_model, list_models, model_info

    names = list_models(args.task)
    if args.name is not None:
        model_info(args.name)  # ValueError listing the known names
        names = [args.name]
    if not names:
        print("no models registered yet" if args.task is None else f"no models for task {args.task!r}")
        return 0
    rows, arguments = [("model", "task", "parameters", "loads weights of", "what")], {}
    for name in names:
        info = model_info(name)
        kwargs = builder_arguments(info.builder)
        try:
            with torch.device("meta"):  # counted without allocating
                model = get_model(name)
            count = f"{sum(p.numel() for p in model.parameters()):,}"
        except (ValueError, TypeError):  # its size comes from the data (a vocabulary...)
            count = "from data"
        config_name, fields = config_fields(info.builder)
        if any(k.startswith("**") for k in kwargs) and config_name:
            shown = fields if args.name else [f.split("=")[0] for f in fields[:6]]
            more = "" if args.name or len(fields) <= 6 else f", ... {len(fields) - 6} more"
            note = " (class defaults; the builder presets some)" if args.name else ""
            kwargs = [k for k in kwargs if not k.startswith("**")] + [
                f"**config: {config_name}({', '.join(shown)}{more}){note}"
            ]
        rows.append((name, info.task, count, ", ".join(info.peer_weights) or "-", info.summary))
        arguments[name] = ", ".join(kwargs) or "(none)"
    widths = [max(len(r[k]) for r in rows) for k in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)) + "  " + row[4])
        if row[0] in arguments:
            print(f"    --model-arg: {arguments[row[0]]}")
    return 0


def add_parser(sub: Any) -> None:
    """Declare ``list-models``."""
    p = sub.add_parser(
        "list-models",
        help="list the registered models: task, parameters, accepted --model-arg keys, peer weights",
        description="The registered models: task, parameter count (default arguments), the peer "
        "weights they load (train --weights FILE) and the keyword arguments `train --model-arg K=V` "
        "accepts, with their defaults.",
    )
    p.add_argument("name", nargs="?", default=None, help="one model: every argument, config fields included")
    p.add_argument("--task", default=None, help="only the models of this task (e.g. detection)")
    p.set_defaults(func=list_models)
