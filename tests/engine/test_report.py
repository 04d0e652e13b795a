"""The HTML report's library side: folder rules, best/worst keeping, escaping, and the page's
per-class figures against the metric computed independently (oracle models, no training)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from structpred.data import ShapesWorld
from structpred.engine.report import check_report_dir, data_folders, write_report
from structpred.engine.trainer import TrainConfig
from structpred.metrics import MeanAveragePrecision
from structpred.metrics.segmentation import MeanIoU
from structpred.viz.report_page import (
    Extremes,
    GalleryItem,
    Picture,
    ReportPage,
    Table,
    is_our_page,
    png_data_uri,
    render_page,
)


class Tables(HTMLParser):
    """Every <table> of a page as a list of rows of cell texts, and every <img> src."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.images: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse(path: Path) -> Tables:
    t = Tables()
    t.feed(path.read_text(encoding="utf-8"))
    return t


# ----------------------------------------------------------------------------- folder rules


def test_data_folders_from_specs(tmp_path):
    (tmp_path / "coco").mkdir()
    (tmp_path / "coco" / "ann.json").write_text("{}")
    assert data_folders("shapes") == [] and data_folders(None) == []
    assert data_folders(f"coco:{tmp_path / 'coco'}") == [tmp_path / "coco"]
    assert data_folders(f"coco:{tmp_path / 'coco' / 'ann.json'}") == [tmp_path / "coco"]


def test_report_dir_refusals(tmp_path):
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    for bad in (data, data / "images", data / "new" / "report"):
        with pytest.raises(ValueError, match="inside the input folder") as err:
            check_report_dir(bad, [data])
        assert "\n" not in str(err.value)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        check_report_dir(tmp_path / "file", [])
    foreign = tmp_path / "site"
    foreign.mkdir()
    (foreign / "index.html").write_text("<html>my own page</html>")
    with pytest.raises(ValueError, match="not a structpred report"):
        check_report_dir(foreign, [])
    assert (foreign / "index.html").read_text() == "<html>my own page</html>"
    # A previous report is replaced; a folder beside the data is fine.
    ours = tmp_path / "ours"
    ours.mkdir()
    (ours / "index.html").write_text(render_page(ReportPage("t", [], Table(["metric", "value"], []))))
    assert check_report_dir(ours, [data]) == ours
    assert check_report_dir(tmp_path / "report", [data]) == tmp_path / "report"


# ----------------------------------------------------------------------------- page parts


def test_extremes_keep_k_best_and_worst():
    e = Extremes(2)
    for i, s in enumerate([0.5, 0.9, float("nan"), 0.1, 0.9, 0.3, 0.7]):
        e.add(s, i, f"payload{i}")
    assert [(s, i) for s, i, _ in e.best()] == [(0.9, 1), (0.9, 4)]  # ties: the earlier first
    assert [(s, i) for s, i, _ in e.worst()] == [(0.1, 3), (0.3, 5)]
    assert e.best()[0][2] == "payload1"
    ties = Extremes(2)
    for i in range(5):
        ties.add(0.0, i, None)
    assert [i for _, i, _ in ties.best()] == [0, 1] and [i for _, i, _ in ties.worst()] == [4, 3]
    small = Extremes(3)
    for i, s in enumerate([0.2, 0.8]):
        small.add(s, i, None)
    assert [i for _, i, _ in small.best()] == [1, 0] and small.worst() == []  # no image twice
    assert len(small._best) <= 3 and len(small._worst) <= 3


def test_page_escapes_every_text_and_inlines_pictures():
    evil = '<script>alert("x")</script> & <img src=http://example.com/a.png>'
    picture = png_data_uri(torch.zeros(3, 4, 4, dtype=torch.uint8))
    page = ReportPage(
        title=evil,
        identity=[("data", evil)],
        metrics=Table(["metric", "value"], [[evil, "0.5"]]),
        per_class=Table(["class", "AP"], [[evil, "0.1"]]),
        best=[GalleryItem(evil, [Picture(evil, picture)])],
        gallery_rule=evil,
        notes=[evil],
    )
    html = render_page(page)
    assert "<script" not in html and "<img src=http" not in html
    assert html.count("&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &lt;img") == 10  # every place
    doc = Tables()
    doc.feed(html)
    assert doc.images == [picture]  # the only picture: the inlined one
    assert is_our_page(html) and not is_our_page("<html></html>")
    with pytest.raises(ValueError, match="data URIs"):
        render_page(ReportPage("t", [], Table([], []), pr_uri="http://example.com/pr.png"))


# ----------------------------------------------------------------------------- oracle runs


class Oracle(nn.Module):
    """Returns the given predictions in order, one per image it is called on."""

    def __init__(self, preds, **attrs) -> None:
        super().__init__()
        self.preds = list(preds)
        self.weight = nn.Parameter(torch.zeros(1))
        for k, v in attrs.items():
            setattr(self, k, v)

    def forward(self, images, targets=None):
        out = [self.preds.pop(0) for _ in images]
        if isinstance(out[0], dict) and "label_map" in out[0]:
            return {"label_map": torch.stack([o["label_map"] for o in out])}, {}
        return out, {}


def _noisy_detections(world, seed):
    g = torch.Generator().manual_seed(seed)
    preds = []
    for i in range(len(world)):
        t = world[i][1]
        n = t["boxes"].shape[0]
        boxes = t["boxes"] + torch.randn(n, 4, generator=g) * 3.0
        boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        labels = t["labels"].clone()
        flip = torch.rand(n, generator=g) < 0.25
        labels[flip] = labels[flip] % 6 + 1  # some wrong classes
        masks = t["masks"][:, None].float()  # (N, 1, H, W) as probabilities
        preds.append({"boxes": boxes, "scores": torch.rand(n, generator=g), "labels": labels, "masks": masks})
    return preds


@pytest.mark.slow  # ~4-7 s: drawing, a PR figure and matplotlib's import
@pytest.mark.parametrize("task_model", ["fasterrcnn_narrow_fpn", "maskrcnn_narrow_fpn"])
def test_detection_page_equals_the_metric(tmp_path, task_model):
    world = ShapesWorld("test", size=64, num_images=4)
    preds = _noisy_detections(world, 0)
    names = list(world.categories.names)
    config = TrainConfig(model_name=task_model, data="shapes", batch_size=2, class_names=names)
    model = Oracle([{k: v.clone() for k, v in p.items()} for p in preds], num_classes=6)
    page = write_report(model, config, world, "test", tmp_path / "r", metrics={"map": 0.25}, top_k=2)
    doc = parse(page)
    metrics, per_class, confusion = doc.tables
    assert metrics[1:] == [["map", "0.2500"]]
    kinds = ["bbox", "segm"] if task_model.startswith("mask") else ["bbox"]
    targets = [world[i][1] for i in range(len(world))]
    for j, kind in enumerate(kinds):
        full = MeanAveragePrecision(kind, class_metrics=True)
        at50 = MeanAveragePrecision(kind, iou_thresholds=[0.5], class_metrics=True)
        for m in (full, at50):
            m.update(preds, targets)
        ap = dict(
            zip(full.compute()["classes"].tolist(), full.compute()["map_per_class"].tolist(), strict=True)
        )
        ap50 = dict(
            zip(at50.compute()["classes"].tolist(), at50.compute()["map_per_class"].tolist(), strict=True)
        )
        for row in per_class[1:]:
            label = names.index(row[0]) + 1
            want = [ap.get(label, -1.0), ap50.get(label, -1.0)]
            got = row[2 + 2 * j : 4 + 2 * j]
            assert got == ["n/a" if v == -1 else f"{v:.4f}" for v in want], (kind, row)
    assert per_class[0][:2] == ["class", "objects"]
    assert sum(int(r[1]) for r in per_class[1:]) == sum(len(t["labels"]) for t in targets)
    # Confusion: every object once in its row (matched or missed).
    counts = [[int(c) for c in row[1:]] for row in confusion[1:]]
    for k in range(1, 7):
        assert sum(counts[k]) == sum(int((t["labels"] == k).sum()) for t in targets)
    # PR plot + 2 best + 2 worst images, each with prediction and ground truth.
    assert len(doc.images) == 1 + 4 * 2 and all(s.startswith("data:image/png;base64,") for s in doc.images)
    html = page.read_text()
    scores = [float(x) for x in re.findall(r"AP50 ([0-9.]+), \d+ detections drawn", html)]
    assert len(scores) == 4 and min(scores[:2]) >= max(scores[2:])


@pytest.mark.slow  # ~4-5 s
def test_semantic_page_equals_the_metric(tmp_path):
    world = ShapesWorld("test", size=64, num_images=5)
    g = torch.Generator().manual_seed(0)
    preds, metric = [], MeanIoU(7, 255)
    for i in range(len(world)):
        truth = world[i][1]["semantic"]
        noisy = torch.where(
            torch.rand(truth.shape, generator=g) < 0.1 * i,
            torch.randint(0, 7, truth.shape, generator=g),
            truth,
        )
        noisy = noisy.clamp(max=6)
        preds.append({"label_map": noisy})
        metric.update(noisy[None], truth[None])
    seg_config = SimpleNamespace(num_classes=7, target_key="semantic", ignore_index=255)
    config = TrainConfig(model_name="fcn8s_narrow", data="shapes", batch_size=2)
    page = write_report(
        Oracle(preds, config=seg_config), config, world, "test", tmp_path / "r", metrics={}, top_k=2
    )
    doc = parse(page)
    _, per_class, confusion = doc.tables
    iou = metric.compute()["iou_per_class"].tolist()
    assert [r[0] for r in per_class[1:]] == ["background", *world.categories.names]
    assert [r[1] for r in per_class[1:]] == ["n/a" if v != v else f"{v:.4f}" for v in iou]
    assert [[int(c) for c in r[1:]] for r in confusion[1:]] == metric.confusion.tolist()
    assert len(doc.images) == 4 * 3  # image, prediction, ground truth
    html = page.read_text()
    scores = [float(x) for x in re.findall(r"mIoU ([0-9.]+)</figcaption>", html)]
    assert scores[0] == 1.0 and scores == sorted(scores, reverse=True)[:2] + sorted(scores[2:])


def test_sequence_task_gets_the_table_only(tmp_path):
    config = TrainConfig(model_name="lstm_sunspots", data="sunspots", batch_size=2)
    data = [(torch.zeros(5, 1), {"value": torch.zeros(1)})] * 3
    page = write_report(nn.Linear(1, 1), config, data, "val", tmp_path / "r", metrics={"rmse": 0.5})
    doc = parse(page)
    assert doc.tables[0][1:] == [["rmse", "0.5000"]] and doc.images == []
    assert "metric table only" in page.read_text()
