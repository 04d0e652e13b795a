"""Validation shared by the annotation readers and writers (private).

Convention for every reader: a box is checked against its image of ``W x H`` pixels.
Coordinates may overshoot ``[0, W] x [0, H]`` by at most :data:`BOX_TOLERANCE` (1 px, the usual
off-by-one of 1-based or inclusive pixel conventions) and are then clipped into the image; a
larger overshoot, a non-finite coordinate or a non-positive width/height is an error. Writers
are strict: what they write lies inside the image, so a reader gives the same boxes back.

``on_error="raise"`` raises ``ValueError``; ``on_error="skip"`` logs a warning naming the bad
record or object and goes on without it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .. import limits
from ..records import Categories, ImageRecord

logger = logging.getLogger("structpred.data.formats")

ON_ERROR = ("raise", "skip")
BOX_TOLERANCE = 1.0  # pixels a read box may overshoot the image before it is an error
_WRITE_SLACK = 1e-3  # pixels of float noise a written box may overshoot (then it is clipped)


def check_on_error(on_error: str) -> None:
    """Raise unless ``on_error`` is ``'raise'`` or ``'skip'``."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")


def report(problem: str, on_error: str, err: BaseException | None = None) -> None:
    """Raise ``ValueError(problem)`` (``from err``) or, when skipping, log it as a warning."""
    if on_error == "raise":
        raise ValueError(problem) from err
    logger.warning("skipped: %s", problem)


def read_bytes_bounded(path: Path, what: str, limit: str = "max_text_file_bytes") -> bytes:
    """The bytes of ``path`` (a ``what`` file), its size checked against ``limit`` before reading.

    Raises ``ValueError`` naming the file when it is missing, not a regular file, unreadable or
    too large (:class:`~structpred.data.limits.LimitError`).
    """
    try:
        if not path.is_file():
            raise ValueError(f"{path}: {what} not found" + (" (a directory)" if path.is_dir() else ""))
        limits.check(limit, path.stat().st_size, path, f"size of the {what} (bytes)")
        with path.open("rb") as f:
            data = f.read(getattr(limits.current(), limit) + 1)  # a file that grew since stat()
    except OSError as err:
        raise ValueError(f"{path}: cannot read {what}: {err.strerror or err}") from err
    limits.check(limit, len(data), path, f"size of the {what} (bytes)")
    return data


def decode_text(data: bytes, path: Path, what: str) -> str:
    """UTF-8 text (a leading byte-order mark dropped); ``ValueError`` naming the file and the byte
    offset on other encodings, and on NUL bytes (a binary file, or UTF-16)."""
    skip = 3 if data.startswith(b"\xef\xbb\xbf") else 0  # a byte-order mark, as Notepad writes
    try:
        text = data[skip:].decode("utf-8")
    except UnicodeDecodeError as err:
        at = err.start + skip  # an offset in the file, BOM included
        raise ValueError(
            f"{path}: {what} is not UTF-8 text (byte {at}: {data[at : at + 1]!r}); save it as UTF-8"
        ) from None
    if "\x00" in text:
        at = text.index(chr(0))
        raise ValueError(f"{path}: {what} holds a NUL byte at character {at} (binary, or UTF-16?)")
    return text


def read_text_bounded(path: Path, what: str, limit: str = "max_text_file_bytes") -> str:
    """:func:`read_bytes_bounded` then :func:`decode_text`."""
    return decode_text(read_bytes_bounded(path, what, limit), path, what)


def as_number(value: object, what: str) -> float:
    """A finite JSON/XML/text number as float; ``ValueError`` naming ``what`` otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number, got {value!r}")
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ValueError(f"{what} must be a number, got {value!r}") from None
    elif isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # a 400-digit JSON integer
            raise ValueError(f"{what} is too large, got an integer of {len(str(value))} digits") from None
    else:
        raise ValueError(f"{what} must be a number, got {value!r}")
    if not math.isfinite(number):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return number


def as_int(value: object, what: str) -> int:
    """An integral number (``3``, ``3.0``, ``"3"``) as int; ``ValueError`` otherwise."""
    number = as_number(value, what)
    if not number.is_integer():
        raise ValueError(f"{what} must be an integer, got {value!r}")
    return int(number)


def checked_box(box: Sequence[float], height: int, width: int) -> list[float]:
    """Validate one xyxy box (absolute pixels) in an image of ``height x width``.

    Returns the box clipped to ``[0, W] x [0, H]``. Raises ``ValueError`` (without a file name:
    the caller adds where) on non-finite coordinates, ``x2 <= x1`` or ``y2 <= y1``, or an
    overshoot of more than :data:`BOX_TOLERANCE` pixels.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    shown = [round(v, 4) for v in (x1, y1, x2, y2)]
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise ValueError(f"box {shown} (xyxy) has a non-finite coordinate")
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"box {shown} (xyxy) has x2 <= x1 or y2 <= y1 (non-positive width or height)")
    tol = BOX_TOLERANCE
    if x1 < -tol or y1 < -tol or x2 > width + tol or y2 > height + tol:
        raise ValueError(
            f"box {shown} (xyxy) lies outside the {width} x {height} (W x H) image by more than {tol:g} px"
        )
    clipped = [min(max(x1, 0.0), width), min(max(y1, 0.0), height), min(x2, width), min(y2, height)]
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        raise ValueError(f"box {shown} (xyxy) lies outside the {width} x {height} (W x H) image")
    return clipped


def check_categories(categories: object, where: str) -> Categories:
    """Raise unless ``categories`` is a non-empty :class:`Categories`."""
    if not isinstance(categories, Categories):
        raise ValueError(f"{where}: categories must be a Categories, got {type(categories).__name__}")
    if len(categories) == 0:
        raise ValueError(f"{where}: categories is empty")
    return categories


def check_record_for_writing(record: ImageRecord, categories: Categories, where: str) -> None:
    """Raise ``ValueError`` naming ``where`` unless ``record`` can be written faithfully.

    Checks the image size, labels in ``1..K``, and boxes that are finite, of positive size and
    inside the image (up to a few thousandths of a pixel of float noise).
    """
    if not isinstance(record, ImageRecord):
        raise ValueError(f"{where}: expected an ImageRecord, got {type(record).__name__}")
    if record.height <= 0 or record.width <= 0:
        raise ValueError(f"{where}: image size must be positive, got {record.height} x {record.width}")
    labels = record.labels.tolist()
    for k, label in enumerate(labels):
        if not 1 <= label <= len(categories):
            raise ValueError(f"{where}: object {k} has label {label}, outside 1..{len(categories)}")
    boxes = record.boxes.double()
    for k, box in enumerate(boxes.tolist()):
        x1, y1, x2, y2 = box
        if not all(math.isfinite(v) for v in box) or x2 <= x1 or y2 <= y1:
            raise ValueError(f"{where}: object {k} has an invalid box {box} (xyxy)")
        s = _WRITE_SLACK
        if x1 < -s or y1 < -s or x2 > record.width + s or y2 > record.height + s:
            raise ValueError(
                f"{where}: object {k} box {box} (xyxy) is outside the "
                f"{record.width} x {record.height} (W x H) image; clip boxes before writing"
            )


def clipped_boxes(record: ImageRecord) -> list[list[float]]:
    """The record's boxes as float64 lists, clipped to the image (removes float noise only)."""
    boxes = record.boxes.double().clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0.0, float(record.width))
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0.0, float(record.height))
    return boxes.tolist()


def float32_text(value: float) -> str:
    """Shortest decimal text that reads back as the same float32 (``203.0 -> '203'``)."""
    return np.format_float_positional(np.float32(value), trim="-")


def flags(values: list[int], n: int) -> torch.Tensor:
    """Per-object 0/1 flags as ``uint8[n]``."""
    assert len(values) == n
    return torch.tensor(values, dtype=torch.uint8).reshape(n)
