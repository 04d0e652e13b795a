"""``structpred predict``: a trained model on input files -> its task's outputs under ``out_dir``.

What is written depends on the model's task (:meth:`structpred.tasks.base.Task.predict_files`):
drawn PNGs and a COCO results json for detection and instance segmentation, label-map PNGs for
semantic segmentation, a json of classes for classification.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from ..tasks import task_of
from ..tasks.base import PredictJob
from ..tasks.outputs import expand_inputs, next_run_folder, output_stems
from .run import load_model

logger = logging.getLogger(__name__)


def predict_images(
    checkpoint: str | Path,
    images: Sequence[str | Path],
    out_dir: str | Path | None = None,
    score_threshold: float = 0.5,
    device: str | None = None,
    batch_size: int = 4,
) -> Path:
    """Run the checkpoint's model on ``images`` (files, folders, globs); returns the path of
    ``predictions.json``.

    Outputs go under ``out_dir`` (None: a new numbered folder under ``out/predict``), mirroring
    the inputs' sub-folders (:mod:`structpred.tasks.outputs`). Raises ``ValueError`` for no
    images, a missing or unreadable image (naming it), an ``out_dir`` that would put outputs
    beside the inputs, or a task that does not read image files.
    """
    if not images:
        raise ValueError("no images given to predict on")
    if not 0.0 <= score_threshold <= 1.0:
        raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
    paths = expand_inputs(images)
    out = Path(out_dir) if out_dir is not None else next_run_folder(Path("out/predict"))
    stems = output_stems(paths, out)  # checked before the model loads
    model, config = load_model(checkpoint)
    task = task_of(config.model_name)
    model.to(torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")))
    out.mkdir(parents=True, exist_ok=True)
    job = PredictJob(paths, out, config.class_names, config.category_ids, score_threshold, batch_size, stems)
    return task.predict_files(model, job)
