"""Where ``structpred predict`` writes the outputs of one input file (one rule for every task)."""

from __future__ import annotations

from pathlib import Path


def output_png(out: Path, index: int, source: Path, suffix: str = "") -> Path:
    """The PNG written under ``out`` for input number ``index`` read from ``source``."""
    return out / f"{source.stem}{suffix}.png"
