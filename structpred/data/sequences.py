"""Real and classic sequence data sets with train/val/test splits, and a padding collate.

* :class:`JapaneseVowels` - UCI Japanese Vowels (Kudo et al. 1999) from sktime's ``.ts`` files:
  12 LPC cepstrum coefficients per 6.7 ms frame, 7-29 frames, 9 speakers to tell apart.
* :class:`Sunspots` - yearly mean sunspot numbers 1700-2008 (statsmodels' CSV): past W years ->
  the next year.
* :class:`AddingProblem` - Hochreiter & Schmidhuber (1997): T random values, two of them marked;
  the target is their sum. Generated, seeded per ``(seed, split, index)``.
* :class:`~structpred.data.shakespeare.Shakespeare` - character windows of whole plays (own module).

The files come from packages installed only for their data (``pip install --no-deps sktime==1.2.0
statsmodels==0.15.0``), found with ``find_spec`` and never imported.

Shape shorthand: B batch, T time steps (per item; T_max in a padded batch), F features per step,
W window of past values.

Convention: every item is ``(inputs, target)``: ``inputs`` float32 ``[T, F]`` (steps first),
``target`` a dict - ``{"labels": int64 scalar}`` for classification, ``{"value": float32[1]}`` for
regression. Items of a batch may differ in T; the models pad (and keep the lengths) themselves, so
the engine's list collate works. :func:`pad_collate` does the same for plain DataLoaders.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .real import SPLITS, check_file, check_split, package_data_dir
from .shakespeare import Shakespeare

Item = tuple[Tensor, dict[str, Tensor]]


def pad_sequences(seqs: Sequence[Tensor], value: float = 0.0) -> tuple[Tensor, Tensor]:
    """``B`` tensors ``[T_b, *F]`` -> ``(padded [B, T_max, *F], lengths int64[B])``, zeros after each end."""
    if len(seqs) == 0:
        raise ValueError("pad_sequences: no sequences")
    for i, s in enumerate(seqs):
        if s.dim() < 1 or s.shape[0] == 0 or s.shape[1:] != seqs[0].shape[1:]:
            raise ValueError(f"sequence {i} has shape {tuple(s.shape)}; all must be [T_b >= 1, "
                             f"{', '.join(map(str, seqs[0].shape[1:]))}]")
    lengths = torch.tensor([s.shape[0] for s in seqs], dtype=torch.int64)
    padded = seqs[0].new_full((len(seqs), int(lengths.max()), *seqs[0].shape[1:]), value)  # (B, T_max, *F)
    for b, s in enumerate(seqs):
        padded[b, : s.shape[0]] = s
    return padded, lengths


def pad_collate(batch: Sequence[Item]) -> tuple[Tensor, Tensor, list[dict[str, Tensor]]]:
    """``[(inputs [T_b, F], target), ...] -> (padded [B, T_max, F], lengths [B], [target, ...])``.

    For a plain ``DataLoader``; the models take ``model(padded, targets, lengths=lengths)``.
    """
    for i, item in enumerate(batch):
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[1], dict)):
            raise ValueError(
                f"batch item {i} must be an (inputs, target dict) pair, got {type(item).__name__}")
    padded, lengths = pad_sequences([inputs for inputs, _ in batch])
    return padded, lengths, [target for _, target in batch]


# ---------------------------------------------------------------------------------------- .ts files
def read_ts(path: str | Path) -> tuple[list[np.ndarray], list[str]]:
    """Parse a multivariate sktime/UEA ``.ts`` file with class labels.

    Returns one ``float64[T, F]`` array per series (the F dimensions have equal lengths within a
    series; T may vary) and its label string. ``ValueError`` names the line of any malformed row.
    """
    path = check_file(Path(path))
    series: list[np.ndarray] = []
    labels: list[str] = []
    dims: int | None = None
    in_data = False
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            key, _, value = line.partition(" ")
            if key.lower() == "@dimensions":
                if not value.strip().isdigit():
                    raise ValueError(f"{path}:{lineno}: @dimensions must be a count, got {value!r}")
                dims = int(value)
            elif key.lower() == "@data":
                in_data = True
            continue
        *fields, label = line.split(":")
        if not fields or (dims is not None and len(fields) != dims):
            raise ValueError(
                f"{path}:{lineno}: expected {dims} dimensions and a label, got {len(fields)} fields")
        try:
            rows = [np.array([float(v) for v in f.split(",")]) for f in fields]
        except ValueError as err:
            raise ValueError(
                f"{path}:{lineno}: not a number ({err}); missing values are not supported") from None
        if len({len(r) for r in rows}) != 1:
            raise ValueError(f"{path}:{lineno}: dimensions differ in length {sorted({len(r) for r in rows})}")
        series.append(np.stack(rows, axis=1))  # F x (T,) -> (T, F)
        labels.append(label.strip())
    if not in_data or not series:
        raise ValueError(f"{path}: no @data section with series")
    return series, labels


# ---------------------------------------------------------------------------------- Japanese vowels
VOWELS_PIN = "sktime==1.2.0"
VOWELS_PER_SPEAKER_VAL = 5  # of each speaker's 30 training utterances, the last 5 are validation


def vowels_file(part: str) -> Path:
    """``JapaneseVowels_TRAIN.ts`` (``part="TRAIN"``) or ``_TEST.ts`` inside the installed sktime."""
    if part not in ("TRAIN", "TEST"):
        raise ValueError(f"part must be 'TRAIN' or 'TEST', got {part!r}")
    folder = package_data_dir("sktime", "datasets", "data", "JapaneseVowels", pin=VOWELS_PIN)
    return check_file(folder / f"JapaneseVowels_{part}.ts")


@functools.lru_cache(maxsize=2)
def read_vowels(part: str) -> tuple[tuple[Tensor, ...], Tensor]:
    """All series of a file as ``float32[T, 12]`` and their speaker ids 0..8 (file labels 1..9)."""
    series, labels = read_ts(vowels_file(part))
    ids = torch.tensor([int(lb) - 1 for lb in labels], dtype=torch.int64)
    if any(s.shape[1] != 12 for s in series) or int(ids.min()) < 0 or int(ids.max()) > 8:
        raise ValueError(f"{vowels_file(part)}: expected 12 features and labels 1..9")
    return tuple(torch.from_numpy(s.astype(np.float32)) for s in series), ids


class JapaneseVowels(Dataset[Item]):
    """Which of 9 speakers said the vowel: ``(float32[T, 12], {"labels": int64 0..8})``, T in 7..29.

    Splits: ``test`` = the 370 series of ``_TEST.ts``; of the 270 of ``_TRAIN.ts`` (30 per speaker, in
    file order), each speaker's last 5 are ``val`` (45) and the rest ``train`` (225).
    With ``normalize``, features are standardised with the per-feature mean / std of ``train``.
    """

    classes = tuple(f"speaker {k}" for k in range(1, 10))
    num_classes = 9

    def __init__(self, split: str = "train", normalize: bool = True) -> None:
        self.split = check_split(split)
        train_series, train_labels = read_vowels("TRAIN")
        in_train = _rank_within_class(train_labels) < 30 - VOWELS_PER_SPEAKER_VAL  # (270,) bool
        if split == "test":
            self.series, self.labels = list(read_vowels("TEST")[0]), read_vowels("TEST")[1]
        else:
            keep = in_train if split == "train" else ~in_train
            self.series = [s for s, k in zip(train_series, keep.tolist(), strict=True) if k]
            self.labels = train_labels[keep]
        self.mean, self.std = torch.zeros(12), torch.ones(12)
        if normalize:
            frames = torch.cat([s for s, k in zip(train_series, in_train.tolist(), strict=True) if k])
            self.mean, self.std = frames.mean(0), frames.std(0)  # (sum T, 12) -> (12,)

    def __len__(self) -> int:
        return len(self.series)

    def __getitem__(self, index: int) -> Item:
        if not -len(self) <= index < len(self):
            raise IndexError(f"series {index} out of range for {len(self)} series")
        index %= len(self)
        x = (self.series[index] - self.mean) / self.std  # (T, 12)
        return x, {"labels": self.labels[index].clone()}


def _rank_within_class(labels: Tensor) -> Tensor:
    """``rank[i]`` = how many earlier items share ``labels[i]`` (file order)."""
    seen: dict[int, int] = {}
    out = []
    for lb in labels.tolist():
        out.append(seen.get(lb, 0))
        seen[lb] = out[-1] + 1
    return torch.tensor(out)


# ----------------------------------------------------------------------------------------- sunspots
SUNSPOTS_PIN = "statsmodels==0.15.0"
# Inclusive ranges of *target* years per split (inputs are the W years before the target).
SUNSPOT_YEARS = {"train": (1700, 1929), "val": (1930, 1968), "test": (1969, 2008)}


def sunspots_file() -> Path:
    """``statsmodels/datasets/sunspots/sunspots.csv`` inside the installed statsmodels (not imported)."""
    folder = package_data_dir("statsmodels", "datasets", "sunspots", pin=SUNSPOTS_PIN)
    return check_file(folder / "sunspots.csv")


def read_sunspots(path: str | Path | None = None) -> tuple[Tensor, Tensor]:
    """``(years int64[N], yearly mean sunspot number float64[N])`` from a ``YEAR,SUNACTIVITY`` CSV.

    ``path`` defaults to :func:`sunspots_file`. ``ValueError`` for a malformed file or missing years.
    """
    path = check_file(Path(path)) if path is not None else sunspots_file()
    lines = path.read_text(encoding="utf-8").split()
    if not lines or lines[0].replace('"', "").upper() != "YEAR,SUNACTIVITY":
        raise ValueError(f"{path}: expected a YEAR,SUNACTIVITY header, got {lines[:1]}")
    try:
        rows = [(int(float(y)), float(v)) for y, v in (line.split(",") for line in lines[1:])]
    except ValueError as err:
        raise ValueError(f"{path}: malformed row ({err})") from None
    years = torch.tensor([r[0] for r in rows], dtype=torch.int64)
    values = torch.tensor([r[1] for r in rows], dtype=torch.float64)
    if len(rows) < 2 or bool((years[1:] - years[:-1] != 1).any()):
        raise ValueError(f"{path}: expected consecutive years, got {len(rows)} rows")
    if not bool(torch.isfinite(values).all()):
        raise ValueError(f"{path}: non-finite value in year {int(years[~torch.isfinite(values)][0])}")
    return years, values


class Sunspots(Dataset[Item]):
    """Past ``window`` yearly sunspot numbers -> the next: ``(float32[W, 1], {"value": float32[1], "year"})``.

    Chronological split by target year (:data:`SUNSPOT_YEARS`: train ..1929, val 1930-1968, test
    1969-2008); the first ``window`` years only serve as inputs. Values are standardised with the
    mean and std of the train years alone (``target_offset``, ``target_scale``): a value ``v`` in
    sunspot numbers is ``v * target_scale + target_offset``.
    """

    def __init__(self, split: str = "train", window: int = 20) -> None:
        self.split = check_split(split)
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be an int >= 1, got {window!r}")
        self.window = window
        years, values = read_sunspots()
        lo, hi = SUNSPOT_YEARS["train"]
        fit = values[(years >= lo) & (years <= hi)]
        self.target_offset, self.target_scale = float(fit.mean()), float(fit.std())
        self.values = ((values - self.target_offset) / self.target_scale).float()  # (N,)
        self.years = years
        lo, hi = SUNSPOT_YEARS[split]
        first = int(years[0]) + window
        self.target_index = [i for i, y in enumerate(years.tolist()) if max(lo, first) <= y <= hi]

    def __len__(self) -> int:
        return len(self.target_index)

    def __getitem__(self, index: int) -> Item:
        if not -len(self) <= index < len(self):
            raise IndexError(f"window {index} out of range for {len(self)} windows")
        t = self.target_index[index % len(self)]
        x = self.values[t - self.window : t].unsqueeze(1)  # (W,) -> (W, 1)
        return x, {"value": self.values[t : t + 1].clone(), "year": self.years[t].clone()}

    def to_units(self, x: Tensor) -> Tensor:
        """Standardised values -> sunspot numbers."""
        return x * self.target_scale + self.target_offset


# ------------------------------------------------------------------------------------ adding problem
ADDING_SIZES = {"train": 10_000, "val": 1_000, "test": 1_000}


class AddingProblem(Dataset[Item]):
    """The adding problem: ``(float32[T, 2], {"value": float32[1]})``.

    Channel 0 holds T values uniform in [0, 1); channel 1 marks two steps with 1, one drawn in the
    first half ``[0, T/2)`` and one in the second ``[T/2, T)`` (the variant of Arjovsky et al.
    2016 and Le et al. 2015 of Hochreiter & Schmidhuber's task). The target is the sum of the
    two marked values. Predicting the mean, 1, scores MSE = Var = 1/6 ~ 0.167.

    Args:
        split: seeds the items: item i is drawn from ``(seed, split, i)`` alone.
        length: T (>= 2; the classic hard setting is T >= 100).
        num_samples: items (default 10,000 train, 1,000 val / test).
        seed: base seed.
    """

    baseline_mse = 1.0 / 6.0

    def __init__(self, split: str = "train", length: int = 150, num_samples: int | None = None,
                 seed: int = 0) -> None:
        self.split = check_split(split)
        if not isinstance(length, int) or length < 2:
            raise ValueError(f"length must be an int >= 2, got {length!r}")
        num_samples = ADDING_SIZES[split] if num_samples is None else num_samples
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        self.length, self.num_samples, self.seed = length, num_samples, seed

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> Item:
        if not -len(self) <= index < len(self):
            raise IndexError(f"item {index} out of range for {len(self)} items")
        index %= len(self)
        rng = np.random.default_rng([self.seed, SPLITS.index(self.split), index])
        T, half = self.length, self.length // 2
        values = rng.random(T).astype(np.float32)
        first, second = int(rng.integers(0, half)), int(rng.integers(half, T))
        x = torch.zeros(T, 2)
        x[:, 0] = torch.from_numpy(values)
        x[first, 1] = x[second, 1] = 1.0
        return x, {"value": torch.tensor([values[first] + values[second]], dtype=torch.float32)}


# ------------------------------------------------------------------------------------ registry specs
def _no_arg(name: str, arg: str) -> None:
    if arg:
        raise ValueError(f"--data {name} takes no ':argument' (got {arg!r}); use --data-arg k=v")


def _spec(name: str, cls: Callable[..., Dataset]) -> Callable[..., Dataset]:
    def build(split: str, arg: str = "", **kw: Any) -> Dataset:
        _no_arg(name, arg)
        return cls(split, **kw)

    build.__name__ = f"build_{name.replace('-', '_')}"
    build.__doc__ = f"The ``--data {name}`` spec: ``{cls.__name__}(split, **kw)``."
    return build


SPECS: dict[str, Callable[..., Dataset]] = {
    "shakespeare": _spec("shakespeare", Shakespeare),
    "japanese-vowels": _spec("japanese-vowels", JapaneseVowels),
    "sunspots": _spec("sunspots", Sunspots),
    "adding": _spec("adding", AddingProblem),
}

__all__ = [
    "SPECS", "SUNSPOT_YEARS", "AddingProblem", "JapaneseVowels", "Shakespeare", "Sunspots",
    "pad_collate", "pad_sequences", "read_sunspots", "read_ts", "read_vowels", "sunspots_file", "vowels_file",
]  # fmt: skip
