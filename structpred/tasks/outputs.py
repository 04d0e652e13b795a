"""Where ``structpred predict`` reads its inputs and writes its outputs (one rule for every task).

* Inputs: files, folders (every image and video below them, recursively) and glob patterns,
  expanded in the order given, each file once.
* Outputs mirror the inputs' sub-folders below their common folder, under ``--out``: two inputs
  with the same name in different folders get different outputs, and an output never lands
  beside the inputs or over one of them (that is refused with a ``ValueError``). A video's
  stem is a folder of frames (``<stem>/frame_000123.png``).
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .video_frames import VIDEO_SUFFIXES, is_video

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
INPUT_SUFFIXES = IMAGE_SUFFIXES + VIDEO_SUFFIXES


def expand_inputs(specs: Sequence[str | Path]) -> list[Path]:
    """Files, folders (their images and videos, recursively, sorted) and globs -> unique files, in order."""
    found: list[Path] = []
    for spec in specs:
        text = str(spec)
        path = Path(text)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in INPUT_SUFFIXES)
            if not files:
                raise ValueError(f"{text}: the folder holds no image or video ({', '.join(INPUT_SUFFIXES)})")
        elif path.is_file():
            files = [path]
        elif any(c in text for c in "*?["):
            files = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
            if not files:
                raise ValueError(f"{text}: the pattern matches no file")
        else:
            raise ValueError(f"{text}: no such file or folder")
        found.extend(files)
    seen: set[Path] = set()
    unique = []
    for f in found:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    if not unique:
        raise ValueError("no input files given")
    return unique


def output_stems(inputs: Sequence[Path], out: Path) -> list[Path]:
    """Per input, its output path under ``out`` without suffix: the input's path below the inputs'
    common folder, suffix dropped (kept in the name when two inputs would collide, ``a_jpg``).

    Raises ``ValueError`` when an output would be written in a folder that holds inputs (for a
    video: its folder of frames, or the folder holding that one).
    """
    resolved = [p.resolve() for p in inputs]
    root = Path(os.path.commonpath([p.parent for p in resolved]))
    relative = [p.relative_to(root) for p in resolved]
    plain = [r.with_suffix("") for r in relative]
    stems = [
        r.parent / f"{r.stem}_{r.suffix.lstrip('.')}" if plain.count(s) > 1 else s
        for r, s in zip(relative, plain, strict=True)
    ]
    input_dirs = {p.parent for p in resolved}
    out = out.resolve()
    for source, stem in zip(inputs, stems, strict=True):
        folders = [(out / stem).parent, out / stem] if is_video(source) else [(out / stem).parent]
        for folder in folders:
            if folder in input_dirs:
                raise ValueError(
                    f"--out {out} would write the outputs of {source} beside the inputs in "
                    f"{folder}; choose a folder outside the inputs' folders"
                )
    return stems


def next_run_folder(base: Path) -> Path:
    """``base/001``, ``base/002``, ...: the first that does not exist yet."""
    n = 1
    while (base / f"{n:03d}").exists():
        n += 1
    return base / f"{n:03d}"


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as json atomically (a temporary beside it, then a rename: a reader never
    sees half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value), encoding="utf-8")
    os.replace(tmp, path)
