"""``structpred eval --report DIR``: one self-contained HTML page about a checkpoint on a split.

The page (``DIR/index.html``, see :mod:`structpred.viz.report_page`) shows the run's identity,
the metric table ``eval`` prints, per-class figures, the precision-recall curves (detection),
the confusion between classes and a gallery of the best and worst images with predictions and
ground truth drawn. The model runs over the split once; only the top and bottom ``top_k``
images are kept (their pictures are drawn at the end), so memory does not grow with the split.

Per task: detection and instance segmentation (box and mask AP per class, PR curves at IoU
0.5, box confusion at IoU 0.5, gallery ranked by per-image AP50) and semantic segmentation
(per-class IoU, the metric's pixel confusion matrix, gallery ranked by per-image mIoU). Other
tasks (sequences, classification, flow) get the table only, and the page says so.

Safety: ``DIR`` may not be (or be inside) a dataset folder, and an ``index.html`` that is not
a previous report is never overwritten (``ValueError``, one line).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..data.collate import collate
from ..metrics import MeanAveragePrecision
from ..metrics.detection_accumulate import mean_valid
from ..tasks import task_of
from ..viz import draw_boxes, draw_masks, overlay_label_map
from ..viz.report_page import (
    Extremes,
    GalleryItem,
    Picture,
    ReportPage,
    Table,
    display_scale,
    format_value,
    is_our_page,
    metric_rows,
    png_data_uri,
    render_page,
    zoom,
)
from ..viz.scores import box_image_ap50, detection_confusion, image_ap50, image_miou, mask_iou_matrix
from .trainer import TrainConfig

log = logging.getLogger(__name__)

SCORE_THRESHOLD = 0.5  # detections drawn, and counted in the box confusion, at or above this


# ----------------------------------------------------------------------------- the folder
def data_folders(data: str | None) -> list[Path]:
    """The folders a ``--data`` spec reads (``coco:DIR``, ``voc:FILE.json`` -> its folder)."""
    if not data or ":" not in data:
        return []
    arg = Path(data.partition(":")[2])
    return [arg if arg.is_dir() or not arg.suffix else arg.parent]


def check_report_dir(out_dir: str | Path, inputs: Sequence[str | Path]) -> Path:
    """``out_dir`` if a report may be written there, else a one-line ``ValueError``.

    Refused: a path that is a file, a folder that is (or is inside) one of ``inputs`` (the
    dataset folders), and a folder holding an ``index.html`` that is not a previous report.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--report {out}: is a file, not a folder")
    resolved = out.resolve()
    for folder in inputs:
        src = Path(folder).resolve()
        if resolved == src or src in resolved.parents:
            raise ValueError(
                f"--report {out}: is inside the input folder {folder}; write the report elsewhere"
            )
    page = out / "index.html"
    if page.exists() and not is_our_page(page.read_text(encoding="utf-8", errors="replace")):
        raise ValueError(f"--report {out}: {page} exists and is not a structpred report; not overwriting it")
    return out


def _names(config: TrainConfig, dataset: Dataset) -> list[str]:
    names = list(config.class_names) or list(getattr(getattr(dataset, "categories", None), "names", []))
    return [str(n) for n in names]


# ----------------------------------------------------------------------------- detection
class _Detection:
    """Boxes (and masks): COCO AP per class, PR curves, box confusion, per-image AP50."""

    def __init__(
        self, model: nn.Module, config: TrainConfig, dataset: Dataset, top_k: int, masks: bool
    ) -> None:
        self.K = int(getattr(model, "num_classes", 0) or len(_names(config, dataset)))
        self.names = _names(config, dataset)
        self.masks = masks
        self.box = MeanAveragePrecision("bbox")
        self.segm = MeanAveragePrecision("segm") if masks else None
        self.confusion = torch.zeros(self.K + 1, self.K + 1, dtype=torch.int64)
        self.gts = torch.zeros(self.K + 1, dtype=torch.int64)
        self.extremes = Extremes(top_k)

    def name(self, label: int) -> str:
        return self.names[label - 1] if 0 < label <= len(self.names) else str(label)

    def add_batch(self, indices: list[int], inputs: list[Tensor], targets: list[dict], preds: Any) -> None:
        for index, image, target, pred in zip(indices, inputs, targets, preds, strict=True):
            pred = {
                k: v.detach().float().cpu() if v.is_floating_point() else v.cpu() for k, v in pred.items()
            }
            target = {k: v.cpu() if isinstance(v, Tensor) else v for k, v in target.items()}
            self.box.update([pred], [target])
            if self.segm is not None:
                self.segm.update([pred], [target])
                pm = pred["masks"][:, 0] > 0.5  # (N, 1, H, W) probabilities -> (N, H, W)
                score = image_ap50(mask_iou_matrix(pm, target["masks"]), pred["scores"], pred["labels"],
                                   target["labels"], SCORE_THRESHOLD)  # fmt: skip
            else:
                score = box_image_ap50(pred, target, SCORE_THRESHOLD)
            self.confusion += detection_confusion(pred, target, self.K, 0.5, SCORE_THRESHOLD)
            self.gts += torch.bincount(target["labels"].long(), minlength=self.K + 1)[: self.K + 1]
            self.extremes.add(score, index, (image.cpu(), pred, target))

    def _per_class(self, metric: MeanAveragePrecision) -> dict[int, tuple[float, float]]:
        r = metric.compute_full()
        t50 = int(torch.isclose(r.iou_thresholds, torch.tensor(0.5, dtype=torch.float64)).nonzero()[0])
        return {
            int(label): (mean_valid(r.precision[:, :, k, 0, -1]), mean_valid(r.precision[t50, :, k, 0, -1]))
            for k, label in enumerate(r.classes.tolist())
        }

    def finish(self, page: ReportPage, title: str) -> None:
        kinds = [("box", self._per_class(self.box))]
        if self.segm is not None:
            kinds.append(("mask", self._per_class(self.segm)))
        columns = ["class", "objects"] + [f"{kind} {m}" for kind, _ in kinds for m in ("AP", "AP50")]
        rows = []
        for label in range(1, self.K + 1):
            cells = [self.name(label), str(int(self.gts[label]))]
            for _, table in kinds:
                ap, ap50 = table.get(label, (-1.0, -1.0))
                cells += [format_value(ap), format_value(ap50)]
            rows.append(cells)
        page.per_class = Table(columns, rows)
        page.per_class_note = (
            "AP: COCO AP averaged over IoU 0.50:0.05:0.95; AP50: at IoU 0.5 (101 recall points, "
            "up to 100 detections per image and class); n/a: the class has no object in this split."
        )
        kind, table = kinds[-1]  # the task's own kind: boxes for detection, masks for instances
        metric = self.segm if self.segm is not None else self.box
        curves = {
            f"{self.name(label)}": (r.numpy(), p.numpy(), table[label][1])
            for label, (r, p) in metric.pr_curve(iou_threshold=0.5).items()
        }
        if curves:
            from ..viz.plots import figure_png, pr_curves_figure

            fig = pr_curves_figure(curves, f"{title}: {kind} precision-recall at IoU 0.5", figsize=(6, 5))
            page.pr_uri = png_data_uri(figure_png(fig))
            page.pr_note = f"{kind.capitalize()} AP in the legend = the {kind} AP50 column above."
        else:
            page.pr_note = "No class has objects in this split: no curve to draw."
        labels = ["background / missed"] + [self.name(k) for k in range(1, self.K + 1)]
        rows = [[labels[i]] + [str(int(v)) for v in self.confusion[i].tolist()] for i in range(self.K + 1)]
        page.confusion = Table(
            ["true \\ predicted"] + labels, rows, heat=True,
            heat_max=float(self.confusion.max().clamp(min=1)),
            caption="rows: true class, columns: predicted class",
        )  # fmt: skip
        page.confusion_note = (
            f"Boxes with score >= {SCORE_THRESHOLD} matched to objects of any class at IoU >= 0.5, best "
            "score first. Row 'background / missed': detections matching no object (false alarms); "
            "column 'background / missed': objects no detection matched."
        )
        page.gallery_rule = (
            f"Images ranked by their own {kind} AP at IoU 0.5 (all classes pooled, 101 recall points); "
            f"an image without objects scores 1 if no detection reaches {SCORE_THRESHOLD}, else 0. "
            f"Predictions drawn at score >= {SCORE_THRESHOLD}."
        )
        page.best = [self._item(*e) for e in self.extremes.best()]
        page.worst = [self._item(*e) for e in self.extremes.worst()]

    def _item(self, score: float, index: int, payload: Any) -> GalleryItem:
        image, pred, target = payload
        H, W = image.shape[-2:]
        s = display_scale(H, W)
        shown = pred["scores"] >= SCORE_THRESHOLD
        names = self.names or None
        pictures = []
        for label, boxes, labels, scores, masks in (
            ("prediction", pred["boxes"][shown], pred["labels"][shown], pred["scores"][shown],
             pred["masks"][shown][:, 0] > 0.5 if self.masks else None),
            ("ground truth", target["boxes"], target["labels"], None,
             target.get("masks") if self.masks else None),
        ):  # fmt: skip
            picture = zoom(image, s)
            if masks is not None and masks.numel():
                picture = draw_masks(picture, zoom(masks.to(torch.uint8), s), alpha=0.45)
            picture = draw_boxes(
                picture, boxes.float() * s, labels.long(), scores, class_names=names, width=2
            )
            pictures.append(Picture(label, png_data_uri(picture)))
        drawn, objects = int(shown.sum()), len(target["labels"])
        top = f" (best score {float(pred['scores'].max()):.2f})" if pred["scores"].numel() else ""
        caption = f"image {index}: AP50 {score:.3f}, {drawn} detections drawn{top}, {objects} objects"
        return GalleryItem(caption, pictures)


# ----------------------------------------------------------------------------- label maps
class _Semantic:
    """Label maps: per-class IoU and the pixel confusion matrix, per-image mIoU."""

    def __init__(self, model: nn.Module, config: TrainConfig, dataset: Dataset, top_k: int) -> None:
        c: Any = getattr(model, "config")  # noqa: B009 (a semantic segmenter's config)
        self.K, self.key, self.ignore = int(c.num_classes), str(c.target_key), c.ignore_index
        names = _names(config, dataset)
        self.names = (["background"] + names) if len(names) + 1 == self.K else [str(k) for k in range(self.K)]
        self.confusion = torch.zeros(self.K, self.K, dtype=torch.int64)
        self.extremes = Extremes(top_k)

    def add_batch(self, indices: list[int], inputs: list[Tensor], targets: list[dict], preds: Any) -> None:
        label_maps = preds["label_map"].cpu()  # (B, H, W)
        for b, (index, image, target) in enumerate(zip(indices, inputs, targets, strict=True)):
            pred, truth = label_maps[b], target[self.key].cpu()
            keep = (
                truth != self.ignore if self.ignore is not None else torch.ones_like(truth, dtype=torch.bool)
            )
            t, p = truth[keep].long(), pred[keep].long()  # (P,) pixels that count
            self.confusion += torch.bincount(t * self.K + p, minlength=self.K**2).reshape(self.K, self.K)
            score = image_miou(pred, truth, self.K, self.ignore)
            self.extremes.add(score, index, (image.cpu(), pred, truth))

    def finish(self, page: ReportPage, title: str, metrics: dict[str, Any]) -> None:
        confusion = metrics.get("confusion_matrix")  # the metric's own, when eval passed it
        c = (confusion if isinstance(confusion, Tensor) else self.confusion).to(torch.float64)
        tp = torch.diagonal(c)
        iou = tp / (c.sum(0) + c.sum(1) - tp)  # NaN for a class absent from both
        acc = tp / c.sum(1)
        page.per_class = Table(
            ["class", "IoU", "accuracy (recall)", "true pixels", "predicted pixels"],
            [[self.names[k], format_value(float(iou[k])), format_value(float(acc[k])),
              str(int(c[k].sum())), str(int(c[:, k].sum()))] for k in range(self.K)],
        )  # fmt: skip
        page.per_class_note = (
            "IoU over every pixel of the split (ignored pixels left out); n/a: class absent."
        )
        page.confusion = Table(
            ["true \\ predicted"] + self.names,
            [[self.names[k]] + [str(int(v)) for v in c[k].tolist()] for k in range(self.K)],
            heat=True, heat_max=float(c.max().clamp(min=1)),
            caption="pixels; rows: true class, columns: predicted",
        )  # fmt: skip
        page.confusion_note = "The metric's pixel confusion matrix."
        page.gallery_rule = (
            "Images ranked by their own mIoU: the mean IoU over the classes present in the image's "
            "ground truth or prediction (ignored pixels, shown unpainted, left out)."
        )
        page.best = [self._item(*e) for e in self.extremes.best()]
        page.worst = [self._item(*e) for e in self.extremes.worst()]

    def _item(self, score: float, index: int, payload: Any) -> GalleryItem:
        image, pred, truth = payload
        s = display_scale(*image.shape[-2:])
        zoomed = zoom(image, s)
        pictures = [Picture("image", png_data_uri(zoomed))]
        for label, labels in (("prediction", pred), ("ground truth", truth)):
            lm = zoom(labels[None], s)[0]
            pictures.append(Picture(label, png_data_uri(overlay_label_map(zoomed, lm, alpha=0.6))))
        return GalleryItem(f"image {index}: mIoU {score:.3f}", pictures)


# ----------------------------------------------------------------------------- the page
def write_report(
    model: nn.Module,
    config: TrainConfig,
    dataset: Dataset,
    split: str,
    out_dir: str | Path,
    *,
    metrics: dict[str, Any],
    device: str | torch.device | None = None,
    checkpoint: str | Path = "",
    top_k: int = 4,
) -> Path:
    """Run ``model`` over ``dataset`` once and write ``out_dir/index.html``; returns its path.

    ``metrics`` is the table to show (what ``evaluate`` returned, printed by ``eval``). The
    gallery shows the ``top_k`` best and ``top_k`` worst images (at most half the split each).
    """
    data = config.data or "?"
    out = check_report_dir(out_dir, data_folders(data))
    task = task_of(config.model_name)
    title = f"{config.model_name} on {data} ({split})"
    identity = [
        ("model", config.model_name), ("task", task.name), ("data", data), ("split", split),
        ("images", str(len(dataset))), ("checkpoint", str(checkpoint) or "-"),  # type: ignore[arg-type]
        ("model arguments", ", ".join(f"{k}={v}" for k, v in sorted(config.model_kwargs.items())) or "-"),
    ]  # fmt: skip
    page = ReportPage(
        title=title, identity=identity, metrics=metric_rows(metrics, skip=("confusion_matrix",))
    )
    collector: _Detection | _Semantic | None = None
    k = min(top_k, max(1, len(dataset) // 2))  # type: ignore[arg-type]  # best and worst both shown
    keys = set(task.prediction_keys)  # what the task's predictions hold decides what is drawn
    if {"boxes", "scores", "labels"} <= keys:
        collector = _Detection(model, config, dataset, k, masks="masks" in keys)
    elif "label_map" in keys:
        collector = _Semantic(model, config, dataset, k)
    else:
        page.notes.append(
            f"The {task.name} task's inputs are {task.inputs}s: this report shows its metric table only "
            "(no per-class figures or pictures are drawn for it yet)."
        )
    if collector is not None:
        _run(model, dataset, collector, config, device)
        if isinstance(collector, _Semantic):
            collector.finish(page, title, metrics)
        else:
            collector.finish(page, title)
    html = render_page(page)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "index.html"
    tmp = out / f".index.html.{os.getpid()}.tmp"
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, target)  # atomic: a reader never sees half a page
    log.info("report (%d KiB) -> %s", len(html) // 1024, target)
    return target


def _run(
    model: nn.Module, dataset: Dataset, collector: Any, config: TrainConfig, device: str | torch.device | None
) -> None:
    """One pass: batches of ``config.batch_size`` items, as ``eval`` runs them."""
    dev = torch.device(device or config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(dev).eval()
    amp = (
        torch.autocast(dev.type, dtype=torch.bfloat16 if config.amp == "bf16" else torch.float16)
        if config.amp
        else nullcontext()
    )
    n = len(dataset)  # type: ignore[arg-type]
    with torch.no_grad(), amp:
        for start in range(0, n, config.batch_size):
            indices = list(range(start, min(n, start + config.batch_size)))
            inputs, targets = collate([dataset[i] for i in indices])
            preds, _ = model([x.to(dev) for x in inputs])
            collector.add_batch(indices, list(inputs), list(targets), preds)


def report_for_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    metrics: dict[str, Any],
    data: str | None = None,
    split: str = "val",
    data_kwargs: dict[str, Any] | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    best: bool = False,
    image_size: int | None = None,
    raw: bool = False,
) -> Path:
    """:func:`write_report` for a checkpoint, with the model and data ``evaluate`` uses (``raw``: the
    raw weights of a run trained with ``--ema``, not their average)."""
    from . import run

    model, config = run.load_model(checkpoint, best=best, image_size=image_size, raw=raw)
    if not (data or config.data):
        raise ValueError(f"{checkpoint}: no data spec recorded; pass one (e.g. --data shapes)")
    check_report_dir(out_dir, data_folders(data or config.data))  # before the data is read
    config.data, dataset = run.evaluation_data(config, data, split, data_kwargs)  # as evaluate reads it
    if batch_size:
        config.batch_size = batch_size
    return write_report(
        model, config, dataset, split, out_dir, metrics=metrics, device=device, checkpoint=checkpoint
    )
