"""Datasets by name: the ``--data`` spec of ``structpred train`` / ``eval``.

Specs: ``shapes`` (the built-in shapes world), its pairs and clips ``shapes-flow`` (flow pairs),
``shapes-stereo`` (rectified stereo pairs), ``shapes-video`` (clips with tracks; see
:mod:`structpred.data.shapes_views`), ``digits`` (one real digit per item),
``digits-distorted`` (rotated, scaled, shifted digits, for the STN), sequences ``shakespeare``,
``japanese-vowels``, ``sunspots``, ``adding`` (see :mod:`structpred.data.sequences`),
``digit-canvas`` (scenes of real digits), ``trees`` (DeepForest aerial photos), ``nuclei``
(StarDist's DSB 2018 image), and files on disk: ``coco:DIR``, ``voc:DIR``, ``yolo:DIR`` —
a directory laid out as ``structpred data export`` writes it (see :mod:`structpred.data.export`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset


def _shapes(split: str, arg: str, **kw: Any) -> Dataset:
    from .shapes import ShapesWorld

    kw.setdefault("cache", True)  # training reads every item once per epoch: render it once
    return ShapesWorld(split, **kw)


def _shapes_views(name: str) -> Callable[..., Dataset]:
    def build(split: str, arg: str, **kw: Any) -> Dataset:
        from . import shapes_views

        if name != "ShapesVideo":  # a clip item is ~5x a pair: caching clips is opt-in
            kw.setdefault("cache", True)
        cls: Callable[..., Dataset] = getattr(shapes_views, name)
        return cls(split, **kw)

    return build


def _digits(split: str, arg: str, **kw: Any) -> Dataset:
    from .digits import Digits

    return Digits(split, **kw)


def _digits_distorted(split: str, arg: str, **kw: Any) -> Dataset:
    from .distorted import DistortedDigits

    return DistortedDigits(split, **kw)


def _digit_canvas(split: str, arg: str, **kw: Any) -> Dataset:
    from .digits import DigitCanvas

    return DigitCanvas(split, **kw)


def _trees(split: str, arg: str, **kw: Any) -> Dataset:
    from .trees import DeepForestTrees

    return DeepForestTrees(split, **kw)


def _nuclei(split: str, arg: str, **kw: Any) -> Dataset:
    from .nuclei import Nuclei

    return Nuclei(split, **kw)


def _files(fmt: str) -> Callable[..., Dataset]:
    def build(split: str, arg: str, **kw: Any) -> Dataset:
        if not arg:
            raise ValueError(f"--data {fmt}:DIR needs a directory, e.g. {fmt}:out/shapes-{fmt}")
        from .export import open_export

        return open_export(Path(arg), fmt, split, **kw)

    return build


def _sequence(name: str) -> Callable[..., Dataset]:
    def build(split: str, arg: str, **kw: Any) -> Dataset:
        from .sequences import SPECS

        return SPECS[name](split, arg, **kw)

    return build


BUILDERS: dict[str, Callable[..., Dataset]] = {
    "shapes": _shapes,
    "shapes-flow": _shapes_views("ShapesFlow"),
    "shapes-stereo": _shapes_views("ShapesStereo"),
    "shapes-video": _shapes_views("ShapesVideo"),
    "digits": _digits,
    "digits-distorted": _digits_distorted,
    "shakespeare": _sequence("shakespeare"),
    "japanese-vowels": _sequence("japanese-vowels"),
    "sunspots": _sequence("sunspots"),
    "adding": _sequence("adding"),
    "digit-canvas": _digit_canvas,
    "trees": _trees,
    "nuclei": _nuclei,
    "coco": _files("coco"),
    "voc": _files("voc"),
    "yolo": _files("yolo"),
}


def build_dataset(spec: str, split: str, **kwargs: Any) -> Dataset:
    """The dataset named by ``spec`` (``name`` or ``name:argument``), its ``split``.

    Extra keyword arguments go to the dataset's constructor (e.g. ``num_images`` for shapes).
    """
    name, _, arg = spec.partition(":")
    if name not in BUILDERS:
        raise ValueError(f"unknown dataset {spec!r}; known: {', '.join(BUILDERS)} (coco/voc/yolo take :DIR)")
    return BUILDERS[name](split, arg, **kwargs)
