"""Helpers shared by the verbs (private): ``K=V`` options and the metric table."""

from __future__ import annotations

import json
from typing import Any


def key_values(pairs: list[str] | None, flag: str) -> dict[str, Any]:
    """``["k=v", ...]`` -> dict, values parsed as JSON when they parse (``3``, ``0.5``, ``[1,2]``)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{flag} expects K=V, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except (ValueError, RecursionError):  # not JSON, "[[[[...", a 5,000-digit int: kept as text
            out[key] = value
    return out


def table_header(split: str, kind: str) -> str:
    """The metric table's first line: ``val split, box AP (COCO)``."""
    return f"{split} split, {kind}"


def format_metrics(metrics: dict[str, Any], split: str | None = None, kind: str | None = None) -> str:
    """The metric table: a header naming the split and the kind of figures (``val split, box AP
    (COCO)``, ``test split, mIoU``...) when given, then one ``name  value`` line per metric
    (tensors of one element as floats), the losses last."""
    lines = [table_header(split, kind)] if split is not None and kind is not None else []
    losses_last = sorted(metrics, key=lambda k: k.startswith("loss"))  # the figures first (stable)
    for key in losses_last:
        value = metrics[key]
        if hasattr(value, "numel") and value.numel() == 1:
            value = float(value)
        if isinstance(value, float):
            lines.append(f"{key:>24s}  {value:.4f}")
        elif hasattr(value, "dim") and value.dim() > 1:  # a matrix (confusion...): its shape only
            lines.append(f"{key:>24s}  {' x '.join(map(str, value.shape))} matrix (not shown)")
        elif hasattr(value, "tolist"):
            lines.append(f"{key:>24s}  {[round(v, 4) for v in value.flatten().tolist()]}")
        else:
            lines.append(f"{key:>24s}  {value}")
    return "\n".join(lines)
