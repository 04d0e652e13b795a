"""Fuzz target of the MOTChallenge reader (:mod:`structpred.data.formats.mot`): a ``gt.txt`` /
tracker file read by ``read_mot`` and scored by ``mot_metrics`` against a fixed ground truth.

The same oracle as :mod:`tests.fuzz.targets` (a contract-keeping result, or a one-line
``ValueError`` naming the file). The contract: int64 frames and ids, unique (frame, id),
finite float64 boxes with ``w, h >= 0``, finite ``conf``; ``mot_metrics`` of the rows against
themselves is perfect (MOTA 1, IDF1 1, no switches) when there are rows, and against the seed
ground truth gives counts that add up (matches + switches + misses = gt rows) and finite or NaN
scores. :data:`MOT_TARGETS` joins ``targets.TARGETS`` and :data:`CORPUS_FILES`
``make_corpus.EXTRA``; ``python -m tests.fuzz.targets_mot`` writes the seeds.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tests.fuzz import mutate
from tests.fuzz.targets import CORPUS, Target, WrongResult, _direct

TUD_HEAD = (
    "1,1,399,182,121,229,1,-1,-1,-1\n1,2,282,201,92,184,1,-1,-1,-1\n1,3,63,153,82,288,1,-1,-1,-1\n"
    "2,1,398,181,121,229,1,-1,-1,-1\n2,2,280,201,92,184,1,-1,-1,-1\n3,1,398,180,121,229,1,-1,-1,-1\n"
)
TRACKER = "1,3,113.84,274.5,57.307,130.05,-1,-1,-1,-1\n1,6,273.05,203.83,77.366,175.56,-1,-1,-1,-1\n"
MOT16_GT = "1,1,912,484,97,109,0,7,1\n1,2,1338,418,167,379,1,1,1\n2,2,1340,418,167,379,1,1,0.86\n"


def mutate_mot(seed: bytes, rnd: random.Random) -> bytes:
    """A field swapped for a hostile token, columns dropped or added, an id or a whole line
    repeated (duplicates), many lines or frames; else byte mutations."""
    lines = seed.decode("utf-8", "replace").splitlines() or ["1,1,0,0,5,5"]
    i = rnd.randrange(len(lines))
    sep = "," if "," in lines[i] else " "
    fields = lines[i].split(sep)
    pick = rnd.randrange(7)
    if pick == 0:
        tokens = mutate.HOSTILE_NUMBERS + ["-2", "1.5", "", "id", "1e12", "1e13", "9007199254740993", "-0"]
        fields[rnd.randrange(len(fields))] = rnd.choice(tokens)
        lines[i] = sep.join(fields)
    elif pick == 1:
        lines[i] = sep.join(fields[: rnd.randrange(len(fields) + 1)] + ["1"] * rnd.choice([0, 1, 4, 5]))
    elif pick == 2:
        lines.append(lines[i])  # a repeated (frame, id)
    elif pick == 3:
        lines *= rnd.choice([2, 100, 20_000])
    elif pick == 4:  # many frames / ids: every line a new frame and identity
        lines = [
            f"{k + 1},{rnd.randrange(10 ** rnd.randrange(1, 15))},{k % 97},3,8,9"
            for k in range(rnd.choice([10, 5000]))
        ]
    elif pick == 5:  # one crowded frame
        lines = [f"1,{k},{k % 50},{k % 7},20,30" for k in range(rnd.choice([50, 300]))]
    else:
        return mutate.mutate_bytes(seed, rnd)
    return "\n".join(lines).encode()[: mutate.MAX_OUTPUT]


def _read_mot(path: Path) -> None:
    from structpred.data.formats.mot import read_mot
    from structpred.metrics.mot import mot_metrics

    rows = read_mot(path)
    N = len(rows)
    if rows.frames.dtype != np.int64 or rows.ids.dtype != np.int64 or rows.boxes.shape != (N, 4):
        raise WrongResult(f"{path}: rows {rows.frames.dtype} {rows.ids.dtype} {rows.boxes.shape}")
    if not (
        np.isfinite(rows.boxes).all() and np.isfinite(rows.conf).all() and (rows.boxes[:, 2:] >= 0).all()
    ):
        raise WrongResult(f"{path}: a non-finite or negative-size box was accepted")
    if len({(int(f), int(i)) for f, i in zip(rows.frames, rows.ids, strict=True)}) != N:
        raise WrongResult(f"{path}: a repeated (frame, id) was accepted")
    if N and N <= 5000:
        self_score = mot_metrics(rows, rows)
        if (self_score["mota"], self_score["idf1"], self_score["num_switches"]) != (1.0, 1.0, 0):
            x, y, w, h = rows.boxes.T
            if (
                (x + w > x) & (y + h > y)
            ).all():  # an empty box (in float64) overlaps nothing, itself included
                raise WrongResult(f"{path}: scored against itself: {self_score}")
    gt = read_mot(np.loadtxt(TUD_HEAD.splitlines(), delimiter=","))
    score = mot_metrics(gt, rows) if N <= 5000 else None
    if score is not None:
        if score["num_matches"] + score["num_switches"] + score["num_misses"] != len(gt):
            raise WrongResult(f"{path}: matches + switches + misses != {len(gt)}: {score}")
        for key in ("mota", "motp", "idf1", "hota", "deta", "assa"):
            if not (math.isnan(score[key]) or math.isfinite(score[key])):
                raise WrongResult(f"{path}: {key} = {score[key]}")


MOT_TARGETS: list[Target] = [Target("mot_txt", "mot", mutate_mot, _direct(".txt", _read_mot))]


def _mot_seeds() -> dict[str, bytes]:
    return {
        "tud_gt.txt": TUD_HEAD.encode(),
        "tracker.txt": TRACKER.encode(),
        "mot16_gt.txt": MOT16_GT.encode(),
        "spaces.txt": b"1 1 10 20 30 40\n1 2 50 20 30 40\n2 1 12 20 30 40\n",
        "empty.txt": b"",
    }


CORPUS_FILES: dict[str, Callable[[], dict[str, bytes]]] = {"mot_txt": _mot_seeds}


def write_corpus() -> None:
    """Write ``tests/fuzz/corpus/mot_txt/``."""
    for name, make in CORPUS_FILES.items():
        folder = CORPUS / name
        folder.mkdir(parents=True, exist_ok=True)
        for file, data in make().items():
            (folder / file).write_bytes(data)


if __name__ == "__main__":
    write_corpus()
