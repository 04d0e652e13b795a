"""Checks run when a dataset on disk is opened, before any training step (private).

Image files are checked from their headers only (:func:`~structpred.data.images.image_size`):
present, readable, and of the size the annotations say. One pass, no pixel decoding, so a broken
layout fails at construction, not in epoch 3.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..datasets import DetectionFiles
from ..formats._common import read_text_bounded
from ..images import image_size

logger = logging.getLogger("structpred.data.layouts")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def check_image_files(dataset: DetectionFiles, annotations: str) -> DetectionFiles:
    """Raise ``ValueError`` unless every image of ``dataset`` exists, has a readable header and
    the size its record says (``annotations`` names the annotation file(s) in the message)."""
    for i, record in enumerate(dataset.records):
        path = dataset.image_path(i)
        if not path.is_file():
            raise ValueError(f"{annotations}: image {record.file_name!r} not found ({path})")
        height, width = image_size(path)
        if (height, width) != (record.height, record.width):
            raise ValueError(
                f"{path}: image is {height} x {width} (H x W) but {annotations} says "
                f"{record.height} x {record.width}"
            )
    logger.info("checked %d image headers against %s", len(dataset.records), annotations)
    return dataset


def find_image(folder: Path, stem: str) -> Path | None:
    """``folder/<stem>.<suffix>`` for the first image suffix present (any case), or None."""
    for suffix in IMAGE_SUFFIXES:
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def read_lines(path: Path) -> list[str]:
    """Non-empty stripped lines of a small text file; ``ValueError`` naming it if unreadable."""
    text = read_text_bounded(path, "text file")  # bounded, UTF-8 (BOM dropped), no NUL bytes
    return [line.strip() for line in text.splitlines() if line.strip()]
