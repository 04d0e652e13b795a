"""The multi-task predict writer on a tiny random network: every head's files and json entry
equal to the network's own predictions, in the image's pixels, from one run per image; the
predict loop's colour, 16-bit and .npy outputs; bad requests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from structpred.data.images import write_image
from structpred.models import get_model
from structpred.tasks import get_task
from structpred.tasks.base import ItemOutput, PredictJob
from structpred.tasks.multi_task_predict import depth_png_values, predict_multi_task_batch, side_by_side
from structpred.tasks.predict_loop import run_predict

# the random network scores below the narrow builder's 0.1 threshold: the old 0.05 keeps boxes to compare
TINY = {
    "input_size": 32, "width": 4, "fpn_channels": 8, "dense_channels": 8, "norm_groups": 4,
    "detection": {"score_thresh": 0.05},
}  # fmt: skip
IDS = [11, 12, 13, 14, 15, 16]  # the data's own id of labels 1..6


class Counting(nn.Module):
    """The network, counting its runs (each image must go through it once)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.heads, self.calls = model, model.heads, 0

    def forward(self, images: Any, targets: Any = None) -> Any:
        self.calls += 1
        return self.model(images, targets)


def _model(**kwargs: Any) -> nn.Module:
    torch.manual_seed(0)
    return get_model("multitask_narrow", **{**TINY, **kwargs}).eval()


def _job(tmp_path: Path, **kwargs: Any) -> PredictJob:
    return PredictJob([], tmp_path, category_ids=IDS, score_threshold=0.0, **kwargs)


def test_every_head_is_written_from_one_run_per_image_equal_to_the_network() -> None:
    model = Counting(_model(focal=40.0, baseline=0.2))
    images = [torch.rand(3, 40, 48), torch.rand(3, 24, 36)]  # two sizes: one run each
    with torch.no_grad():
        outputs = predict_multi_task_batch(model, images, _job(Path("unused")))
        own = [model.model([im])[0] for im in images]
    assert model.calls == 2 and len(outputs) == 2
    for image, out, preds in zip(images, outputs, own, strict=True):
        _, H, W = image.shape
        assert out.picture is not None and out.picture.dtype == torch.uint8
        assert tuple(out.picture.shape) == (3, H, 4 * W + 3 * 2)  # four heads side by side, 2-px gaps
        assert (out.picture[:, :, W : W + 2] == 255).all()
        (row,) = out.rows
        assert list(row) == ["detection", "semantic", "parts", "depth"]  # the model's head order
        det = preds["detection"][0]
        want = [
            {"category_id": IDS[int(label) - 1], "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(s)}
            for (x1, y1, x2, y2), s, label in zip(
                det["boxes"].tolist(), det["scores"], det["labels"], strict=True
            )
        ]
        assert row["detection"] == want and len(want) > 0
        for head, K in (("semantic", 7), ("parts", 13)):
            labels = preds[head]["label_map"][0]  # (H, W)
            assert torch.equal(out.extras[f"_{head}"], labels.to(torch.uint8))
            assert row[head] == {"class_pixels": torch.bincount(labels.reshape(-1), minlength=K).tolist()}
        disparity = preds["depth"]["disparity"][0, 0]  # (H, W) px
        assert out.arrays["_disparity"].dtype == torch.float32
        assert torch.equal(out.arrays["_disparity"], disparity)
        assert tuple(out.extras["_disparity"].shape) == (3, H, W)
        depth = out.arrays["_depth"]  # the head's own camera: 40 px x 0.2 m
        assert torch.allclose(depth, 8.0 / disparity, rtol=1e-5)
        assert row["depth"]["camera"] == {"focal": 40.0, "baseline": 0.2, "doffs": 0.0, "source": "model"}
        assert row["depth"]["median_depth"] == pytest.approx(float(depth.median()), abs=1e-3)
        assert row["depth"]["max_disparity"] == pytest.approx(float(disparity.max()), abs=1e-3)
        png16 = out.extras["_depth"]  # (H, W) uint16, metres x 256
        assert png16.dtype == torch.uint16 and (png16.double() - depth.double() * 256).abs().max() <= 0.501


def test_calib_overrides_the_heads_camera_and_no_camera_writes_no_depth(tmp_path: Path) -> None:
    image = torch.rand(3, 32, 32)
    calibrated = _model(heads="depth", focal=40.0, baseline=0.2)
    with torch.no_grad():
        (out,) = predict_multi_task_batch(calibrated, [image], _job(tmp_path, calib=(50.0, 0.1, 2.0)))
        (plain,) = predict_multi_task_batch(_model(heads="depth"), [image], _job(tmp_path))
    disparity = out.arrays["_disparity"]
    assert torch.allclose(out.arrays["_depth"], 5.0 / (disparity + 2.0), rtol=1e-5)
    assert out.rows[0]["depth"]["camera"]["source"] == "--calib"
    assert set(plain.arrays) == {"_disparity"} and set(plain.extras) == {"_disparity"}
    assert "median_depth" not in plain.rows[0]["depth"]


def test_a_resampled_model_view_comes_back_in_the_images_pixels(tmp_path: Path) -> None:
    model = _model(heads="detection,semantic,depth")
    image = torch.rand(3, 48, 64)
    with torch.no_grad():
        (out,) = predict_multi_task_batch(model, [image], _job(tmp_path, input_size=32))
        small = model([PredictJob([], tmp_path, input_size=32).model_view(image)])[0]  # (24, 32)
    assert out.extras["_semantic"].shape == (48, 64) and out.arrays["_disparity"].shape == (48, 64)
    disparity = small["depth"]["disparity"]  # (1, 1, 24, 32) px of the 32-px width: twice as many at 64 px
    resampled = 2 * F.interpolate(disparity, size=(48, 64), mode="bilinear", align_corners=False)[0, 0]
    assert torch.allclose(out.arrays["_disparity"], resampled)
    boxes = small["detection"][0]["boxes"]
    first = out.rows[0]["detection"][0]["bbox"]
    assert first[:2] == pytest.approx((2 * boxes[0, :2]).tolist(), abs=1e-4)


def test_bad_requests_are_one_line_value_errors(tmp_path: Path) -> None:
    image = torch.rand(3, 32, 32)
    with pytest.raises(ValueError, match=r"--calib: the model has no depth head \(its heads: semantic\)"):
        predict_multi_task_batch(_model(heads="semantic"), [image], _job(tmp_path, calib=(1.0, 1.0, 0.0)))
    with pytest.raises(ValueError, match="Linear has no heads: not a multi-task model"):
        predict_multi_task_batch(nn.Linear(1, 1), [image], _job(tmp_path))
    with pytest.raises(ValueError, match="pictures of one height"):
        side_by_side([torch.zeros(3, 4, 5, dtype=torch.uint8), torch.zeros(3, 5, 5, dtype=torch.uint8)])


def test_depth_png_values_round_and_clip() -> None:
    depth = torch.tensor([[0.0, 1.0 / 256, 1.4 / 256, 300.0], [float("nan"), -1.0, 2.5, 255.99]])
    values, clipped = depth_png_values(depth)
    assert values.dtype == torch.uint16 and clipped == 1
    assert values.tolist() == [[0, 1, 1, 65535], [0, 0, 640, 65533]]


def test_the_predict_loop_writes_every_file_with_its_name_in_the_json(tmp_path: Path) -> None:
    paths = [tmp_path / "in" / "a.png", tmp_path / "in" / "sub" / "b.png"]
    for path, size in zip(paths, [(40, 48), (24, 36)], strict=True):
        write_image(path, torch.rand(3, *size))
    out = tmp_path / "out"
    stems = [Path("a"), Path("sub") / "b"]
    job = PredictJob(paths, out, category_ids=IDS, stems=stems, progress=False, calib=(50.0, 0.1, 0.0))
    run_predict(get_task("multi_task"), _model(), job)
    rows = json.loads((out / "predictions.json").read_text())
    assert [r["file_name"] for r in rows] == [str(p) for p in paths]
    row = rows[1]
    names = {key: row[key] for key in row if key.endswith(("_png", "_npy"))}
    assert names == {
        "semantic_png": "sub/b_semantic.png", "parts_png": "sub/b_parts.png",
        "disparity_png": "sub/b_disparity.png", "depth_png": "sub/b_depth.png",
        "disparity_npy": "sub/b_disparity.npy", "depth_npy": "sub/b_depth.npy",
    }  # fmt: skip
    assert Image.open(out / names["semantic_png"]).mode == "L"
    assert Image.open(out / names["disparity_png"]).mode == "RGB"
    png16 = Image.open(out / names["depth_png"])
    depth = np.load(out / names["depth_npy"])
    assert png16.mode == "I;16" and depth.dtype == np.float32 and depth.shape == (24, 36)
    assert np.abs(np.asarray(png16) - depth.astype(np.float64) * 256).max() <= 0.501  # float32 -> rounding
    assert np.allclose(depth, 5.0 / np.load(out / names["disparity_npy"]), rtol=1e-5)
    assert Image.open(out / "sub" / "b.png").size == (4 * 36 + 6, 24)
    images = json.loads((out / "images.json").read_text())
    assert images[1]["depth_npy"] == "sub/b_depth.npy" and images[1]["output"] == "sub/b.png"


def test_the_loop_refuses_an_extra_it_cannot_write(tmp_path: Path) -> None:
    class Bad:
        name = "bad"

        def predict_batch(self, model: nn.Module, images: list[Tensor], job: PredictJob) -> list[ItemOutput]:
            return [ItemOutput([{}], extras={"_x": torch.zeros(2, 2, dtype=torch.float32)}) for _ in images]

        def finish_video(self, *args: Any) -> list[str]:
            return []

    write_image(tmp_path / "a.png", torch.rand(3, 8, 8))
    job = PredictJob([tmp_path / "a.png"], tmp_path / "out", progress=False)
    with pytest.raises(
        ValueError, match=r"a_x\.png: an extra picture must be uint8 \[H, W\].*got torch\.float32"
    ):
        run_predict(Bad(), nn.Linear(1, 1), job)  # type: ignore[arg-type]
