"""Which split of a dataset on disk a request gets, and ``--val-fraction`` carving (private).

Convention: a layout lists the splits it holds, by canonical name (``train``, ``val``, ``test``,
``trainval``...; ``valid`` and ``validation`` mean ``val``), or ``all`` when it is not split
(one COCO json, a folder of xml files, a YOLO yaml with ``train`` only counts as split).

* Without ``val_fraction``: a split the data holds is read as is; ``train`` (and ``all``) of
  unsplit data is all of it; anything else is a ``ValueError`` that says how to get it.
* With ``val_fraction = F`` (0 < F < 1): only for data without its own ``val`` (refused
  otherwise, so a flag is never silently ignored). Of the data's ``train`` (or all of it),
  ``round(F * n)`` items (at least 1, at most ``n - 1``) chosen by a permutation seeded with
  ``split_seed`` form ``val``, the rest ``train``; ``all`` is the whole. Both keep file order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import Dataset

ALIASES = {"valid": "val", "validation": "val", "training": "train", "testing": "test"}
UNSPLIT = "all"


def canonical(name: str) -> str:
    """``'Validation' -> 'val'``, ``'train2017' -> 'train'``: the split a name stands for, or the
    name lower-cased."""
    low = name.lower()
    for prefix in ("train", "validation", "valid", "val", "test"):
        if low.startswith(prefix) and (low == prefix or low[len(prefix) :].isdigit()):
            return ALIASES.get(prefix, prefix)
    return ALIASES.get(low, low)


def check_split_options(val_fraction: float | None, split_seed: int) -> None:
    """Raise unless ``val_fraction`` is None or in (0, 1) and ``split_seed`` an int."""
    if val_fraction is not None:
        if isinstance(val_fraction, bool) or not isinstance(val_fraction, int | float):
            raise ValueError(f"--val-fraction must be a number in (0, 1), got {val_fraction!r}")
        if not 0.0 < float(val_fraction) < 1.0:
            raise ValueError(f"--val-fraction must be in (0, 1), got {val_fraction}")
    if isinstance(split_seed, bool) or not isinstance(split_seed, int):
        raise ValueError(f"--split-seed must be an integer, got {split_seed!r}")


def choose(available: list[str], split: str, val_fraction: float | None, where: str) -> tuple[str, str]:
    """``(split to read, part)`` for a request; ``part`` is ``'whole'``, ``'train'`` or ``'val'``
    (the two parts of a carved split). ``ValueError`` naming ``where`` if it cannot be served."""
    want = canonical(split)
    have = sorted(available)
    if val_fraction is not None:
        if "val" in available:
            raise ValueError(
                f"{where} has its own val split; --val-fraction is only for data without one "
                "(drop the flag to use it)"
            )
        base = "train" if "train" in available else UNSPLIT if UNSPLIT in available else None
        if base is None:
            raise ValueError(f"{where} has no train split to carve a val split from (it has {have})")
        if want in ("train", "val"):
            return base, want
        if want == UNSPLIT:
            return base, "whole"
    if want in available:
        return want, "whole"
    if want in ("train", UNSPLIT) and UNSPLIT in available:
        return UNSPLIT, "whole"
    hint = " (pass --val-fraction F to carve one out of train)" if want == "val" else ""
    raise ValueError(f"{where} has no {split!r} split; it has {have}{hint}")


def carve(n: int, val_fraction: float, split_seed: int, where: str) -> tuple[list[int], list[int]]:
    """``(train indices, val indices)`` of ``n`` items, both sorted; deterministic in the seed."""
    if n < 2:
        raise ValueError(f"{where}: {n} item(s) cannot be split by --val-fraction (needs at least 2)")
    k = min(max(round(val_fraction * n), 1), n - 1)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed)).tolist()
    return sorted(order[k:]), sorted(order[:k])


class SplitView(Dataset[Any]):
    """Items ``indices`` of ``base``; other attributes (``categories``...) are the base's."""

    def __init__(self, base: Dataset[Any], indices: list[int], name: str) -> None:
        self.base, self.indices, self.name = base, list(indices), name

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        return self.base[self.indices[index]]

    def __getattr__(self, attr: str) -> Any:
        if attr in ("base", "indices", "name"):  # not set yet (unpickling): no recursion
            raise AttributeError(attr)
        return getattr(self.base, attr)

    def __repr__(self) -> str:
        return f"SplitView({self.name}: {len(self)} of {self.base!r})"


def serve(
    available: list[str],
    split: str,
    val_fraction: float | None,
    split_seed: int,
    where: str,
    build: Callable[[str], Dataset[Any]],
) -> Dataset[Any]:
    """The dataset for ``split``: ``build(split the data holds)``, carved when asked; an empty
    result is a ``ValueError``."""
    check_split_options(val_fraction, split_seed)
    source, part = choose(available, split, val_fraction, where)
    dataset = build(source)
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise ValueError(f"{where}: split {source!r} has no images")
    if part == "whole":
        return dataset
    assert val_fraction is not None
    train, val = carve(n, float(val_fraction), split_seed, f"{where} split {source!r}")
    return SplitView(dataset, train if part == "train" else val, f"{part} part of {source!r}")
