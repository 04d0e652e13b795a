"""MOTChallenge text files (``gt.txt``, tracker output): one box per row, read into arrays.

Shape shorthand: N rows, K extra columns (0..4).

Row layout (MOT15 2-D / MOT16 / MOT17 / MOT20, as ``motmetrics.io.loadtxt(fmt="mot15-2D" |
"mot16")`` reads them)::

    frame, id, x, y, w, h[, conf[, x3d, y3d, z3d]]        MOT15 (x3d, y3d, z3d = -1 in 2-D)
    frame, id, x, y, w, h[, conf[, class[, visibility]]]  MOT16/17/20 ground truth

Conventions followed:

* Fields are separated by commas and/or white space (motmetrics' ``\\s+|\\t+|,``); one trailing
  comma is allowed; blank lines are skipped. 6 to 10 columns; columns past ``conf`` are kept as
  they are in :attr:`MotRows.extra` (their meaning differs between MOT15 and MOT16).
* ``frame`` and ``id`` are integers (``3`` or ``3.0``); ``x, y`` is the top-left corner in the
  files' 1-based pixels, ``w, h >= 0``; every field finite, box fields within 1e12 px.
  Coordinates are kept as written: the metrics only use differences, so motmetrics'
  ``x - 1, y - 1`` shift changes nothing.
* A ``(frame, id)`` pair appears once (a tracker cannot put one identity twice in a frame).
* ``conf`` is 1.0 when the column is absent. motmetrics keeps rows with ``conf >= min_confidence``
  (default -1: every row, also MOT16/17 ground truth's ``conf = 0`` "do not evaluate" rows; pass
  ``min_confidence=1`` to drop those, as motmetrics' docs advise for MOT ground truth). Unlike
  motmetrics we keep 6-column files (motmetrics reads their ``conf`` as NaN and drops every row).

Bad input raises a one-line ``ValueError`` naming the file (or ``rows`` for an array), the line
(or row) and the column. Limits: the file's size (``max_text_file_bytes``) and the rows of one
frame (``max_annotations_per_image``), see :mod:`structpred.data.limits`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import limits
from ._common import read_text_bounded

__all__ = ["MOT_COLUMNS", "MotRows", "frame_groups", "read_mot"]

# names of the columns, in file order (columns 8-10 are MOT15's x3d, y3d, z3d or MOT16's class, visibility)
MOT_COLUMNS = ("frame", "id", "x", "y", "w", "h", "conf", "col8", "col9", "col10")
_MIN_COLUMNS, _MAX_COLUMNS = 6, len(MOT_COLUMNS)
_MAX_INT = 2**53  # frame / id magnitude float64 holds exactly
_MAX_COORD = 1e12  # px: |x|, |y|, w, h beyond are an error (x + w and areas stay finite in float64)
_SPLIT = re.compile(r"\s*,\s*|\s+")
_CHUNK = 65_536  # lines parsed together (bounds the memory of a large file's fast path)


@dataclass(frozen=True)
class MotRows:
    """MOTChallenge rows in file order.

    frames (int64[N]), ids (int64[N]), boxes (float64[N, 4], x, y, w, h in the file's pixels),
    conf (float64[N]), extra (float64[N, K], the columns after ``conf``), source (file or "rows").
    """

    frames: np.ndarray
    ids: np.ndarray
    boxes: np.ndarray
    conf: np.ndarray
    extra: np.ndarray
    source: str

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def select(self, keep: np.ndarray) -> MotRows:
        """The rows where the boolean mask ``keep`` (bool[N]) is True, in order."""
        return MotRows(
            self.frames[keep],
            self.ids[keep],
            self.boxes[keep],
            self.conf[keep],
            self.extra[keep],
            self.source,
        )


def _split(line: str) -> list[str]:
    fields = _SPLIT.split(line.strip())
    if len(fields) > 1 and fields[-1] == "":
        fields.pop()  # one trailing comma, as some writers leave
    return fields


def _parse_slow(lines: list[tuple[int, str]], where: str) -> np.ndarray:
    """Field by field, to name the first bad line and column."""
    width = None
    out = []
    for number, line in lines:
        fields = _split(line)
        if len(fields) < _MIN_COLUMNS:
            missing = ", ".join(MOT_COLUMNS[len(fields) : _MIN_COLUMNS])
            raise ValueError(f"{where} line {number}: {len(fields)} columns, missing {missing}")
        if len(fields) > _MAX_COLUMNS:
            raise ValueError(f"{where} line {number}: {len(fields)} columns, at most {_MAX_COLUMNS}")
        if width is not None and len(fields) != width:
            raise ValueError(f"{where} line {number}: {len(fields)} columns, the lines before have {width}")
        width = len(fields)
        row = []
        for column, text in zip(MOT_COLUMNS, fields, strict=False):
            try:
                row.append(float(text))
            except ValueError:
                raise ValueError(
                    f"{where} line {number} column {column}: not a number: {text[:40]!r}"
                ) from None
        out.append(row)
    return np.asarray(out, dtype=np.float64)


def _parse_text(text: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    """-> (values float64[N, C], line numbers int64[N]); the fast path parses a chunk at once."""
    numbered = [(i + 1, line) for i, line in enumerate(text.splitlines()) if line.strip()]
    chunks, width = [], None
    for start in range(0, len(numbered), _CHUNK):
        part = numbered[start : start + _CHUNK]
        try:
            fields = [_split(line) for _, line in part]
            widths = {len(f) for f in fields}
            if len(widths) != 1 or (width is not None and widths != {width}):
                raise ValueError("ragged")
            (w,) = widths
            if not _MIN_COLUMNS <= w <= _MAX_COLUMNS:
                raise ValueError("columns")
            values = np.array(fields, dtype=np.float64)  # (N, C); raises on any non-number
            width = w
        except ValueError:
            values = _parse_slow(numbered[: start + len(part)], where)[start:]  # names the bad field
        chunks.append(values)
    lines = np.array([n for n, _ in numbered], dtype=np.int64)
    if not chunks:
        return np.zeros((0, _MIN_COLUMNS)), lines
    return np.concatenate(chunks), lines


def _from_array(rows: object) -> np.ndarray:
    try:
        values = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"rows: expected a numeric array [N, 6..10], {' '.join(str(err).split())}") from None
    if values.ndim == 1 and values.size == 0:
        values = values.reshape(0, _MIN_COLUMNS)
    if values.ndim != 2 or not _MIN_COLUMNS <= values.shape[1] <= _MAX_COLUMNS:
        raise ValueError(
            f"rows: expected an array [N, 6..10] (frame, id, x, y, w, h, ...), got {values.shape}"
        )
    return values


def _validate(values: np.ndarray, lines: np.ndarray | None, where: str, unit: str) -> None:
    """Finite, integer frame / id, w, h >= 0, unique (frame, id), rows per frame within limits."""

    def at(i: int, column: int) -> str:
        row = int(lines[i]) if lines is not None else i
        return f"{where} {unit} {row} column {MOT_COLUMNS[column]}"

    bad = ~np.isfinite(values)
    if bad.any():
        i, c = np.argwhere(bad)[0]
        raise ValueError(f"{at(i, c)}: must be finite, got {float(values[i, c])}")
    for c in (0, 1):
        col = values[:, c]
        bad = (col != np.round(col)) | (np.abs(col) > _MAX_INT)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"{at(i, c)}: must be an integer, got {float(col[i])!r}")
    for c in (4, 5):
        bad = values[:, c] < 0
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"{at(i, c)}: size must be >= 0, got {float(values[i, c])!r}")
    bad = np.abs(values[:, 2:6]) > _MAX_COORD
    if bad.any():
        i, c = np.argwhere(bad)[0]
        raise ValueError(f"{at(i, c + 2)}: beyond {_MAX_COORD:g} px, got {float(values[i, c + 2])!r}")
    if len(values) == 0:
        return
    # (N, 2) (frame, id) -> rows sorted by frame then id, file order kept among equals
    key = values[:, :2].astype(np.int64)
    order = np.lexsort((key[:, 1], key[:, 0]))
    same = np.all(key[order[1:]] == key[order[:-1]], axis=1)
    if same.any():
        k = int(np.argmax(same))
        first, second = sorted((int(order[k]), int(order[k + 1])))
        first_at = int(lines[first]) if lines is not None else first
        raise ValueError(
            f"{at(second, 1)}: (frame {key[second, 0]}, id {key[second, 1]}) repeats {unit} {first_at}"
        )
    frames, counts = np.unique(key[:, 0], return_counts=True)
    busiest = int(np.argmax(counts))
    limits.check("max_annotations_per_image", int(counts[busiest]), where, f"rows of frame {frames[busiest]}")


def _rows(values: np.ndarray, source: str, min_confidence: float | None) -> MotRows:
    N, C = values.shape
    conf = values[:, 6].copy() if C > 6 else np.ones(N)
    extra = values[:, 7:].copy() if C > 7 else np.zeros((N, 0))
    rows = MotRows(
        frames=values[:, 0].astype(np.int64),
        ids=values[:, 1].astype(np.int64),
        boxes=np.ascontiguousarray(values[:, 2:6]),
        conf=conf,
        extra=extra,
        source=source,
    )
    if min_confidence is not None:
        rows = rows.select(rows.conf >= min_confidence)
    return rows


def read_mot(
    source: str | os.PathLike[str] | MotRows | np.ndarray | list[list[float]],
    min_confidence: float | None = None,
) -> MotRows:
    """MOTChallenge rows from a file (``str`` / ``Path``), an array ``[N, 6..10]`` or :class:`MotRows`.

    ``min_confidence``: keep the rows with ``conf >= min_confidence`` (None keeps all, as
    motmetrics' default -1 does). Raises ``ValueError`` naming the file / ``rows``, line / row
    and column of the first bad field (see the module docstring for the rules).
    """
    if min_confidence is not None and not np.isfinite(min_confidence):
        raise ValueError(f"min_confidence must be finite or None, got {min_confidence!r}")
    if isinstance(source, MotRows):
        return source if min_confidence is None else source.select(source.conf >= min_confidence)
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        values, lines = _parse_text(read_text_bounded(path, "MOT file"), str(path))
        _validate(values, lines, str(path), "line")
        return _rows(values, str(path), min_confidence)
    values = _from_array(source)
    _validate(values, None, "rows", "row")
    return _rows(values, "rows", min_confidence)


def frame_groups(
    gt: MotRows, hyp: MotRows
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows of two files grouped by frame, file order kept inside a frame.

    Returns (frames int64[F] the sorted union, gt order int64[N], gt bounds int64[F + 1], hyp
    order int64[M], hyp bounds int64[F + 1]): frame ``frames[f]``'s gt rows are
    ``gt_order[gt_bounds[f] : gt_bounds[f + 1]]``.
    """
    frames = np.union1d(gt.frames, hyp.frames)
    gt_order = np.argsort(gt.frames, kind="stable")
    hyp_order = np.argsort(hyp.frames, kind="stable")
    gt_bounds = np.append(np.searchsorted(gt.frames[gt_order], frames), len(gt_order))
    hyp_bounds = np.append(np.searchsorted(hyp.frames[hyp_order], frames), len(hyp_order))
    return frames, gt_order, gt_bounds, hyp_order, hyp_bounds
