"""`structpred predict` end to end: COCO results that pycocotools scores unchanged (equal to our
`structpred eval`), the data's own ids, videos frame by frame, and bad inputs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from structpred.cli import main
from structpred.data.formats.coco import read_coco
from structpred.data.images import read_image, write_image
from structpred.data.registry import build_dataset
from structpred.engine import TrainConfig
from structpred.engine import predict as engine_predict  # noqa: F401  (imported before any patch)
from structpred.engine import run as engine_run
from structpred.models import get_model
from structpred.tasks.video_frames import iter_frames
from tests.tasks.predict_cases import IDS, NAMES, make_coco_split, make_video

# COCOeval.stats in order, under our metric's names.
STATS = ["map", "map_50", "map_75", "map_small", "map_medium", "map_large",
         "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large"]  # fmt: skip


def _key(image: Tensor) -> str:
    return hashlib.sha1(image.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


class Oracle(nn.Module):
    """A detector whose predictions the test sets: a table from image content to predictions."""

    def __init__(self, table: dict[str, dict[str, Tensor]], num_classes: int = 2) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))  # the engine reads the device from a parameter
        self.table, self.num_classes = table, num_classes

    def forward(self, images: list[Tensor], targets: Any = None) -> tuple[list[dict[str, Tensor]], dict]:
        self.autocast = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
        return [{k: v.clone() for k, v in self.table[_key(im)].items()} for im in images], {}


def _noisy_predictions(
    root: Path, masks: bool, seed: int = 0, empty: bool = False, split: str = "val"
) -> dict[str, dict]:
    """Per image of the split: its ground truth jittered, some labels wrong, a false positive,
    random scores (and masks shifted with the boxes)."""
    g = torch.Generator().manual_seed(seed)
    table = {}
    records, _ = read_coco(root / "annotations" / f"{split}.json")
    for record in records:
        image = read_image(root / record.file_name)
        _, H, W = image.shape
        gt = record.boxes
        n = 0 if empty else gt.shape[0] + 1
        boxes = torch.cat([gt, torch.tensor([[5.0, 5.0, 60.0, 45.0]])])[:n]  # (G + 1, 4): one false positive
        side = (boxes[:, 2:] - boxes[:, :2]).mean(1, keepdim=True)
        boxes = (boxes + 0.1 * side * torch.randn(n, 4, generator=g)).clamp(0, W - 1)
        boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 2)
        labels = torch.cat([record.labels, torch.tensor([1])])[:n]
        flip = torch.rand(n, generator=g) < 0.2
        labels = torch.where(flip, 3 - labels, labels)
        pred = {"boxes": boxes, "scores": torch.rand(n, generator=g), "labels": labels}
        if masks:
            m = torch.zeros(n, 1, H, W)
            for k, (x1, y1, x2, y2) in enumerate(boxes.round().int().tolist()):
                m[k, 0, y1:y2, x1:x2] = 0.9
            pred["masks"] = m
        table[_key(image)] = pred
    return table


def _fake_checkpoint(monkeypatch: pytest.MonkeyPatch, model: nn.Module, model_name: str, root: Path,
                     ids: list[int] = IDS, amp: str | None = None) -> list[dict[str, Any]]:  # fmt: skip
    calls: list[dict[str, Any]] = []  # load_model's keyword arguments, per call
    config = TrainConfig(epochs=1, batch_size=2, progress=False, device="cpu", model_name=model_name, amp=amp,
                         data=f"coco:{root}", class_names=list(NAMES), category_ids=list(ids))  # fmt: skip

    def load_model(checkpoint: Any, **kwargs: Any) -> tuple[nn.Module, TrainConfig]:
        calls.append(kwargs)
        return model.eval(), config

    # engine.predict first: importing it binds run.load_model, which must still be the real one
    monkeypatch.setattr("structpred.engine.predict.load_model", load_model)
    monkeypatch.setattr("structpred.engine.run.load_model", load_model)
    return calls


def _cocoeval(gt_json: Path, results: Path, iou_type: str) -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO(str(gt_json))
    evaluation = COCOeval(gt, gt.loadRes(str(results)), iou_type)
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    return np.asarray(evaluation.stats)


@pytest.mark.parametrize(
    ("model_name", "iou_type"), [("fasterrcnn_narrow_fpn", "bbox"), ("maskrcnn_narrow_fpn", "segm")]
)
def test_coco_results_score_unchanged_in_pycocotools_equal_to_eval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_name: str, iou_type: str
) -> None:
    root = tmp_path / "coco"
    gt_json = make_coco_split(root)
    _fake_checkpoint(
        monkeypatch, Oracle(_noisy_predictions(root, masks=iou_type == "segm")), model_name, root
    )
    masks = {"target": "masks"} if iou_type == "segm" else {}  # instance masks from the coco: layout
    ours = engine_run.evaluate("run", f"coco:{root}", "val", data_kwargs=masks)
    out = tmp_path / "pred"
    argv = ["predict", "--checkpoint", "run", "--data", f"coco:{root}", "--split", "val", "--out", str(out)]
    assert main([*argv, "--score-threshold", "0.3", "--no-progress"]) == 0
    results = json.loads((out / "predictions.json").read_text())
    assert {r["image_id"] for r in results} == {101, 105, 109, 113}  # the data's own ids
    assert {r["category_id"] for r in results} == {3, 7}
    assert (iou_type == "segm") == all(
        isinstance(r.get("segmentation", {}).get("counts"), str) for r in results
    )
    stats = _cocoeval(gt_json, out / "predictions.json", iou_type)
    assert 0.2 < stats[0] < 0.9  # a real figure, not 0 or 1
    # Every stat for boxes; for masks the area-range ones differ by design: pycocotools' loadRes
    # takes a detection's area from its bbox when the result has one, our metric from its mask.
    names = STATS if iou_type == "bbox" else ["map", "map_50", "map_75", "mar_1", "mar_10", "mar_100"]
    for name in names:
        assert float(ours[name]) == pytest.approx(stats[STATS.index(name)], abs=1e-6), name
    images = json.loads((out / "images.json").read_text())
    assert [i["id"] for i in images] == [101, 105, 109, 113]
    assert all((out / i["output"]).is_file() for i in images)


def test_coco_json_maps_files_to_their_ids_and_checks_categories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "coco"
    gt_json = make_coco_split(root)
    _fake_checkpoint(
        monkeypatch, Oracle(_noisy_predictions(root, masks=False)), "fasterrcnn_narrow_fpn", root
    )
    files = [root / "val" / "img_002.png", root / "val" / "img_000.png"]
    argv = ["predict", "--checkpoint", "run", "--coco-json", str(gt_json), "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "a"), *map(str, files)]) == 0
    images = json.loads((tmp_path / "a" / "images.json").read_text())
    assert [i["id"] for i in images] == [109, 101]
    assert {r["image_id"] for r in json.loads((tmp_path / "a" / "predictions.json").read_text())} == {
        109,
        101,
    }

    stranger = tmp_path / "other" / "img_009.png"
    write_image(stranger, torch.rand(3, 8, 8))
    assert main([*argv, "--out", str(tmp_path / "b"), str(stranger)]) == 2
    assert "img_009.png: no image of" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()

    _fake_checkpoint(monkeypatch, Oracle({}), "fasterrcnn_narrow_fpn", root, ids=[3, 8])
    assert main([*argv, "--out", str(tmp_path / "c"), *map(str, files)]) == 2
    err = capsys.readouterr().err
    assert (
        "category mismatch at label 2: the checkpoint has id 8 'square'" in err and "has id 7 'square'" in err
    )
    assert (
        main(["predict", "--checkpoint", "run", "--data", f"coco:{root}", "--out", str(tmp_path / "d")]) == 2
    )
    assert "category mismatch at label 2" in capsys.readouterr().err


def test_predict_runs_as_eval_ran_mixed_precision_included(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "coco"
    make_coco_split(root, num_images=2)
    oracle = Oracle(_noisy_predictions(root, masks=False))
    _fake_checkpoint(monkeypatch, oracle, "fasterrcnn_narrow_fpn", root, amp="bf16")
    argv = ["predict", "--checkpoint", "run", "--data", f"coco:{root}", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert oracle.autocast == torch.bfloat16  # a run trained (and evaluated) under bf16 autocast
    _fake_checkpoint(monkeypatch, oracle, "fasterrcnn_narrow_fpn", root, amp=None)
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    assert oracle.autocast is None


def test_no_detection_still_gives_valid_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "coco"
    make_coco_split(root, num_images=2)
    oracle = Oracle(_noisy_predictions(root, masks=False, empty=True))
    calls = _fake_checkpoint(monkeypatch, oracle, "fasterrcnn_narrow_fpn", root)
    out = tmp_path / "pred"
    argv = ["predict", "--checkpoint", "run", "--data", f"coco:{root}", "--out", str(out), "--no-progress"]
    assert main([*argv, "--best"]) == 0
    assert calls == [{"best": True}]  # the run's best checkpoint
    assert json.loads((out / "predictions.json").read_text()) == []  # a valid (empty) COCO results list
    images = json.loads((out / "images.json").read_text())
    assert [(i["id"], i["output"]) for i in images] == [(101, "img_000.png"), (105, "img_001.png")]
    assert read_image(out / "img_000.png").shape == (3, 160, 192)


def _untrained(monkeypatch: pytest.MonkeyPatch, model_name: str, **kwargs: Any) -> None:
    torch.manual_seed(0)
    model = get_model(model_name, **kwargs).eval()
    names = ["square", "disc"] if "rcnn" in model_name else []
    config = TrainConfig(epochs=1, batch_size=2, progress=False, device="cpu", model_name=model_name,
                         class_names=names, category_ids=[1, 2] if names else [])  # fmt: skip
    monkeypatch.setattr("structpred.engine.predict.load_model", lambda checkpoint, **kw: (model, config))


@pytest.mark.slow  # ~3 s alone, more on a loaded machine: the detector on 12 frames
def test_video_frames_detection_and_annotated_video(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import av

    tiny = {"width": 8, "fpn_channels": 16, "representation_size": 32, "min_size": 48, "max_size": 64}
    _untrained(monkeypatch, "fasterrcnn_narrow_fpn", num_classes=2, **tiny)
    video = make_video(tmp_path / "in" / "clip.mp4")
    out = tmp_path / "out"
    argv = [
        "predict",
        "--checkpoint",
        "run",
        str(video),
        "--out",
        str(out),
        "--video-out",
        "--batch-size",
        "5",
    ]
    assert main([*argv, "--score-threshold", "0.0", "--no-progress"]) == 0
    frames = sorted(p.name for p in (out / "clip").glob("*.png"))
    assert frames == [f"frame_{i:06d}.png" for i in range(12)]
    assert read_image(out / "clip" / "frame_000011.png").shape == (3, 48, 64)
    images = json.loads((out / "images.json").read_text())
    assert [(i["id"], i["frame"]) for i in images] == [(k, k) for k in range(12)]
    assert [i["time"] for i in images] == pytest.approx([k / 10 for k in range(12)])
    for row in json.loads((out / "predictions.json").read_text()):
        assert row["file_name"] == str(video) and row["time"] == pytest.approx(row["frame"] / 10)
    with av.open(str(out / "clip_annotated.mp4")) as container:
        decoded = [f.to_ndarray(format="rgb24").shape for f in container.decode(video=0)]
    assert decoded == [(48, 64, 3)] * 12


def test_video_and_images_segmentation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _untrained(monkeypatch, "fcn8s_narrow", num_classes=3, width_div=16, fc_channels=16)
    make_video(tmp_path / "in" / "clips" / "walk.webm", frames=5)
    write_image(tmp_path / "in" / "photo.png", torch.rand(3, 40, 56))
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", "run", str(tmp_path / "in"), "--out", str(out)]) == 0
    progress = capsys.readouterr().err.splitlines()  # not a terminal: a few summary lines, not a bar
    assert progress[0] == "predict: start, 6 items" and progress[-1].startswith("predict: done 6/6")
    rows = json.loads((out / "predictions.json").read_text())
    assert [r.get("frame") for r in rows] == [0, 1, 2, 3, 4, None]  # the folder's files, sorted
    assert rows[0]["labels_png"] == "clips/walk/frame_000000_labels.png"
    assert rows[-1]["labels_png"] == "photo_labels.png"
    for r in rows:
        labels = np.asarray(read_image(out / r["labels_png"]))  # grey -> 3 equal channels in [0, 1]
        assert (
            np.bincount(np.rint(labels[0] * 255).astype(int).reshape(-1), minlength=3).tolist()
            == r["class_pixels"]
        )


@pytest.mark.parametrize("case", ["text", "truncated", "empty-mkv", "truncated-mp4"])
def test_bad_video_is_one_line_exit_2_and_says_what_was_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    import av

    _untrained(monkeypatch, "fcn8s_narrow", num_classes=3, width_div=16, fc_channels=16)
    good = make_video(tmp_path / "in" / "a_good.webm", frames=4)
    if case == "text":
        bad = tmp_path / "in" / "b_bad.mp4"
        bad.write_text("not a video")
    elif case == "empty-mkv":
        bad = tmp_path / "in" / "b_bad.mkv"
        container = av.open(str(bad), "w")
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()
        container.close()  # a header, no frame
    else:
        suffix = ".mp4" if case == "truncated-mp4" else ".webm"
        bad = make_video(tmp_path / "full" / f"b_bad{suffix}", frames=30)
        data = bad.read_bytes()
        bad = tmp_path / "in" / bad.name
        bad.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    assert (
        main(["predict", "--checkpoint", "run", str(good), str(bad), "--out", str(out), "--no-progress"]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {bad}: ")
    if case == "truncated":  # found while decoding: the good video's frames and the bad one's first
        assert "truncated" in err
        images = json.loads((out / "images.json").read_text())
        done = [(i["file_name"], i["frame"]) for i in images]
        decodable = []  # every frame decoded before the truncation is predicted and written
        with pytest.raises(ValueError, match="truncated"):
            decodable.extend(index for index, _, _ in iter_frames(bad))
        assert decodable and done == [(str(good), k) for k in range(4)] + [(str(bad), k) for k in decodable]
        assert f"{len(done)} images/frames done before it" in err and str(out) in err
        assert len(list(out.rglob("frame_??????.png"))) == len(done)
    else:  # found in the headers, before the model runs: nothing written
        assert not out.exists()


def test_predict_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nothing.png"  # the inputs are checked first, before the model loads
    assert main(["predict", "--checkpoint", str(tmp_path), str(missing), "--out", str(tmp_path / "o")]) == 2
    assert "nothing.png: no such file or folder" in capsys.readouterr().err
    image = tmp_path / "in" / "image.png"
    image.parent.mkdir()
    write_image(image, torch.rand(3, 16, 16))
    assert main(["predict", "--checkpoint", str(tmp_path), str(image), "--out", str(tmp_path / "o")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["predict", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "no images given" in capsys.readouterr().err
    both = ["--data", f"coco:{tmp_path}", str(image)]
    assert main(["predict", "--checkpoint", str(tmp_path), *both, "--out", str(tmp_path / "o")]) == 2
    assert "either --data" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_a_trained_mask_rcnn_scores_the_same_in_pycocotools(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "coco"
    make_coco_split(root, split="train", seed=1)
    gt_json = make_coco_split(root, split="val")
    run = tmp_path / "run"
    tiny = ["--model-arg", "width=8", "--model-arg", "fpn_channels=16", "--model-arg", "box_score_thresh=0.0",
            "--model-arg", "representation_size=32", "--model-arg", "mask_layers=[16,16]"]  # fmt: skip
    argv = ["train", "--model", "maskrcnn_narrow_fpn", "--data", f"coco:{root}", "--epochs", "1",
            "--batch-size", "2", "--lr", "0.01", "--no-progress", "--out", str(run), *tiny]  # fmt: skip
    assert main(argv) == 0
    ours = engine_run.evaluate(run, None, "val")  # `structpred eval --checkpoint RUN`: the data it trained on
    out = tmp_path / "pred"
    argv = ["predict", "--checkpoint", str(run), "--data", f"coco:{root}", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    results = json.loads((out / "predictions.json").read_text())
    assert len(results) > 20 and {r["category_id"] for r in results} <= {3, 7}
    stats = _cocoeval(gt_json, out / "predictions.json", "segm")
    for name in ["map", "map_50", "map_75", "mar_1", "mar_10", "mar_100"]:
        assert float(ours[name]) == pytest.approx(stats[STATS.index(name)], abs=1e-6), name


def test_a_carved_val_split_predicts_its_own_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "coco"
    make_coco_split(root, num_images=6, split="train")  # no val split: --val-fraction carves one
    _fake_checkpoint(
        monkeypatch,
        Oracle(_noisy_predictions(root, masks=False, split="train")),
        "fasterrcnn_narrow_fpn",
        root,
    )
    out = tmp_path / "pred"
    argv = ["predict", "--checkpoint", "run", "--data", f"coco:{root}", "--split", "val", "--out", str(out)]
    assert main([*argv, "--data-arg", "val_fraction=0.5", "--no-progress"]) == 0
    val = build_dataset(f"coco:{root}", "val", val_fraction=0.5)
    expected = [int(val[i][1]["image_id"]) for i in range(len(val))]
    assert 0 < len(expected) < 6
    assert [i["id"] for i in json.loads((out / "images.json").read_text())] == expected


def test_a_segmenter_trained_at_an_image_size_sees_that_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kwargs = {"num_classes": 3, "width_div": 16, "fc_channels": 16}
    model = get_model("fcn8s_narrow", **kwargs).eval()
    seen: list[tuple[int, ...]] = []
    model.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0][0].shape)))
    config = TrainConfig(
        epochs=1, model_name="fcn8s_narrow", model_kwargs=kwargs, image_size=32
    )  # as eval resamples
    monkeypatch.setattr("structpred.engine.predict.load_model", lambda checkpoint, **kw: (model, config))
    write_image(tmp_path / "in" / "a.png", torch.rand(3, 48, 64))
    out = tmp_path / "out"
    assert (
        main(["predict", "--checkpoint", "run", str(tmp_path / "in"), "--out", str(out), "--no-progress"])
        == 0
    )
    assert seen == [(3, 24, 32)]  # the longer side resampled to 32
    assert read_image(out / "a_labels.png").shape == (3, 48, 64)  # outputs in the image's pixels
    assert read_image(out / "a.png").shape == (3, 48, 64)
