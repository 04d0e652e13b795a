"""Input limits of every reader, in one place (docs/limits.md).

A file on disk is untrusted: a 1 KB PNG can declare 10⁹ pixels, a 1 KB YAML can expand to
gigabytes through aliases, a polygon can claim 10⁹ vertices. Each reader checks what a file
*declares* against these limits **before** allocating or calling native code, and raises
:class:`LimitError` (a ``ValueError``) naming the file, the record, the field, the value and the
limit, with the way to raise it.

Override, from the narrowest to the widest scope:

- Python, for a block: ``with limits.override(max_pixels=200_000_000): ...``
- Python, for the process: ``limits.set_limits(max_pixels=200_000_000)``
- environment: ``STRUCTPRED_MAX_PIXELS=200000000`` (any field, upper-cased, read at import and
  by :func:`reset`)
- the CLI: ``--limit max_pixels=200000000`` (repeatable) on every verb that reads data.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["LimitError", "Limits", "check", "current", "override", "parse_assignment", "reset", "set_limits"]


class LimitError(ValueError):
    """A file declares more than a documented limit allows (see :mod:`structpred.data.limits`)."""


@dataclasses.dataclass(frozen=True)
class Limits:
    """The limits. Every field is a positive int; see docs/limits.md for why each value."""

    # width x height an image header may declare (float32 RGB: 12 bytes per pixel -> 1.2 GB;
    # reading one peaks at ~15 bytes per pixel)
    max_pixels: int = 100_000_000
    # annotations (boxes, polygons, label lines) on one image
    max_annotations_per_image: int = 100_000
    # vertices of one polygon (COCO: x, y pairs of one ring)
    max_polygon_vertices: int = 100_000
    # rings (polygons) of one COCO annotation
    max_polygons_per_annotation: int = 10_000
    # bytes of a YAML file (an Ultralytics data.yaml is well under 10 KB)
    max_yaml_bytes: int = 1_000_000
    # aliases (``*name``) in a YAML file: 0 in every data.yaml seen; a few allowed
    max_yaml_aliases: int = 100
    # nesting depth of a YAML document
    max_yaml_depth: int = 50
    # bytes of a label / annotation text file (one YOLO .txt, one VOC .xml)
    max_text_file_bytes: int = 100_000_000
    # keypoints per object a COCO keypoint category may name (COCO's person: 17; whole-body: 133):
    # every object's target is [K, 3] floats, a heatmap head has K channels
    max_keypoints_per_object: int = 1_000


_FIELDS = tuple(f.name for f in dataclasses.fields(Limits))


def _validated(values: dict[str, object]) -> dict[str, int]:
    out = {}
    for name, value in values.items():
        if name not in _FIELDS:
            raise ValueError(f"unknown limit {name!r}; known: {', '.join(_FIELDS)}")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"limit {name} must be a positive int, got {value!r}")
        out[name] = value
    return out


def _from_environment() -> Limits:
    values: dict[str, object] = {}
    for name in _FIELDS:
        text = os.environ.get(f"STRUCTPRED_{name.upper()}")
        if text is not None:
            values[name] = _parse_int(f"environment variable STRUCTPRED_{name.upper()}", text)
    return Limits(**_validated(values))


def _parse_int(where: str, text: str) -> int:
    try:
        number = float(text.strip().replace("_", ""))  # "2e8" and "200_000_000" both read
    except ValueError:
        raise ValueError(f"{where}: expected a positive integer, got {text!r}") from None
    if not number.is_integer() or number < 1 or number > 2**62:
        raise ValueError(f"{where}: expected a positive integer, got {text!r}")
    return int(number)


_current = _from_environment()


def current() -> Limits:
    """The limits in force."""
    return _current


def set_limits(**values: int) -> Limits:
    """Change some limits for the rest of the process; returns the previous limits."""
    global _current
    previous = _current
    _current = dataclasses.replace(_current, **_validated(dict(values)))
    return previous


def reset() -> None:
    """Back to the defaults and the environment's overrides."""
    global _current
    _current = _from_environment()


@contextlib.contextmanager
def override(**values: int) -> Iterator[Limits]:
    """Change some limits inside a ``with`` block."""
    global _current
    previous = set_limits(**values)
    try:
        yield _current
    finally:
        _current = previous


def parse_assignment(text: str) -> tuple[str, int]:
    """``"max_pixels=2e8"`` -> ``("max_pixels", 200000000)`` (the CLI's ``--limit``)."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or name not in _FIELDS:
        raise ValueError(f"--limit {text!r}: expected NAME=VALUE with NAME one of {', '.join(_FIELDS)}")
    return name, _parse_int(f"--limit {name}", value)


def check(name: str, value: int, where: str | Path, what: str) -> None:
    """Raise :class:`LimitError` when ``value`` exceeds the limit ``name``.

    ``where`` names the file (and record), ``what`` the field, e.g.
    ``check("max_pixels", h * w, path, f"image size {h} x {w} (H x W)")``.
    """
    limit = getattr(_current, name)
    if value > limit:
        raise LimitError(
            f"{where}: {what} is {value:,}, over the limit {name}={limit:,} "
            f"(raise it with --limit {name}=N or STRUCTPRED_{name.upper()}=N; docs/limits.md)"
        )
