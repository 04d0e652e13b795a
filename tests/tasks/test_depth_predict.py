"""The depth predict writer: pairs for a stereo model, single views for a monocular one, the files
it writes (colour PNG, .npy, 16-bit KITTI depth PNG) checked against the model's own output, and
its refusals before anything is written."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from structpred.data.flow_real import read_disparity_png
from structpred.data.images import read_image, write_image
from structpred.tasks.base import PredictJob
from structpred.tasks.depth_predict import predict_depth_files, predict_disparity, write_depth_png
from structpred.viz.depth import disparity_to_color


class TinyStereo(nn.Module):
    """Follows the stereo contract: pairs [2, 3, H, W] -> {"disparity": [B, 1, H, W]} px."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(6, 1, 3, padding=1)
        self.seen: list[tuple[int, ...]] = []

    def forward(self, images: list[Tensor], targets: object = None) -> tuple[dict[str, Tensor], dict]:
        x = torch.stack(images)  # (B, 2, 3, H, W)
        self.seen.append(tuple(x.shape))
        assert x.shape[1] == 2
        B, _, _, H, W = x.shape
        disp = nn.functional.softplus(self.conv(x.reshape(B, 6, H, W))) * 4  # (B, 1, H, W)
        return {"disparity": disp}, {}


class TinyMono(TinyStereo):
    """The monocular contract at inference: single views [1, 3, H, W]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 3, padding=1)

    def forward(self, images: list[Tensor], targets: object = None) -> tuple[dict[str, Tensor], dict]:
        x = torch.stack(images)  # (B, 1, 3, H, W)
        self.seen.append(tuple(x.shape))
        assert x.shape[1] == 1
        return {"disparity": nn.functional.softplus(self.conv(x[:, 0])) * 4}, {}


class QuarterWidth(nn.Module):
    """Predicts disparity = W / 4 of whatever width it sees (and 0 in the first column)."""

    def __init__(self) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.zeros(()))

    def forward(self, images: list[Tensor], targets: object = None) -> tuple[dict[str, Tensor], dict]:
        x = torch.stack(images)
        B, _, _, H, W = x.shape
        disp = torch.full((B, 1, H, W), W / 4.0)
        disp[..., 0] = 0.0
        return {"disparity": disp}, {}


def images(folder: Path, n: int, size: tuple[int, int] = (24, 40), seed: int = 0) -> list[Path]:
    g = torch.Generator().manual_seed(seed)
    paths = []
    for i in range(n):
        path = folder / f"im{i}.png"
        write_image(path, torch.rand(3, *size, generator=g))
        paths.append(path)
    return paths


def job(paths: list[Path], out: Path, **kw: object) -> PredictJob:
    return PredictJob(paths=paths, out=out, progress=False, **kw)  # type: ignore[arg-type]


def test_stereo_pairs_write_disparity_files(tmp_path):
    paths = images(tmp_path / "in", 4)
    model = TinyStereo()
    out = tmp_path / "out"
    result = predict_depth_files(model, job(paths, out), pairs=True, calib=None)
    assert model.seen == [(1, 2, 3, 24, 40)] * 2
    rows = json.loads(result.read_text())
    assert [r["file_name"] for r in rows] == [str(paths[0]), str(paths[2])]
    assert [r["right_file"] for r in rows] == [str(paths[1]), str(paths[3])]
    for k, row in enumerate(rows):
        pair = torch.stack([read_image(paths[2 * k]), read_image(paths[2 * k + 1])])
        with torch.no_grad():
            want = model([pair])[0]["disparity"][0]  # (1, H, W)
        got = np.load(out / row["disparity_npy"])
        assert got.dtype == np.float32 and got.shape == (24, 40)
        assert np.allclose(got, want[0].detach().numpy(), atol=1e-6)
        png = read_image(out / row["disparity_png"])
        assert torch.equal((png * 255).round().to(torch.uint8), disparity_to_color(want.detach()))
        assert row["max_disparity"] == pytest.approx(float(want.max()), abs=1e-4)
        assert "depth_npy" not in row
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["images.json", "predictions.json"] + [f"im{i}_disparity.{e}" for i in (0, 2) for e in ("png", "npy")]
    )
    assert len(json.loads((out / "images.json").read_text())) == 2


def test_mono_reads_each_image_alone_and_writes_depth(tmp_path):
    paths = images(tmp_path / "in", 3)
    model = TinyMono()
    out = tmp_path / "out"
    calib = (500.0, 0.2, 3.0)
    rows = json.loads(predict_depth_files(model, job(paths, out), pairs=False, calib=calib).read_text())
    assert model.seen == [(1, 1, 3, 24, 40)] * 3 and len(rows) == 3
    for row in rows:
        disp = torch.from_numpy(np.load(out / row["disparity_npy"])).double()
        depth = np.load(out / row["depth_npy"])
        assert np.allclose(depth, 500.0 * 0.2 / (disp.numpy() + 3.0), rtol=1e-6)
        from_png, known = read_disparity_png(out / row["depth_png"], divisor=256.0)  # KITTI: value / 256
        assert known.all()
        assert np.abs(from_png[0].numpy() - depth).max() <= 0.5 / 256 + 1e-6
        assert row["median_depth"] == pytest.approx(float(np.median(depth)), rel=1e-3)


def test_input_size_and_unknown_depth(tmp_path):
    paths = images(tmp_path / "in", 2, size=(20, 64))
    out = tmp_path / "out"
    predict_depth_files(QuarterWidth(), job(paths, out, input_size=32), pairs=True, calib=(10.0, 1.0, 0.0))
    disp = np.load(out / "im0_disparity.npy")
    assert disp.shape == (20, 64)
    assert np.allclose(disp[:, 4:], 16.0, atol=1e-4)  # W / 4 of the 64 px input, not of the model's 32
    depth = np.load(out / "im0_depth.npy")
    assert np.allclose(depth[:, 4:], 10.0 / 16.0, atol=1e-5)
    pred = predict_disparity(QuarterWidth(), torch.rand(3, 8, 12))  # one view, native size
    assert pred.shape == (1, 8, 12) and float(pred[0, 0, 1]) == 3.0 and float(pred[0, 0, 0]) == 0.0
    png, known = read_disparity_png(out / "im0_depth.png")
    raw = np.asarray(png[0])
    assert raw[0, 0] == 0 and not known[0, 0]  # zero disparity: unknown depth, 0 in the PNG


def test_depth_png_clips_beyond_kitti_range(tmp_path, caplog):
    depth = torch.tensor([[1.0, 300.0, float("nan"), -2.0, 255.99]])
    assert write_depth_png(tmp_path / "d.png", depth) == 1
    values, _ = read_disparity_png(tmp_path / "d.png")
    assert values[0, 0].tolist() == [256.0, 65535.0, 0.0, 0.0, round(255.99 * 256)]
    paths = images(tmp_path / "in", 1)
    with caplog.at_level(logging.WARNING):
        predict_depth_files(QuarterWidth(), job(paths, tmp_path / "out"), pairs=False, calib=(1e4, 1.0, 0.0))
    assert "beyond 255.996 m" in caplog.text


def test_refusals_write_nothing(tmp_path):
    paths = images(tmp_path / "in", 3)
    out = tmp_path / "out"
    cases = [
        (paths, True, None, "odd number"),
        ([*paths[:1], *images(tmp_path / "other", 1, size=(24, 41))], True, None, "one size"),
        (paths, False, (0.0, 1.0, 0.0), "focal > 0"),
        (paths, False, "1,2,x", "FOCAL,BASELINE"),
    ]
    broken = tmp_path / "in" / "broken.png"
    broken.write_bytes(b"not a png")
    cases.append(([paths[0], broken], True, None, "broken.png"))
    video = tmp_path / "in" / "clip.mp4"
    video.write_bytes(b"")
    cases.append(([paths[0], video], False, None, "not videos"))
    for inputs, pairs, calib, match in cases:
        with pytest.raises(ValueError, match=match):
            predict_depth_files(TinyStereo(), job(inputs, out), pairs=pairs, calib=calib)
        assert not out.exists()


def test_never_overwrites_an_input(tmp_path):
    folder = tmp_path / "in"
    (first,) = images(folder, 1)
    victim = folder / "im0_disparity.png"
    victim.write_bytes(first.read_bytes())
    with pytest.raises(ValueError, match="overwrite an input"):
        predict_depth_files(TinyMono(), job([first, victim], folder), pairs=False, calib=None)
    assert victim.read_bytes() == first.read_bytes()


def test_bad_frames_in_python_entry():
    with pytest.raises(ValueError, match="one size"):
        predict_disparity(TinyStereo(), torch.rand(3, 8, 8), torch.rand(3, 8, 9))
    with pytest.raises(ValueError, match="NaN"):
        predict_disparity(TinyMono(), torch.full((3, 8, 8), float("nan")))


@pytest.mark.parametrize(("name", "pairs"), [("monodepth_narrow", False), ("stereo_net_narrow", True)])
def test_registry_models(tmp_path, name, pairs):
    from structpred.models import get_model

    model = get_model(name).eval()
    paths = images(tmp_path / "in", 2, size=(32, 64))
    rows = json.loads(
        predict_depth_files(
            model, job(paths, tmp_path / "out"), pairs=pairs, calib=(64.0, 0.1, 0.0)
        ).read_text()
    )
    assert len(rows) == (1 if pairs else 2)
    disp = np.load(tmp_path / "out" / rows[0]["disparity_npy"])
    assert disp.shape == (32, 64) and np.isfinite(disp).all() and (disp >= 0).all()
