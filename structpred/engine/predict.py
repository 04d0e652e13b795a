"""``structpred predict``: a trained model on images, folders, globs, videos or a dataset's split
-> its task's outputs under ``out_dir``.

What is written depends on the model's task (:meth:`structpred.tasks.base.Task.predict_batch`,
written out by :mod:`structpred.tasks.predict_loop`): drawn PNGs and a COCO results json for
detection and instance segmentation, label-map PNGs for semantic segmentation, a json of classes
for classification; per frame for a video. With a COCO split (``data="coco:DIR"``) or a COCO
json naming the images (``coco_json``), the results carry the data's own image and category ids
(:mod:`structpred.tasks.coco_ids`), so pycocotools scores them unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..data.registry import build_dataset
from ..tasks import task_of
from ..tasks.base import PredictJob
from ..tasks.coco_ids import checked_category_ids, image_ids_by_file_name
from ..tasks.depth import check_calibration
from ..tasks.outputs import expand_inputs, next_run_folder, output_stems
from ..tasks.predict_loop import probe_inputs
from ..tasks.video_frames import is_video
from .run import image_size_rule, load_model

logger = logging.getLogger(__name__)


def _image_files(dataset: Any) -> tuple[list[Path], list[int]] | None:
    """The image file and image id of each item of ``dataset`` (a dataset of image files with
    ``records`` and ``image_path``, possibly inside views that keep ``base`` and ``indices``);
    None for other datasets. ``vars`` is read, not attributes: views forward those to the base."""
    indices: list[int] | None = None
    while "records" not in vars(dataset) or not hasattr(dataset, "image_path"):
        own = vars(dataset)
        base = own.get("base", own.get("dataset"))
        if base is None:
            return None
        if isinstance(own.get("indices"), Sequence):  # a view of some items of its base
            view = [int(i) for i in own["indices"]]
            indices = view if indices is None else [view[i] for i in indices]
        dataset = base
    chosen = range(len(dataset.records)) if indices is None else indices
    return [Path(dataset.image_path(i)) for i in chosen], [int(dataset.records[i].image_id) for i in chosen]


def _dataset_inputs(data: str, split: str, data_kwargs: dict[str, Any]) -> tuple[list[Path], list[int], Any]:
    """The image files of ``data``'s ``split``, their image ids and the category table."""
    dataset = build_dataset(data, split, **data_kwargs)
    files = _image_files(dataset)
    if files is None:
        raise ValueError(
            f"--data {data}: not a dataset of image files with records (predict reads coco:, voc: or "
            "yolo: data; give the image files instead)"
        )
    if not files[0]:
        raise ValueError(f"--data {data}: the {split!r} split holds no image")
    return files[0], files[1], getattr(dataset, "categories", None)


def predict_images(
    checkpoint: str | Path,
    images: Sequence[str | Path],
    out_dir: str | Path | None = None,
    score_threshold: float = 0.5,
    device: str | None = None,
    batch_size: int = 4,
    *,
    data: str | None = None,
    split: str = "val",
    data_kwargs: dict[str, Any] | None = None,
    coco_json: str | Path | None = None,
    video_out: bool = False,
    progress: bool = True,
    best: bool = False,
    calib: tuple[float, float, float] | str | None = None,
    raw_weights: bool = False,
) -> Path:
    """Run the checkpoint's model on ``images`` (files, folders, globs; images and videos) or on
    the images of ``data``'s ``split``; returns the path of ``predictions.json``.

    Outputs go under ``out_dir`` (None: a new numbered folder under ``out/predict``), mirroring
    the inputs' sub-folders (:mod:`structpred.tasks.outputs`). ``coco_json`` maps the image
    files to that json's image ids by file name; ``best`` takes the run directory's best
    checkpoint instead of its last; ``calib`` = (focal px, baseline m, doffs px) makes the depth
    tasks write depth in metres beside the disparity; the checkpoint's weight EMA is used when it
    holds one (logged), its raw weights with ``raw_weights``. Raises ``ValueError`` — before the model loads
    for the inputs — for no or unreadable inputs (naming the file), an ``out_dir`` that would
    put outputs beside the inputs, categories that disagree with the checkpoint's, or a task
    that does not read images.
    """
    if not 0.0 <= score_threshold <= 1.0:
        raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    checked_calib = check_calibration(calib) if calib is not None else None
    categories, where = None, ""
    image_ids: list[int] = []
    if data is not None:
        if images or coco_json is not None:
            raise ValueError(
                "give either --data (a dataset's split) or input files (with --coco-json), not both"
            )
        paths, image_ids, categories = _dataset_inputs(data, split, data_kwargs or {})
        where = f"--data {data}"
    else:
        if not images:
            raise ValueError("no images given to predict on (give files, folders, globs or --data)")
        paths = expand_inputs(images)
        if coco_json is not None:
            videos = [str(p) for p in paths if is_video(p)]
            if videos:
                raise ValueError(f"--coco-json names images, not video frames: {', '.join(videos)}")
            image_ids, categories = image_ids_by_file_name(paths, Path(coco_json))
            where = str(coco_json)
    out = Path(out_dir) if out_dir is not None else next_run_folder(Path("out/predict"))
    stems = output_stems(paths, out)  # checked before the model loads
    total = probe_inputs(paths)  # every header read: a bad file stops the run before any output
    model, config = load_model(checkpoint, best=best, **({"raw": True} if raw_weights else {}))
    task = task_of(config.model_name)
    image_size = getattr(config, "image_size", None)
    _, resample = image_size_rule(config.model_name, config.model_kwargs, image_size)  # as eval does
    category_ids = checked_category_ids(config.class_names, config.category_ids, categories, where)
    model.to(torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")))
    job = PredictJob(
        paths, out, config.class_names, category_ids, score_threshold, batch_size, stems,
        image_ids=image_ids, video_out=video_out, progress=progress, total=total,
        input_size=image_size if resample else None, amp=getattr(config, "amp", None), calib=checked_calib,
    )  # fmt: skip
    heads = getattr(model, "heads", None) if task.name == "multi_task" else None
    depth_head = isinstance(heads, torch.nn.ModuleDict) and any(
        getattr(head, "task", None) == "monocular_depth" for head in heads.values()
    )
    if calib is not None and task.name not in ("stereo_disparity", "monocular_depth") and not depth_head:
        raise ValueError(
            f"--calib is for the depth tasks and multi-task models with a depth head; {config.model_name} "
            f"is a {task.name} model"
        )
    return task.predict_files(model, job)
