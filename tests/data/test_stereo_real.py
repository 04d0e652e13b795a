"""Real stereo pairs with disparity and calibration: the Middlebury pairs (checked against the files
and the photographs themselves), the calib.txt / PFM / disparity readers (good and broken files,
limits), the user folder layout and its splits, and a bounded fuzz pass over the new readers.

Aloe comes from ``make data`` (opencv-doc); tests that need it skip without it, and fail under
STRUCTPRED_REQUIRE_DATA=1.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from structpred.data import limits
from structpred.data.fetch_opencv_doc import missing_files, opencv_doc_file
from structpred.data.stereo_real import (
    MOTORCYCLE_CALIBRATION,
    Calibration,
    StereoFolder,
    StereoReal,
    open_stereo_folder,
    parse_calib_txt,
    parse_pfm,
    read_calib_txt,
    read_disparity_file,
    read_pfm,
)
from structpred.data.transforms import hflip, resize
from structpred.ops.warp import flow_warp
from tests.fuzz import targets
from tests.fuzz.targets_stereo import MOTORCYCLE_CALIB, STEREO_TARGETS, pfm_bytes, png16_bytes

needs_opencv_doc = pytest.mark.skipif(
    bool(missing_files()) and os.environ.get("STRUCTPRED_REQUIRE_DATA") != "1",
    reason="OpenCV example data not fetched (make data; STRUCTPRED_REQUIRE_DATA=1 makes this fail)",
)


def photo_error(views: torch.Tensor, disparity: torch.Tensor, valid: torch.Tensor) -> float:
    """Mean |left - right[x - d]| over valid pixels (the right view warped by flow (-d, 0))."""
    flow = torch.cat([-disparity, torch.zeros_like(disparity)])[None]  # (1, 2, h, w)
    warped = flow_warp(views[1][None], flow)[0]
    return float((warped - views[0]).abs().mean(0)[valid].mean())


# ----------------------------------------------------------------------------- Middlebury pairs


def test_motorcycle_targets_calibration_and_convention():
    views, target = StereoReal("val", pairs="motorcycle", scale=4)[0]
    assert views.shape == (2, 3, 125, 185) and views.dtype == torch.float32
    assert set(target) == {"image_id", "stereo", "disparity", "valid", "focal", "baseline", "doffs"}
    d, valid = target["disparity"], target["valid"]
    assert d.shape == (1, 125, 185) and valid.dtype == torch.bool and 0.8 < valid.float().mean() < 1.0
    assert bool(torch.isfinite(d).all()) and float(d.min()) >= 0.0
    ratio = 185 / 741  # focal, doffs and disparity follow the width
    assert float(target["focal"]) == pytest.approx(994.978 * ratio, rel=1e-6)
    assert float(target["doffs"]) == pytest.approx(31.086 * ratio, rel=1e-6)
    assert float(target["baseline"]) == pytest.approx(0.193001)
    # left x <-> right x - d: the photographs agree under the ground truth, not under the mirror sign
    good = photo_error(views, d, valid)
    assert good < 0.06 and 2 * good < photo_error(views, -d, valid)
    assert good < min(photo_error(views, 0.9 * d, valid), photo_error(views, 1.1 * d, valid))  # the scale


def test_depth_is_scale_invariant_and_matches_the_formula():
    full = StereoReal("test", pairs=("motorcycle",))[0][1]
    small = StereoReal("test", pairs=("motorcycle",), scale=2)[0][1]

    def depth(t: dict) -> torch.Tensor:
        return t["focal"] * t["baseline"] / (t["disparity"][0][t["valid"]] + t["doffs"])

    a, b = depth(full), depth(small)
    assert float(a.median()) == pytest.approx(float(b.median()), rel=0.02)
    # a direct reference at known pixels of the full-size file; unknown (inf) ones are 0 and not valid
    raw = torch.from_numpy(np.load(StereoReal("val", pairs="motorcycle").files["motorcycle"][2])["arr_0"])
    known = torch.isfinite(raw)
    assert torch.equal(full["valid"] & ~known, torch.zeros_like(known)) and not bool(
        full["disparity"][0][~known].any()
    )
    i, j = (int(v) for v in torch.nonzero(full["valid"])[len(a) // 2])
    z = 994.978 * 0.193001 / (float(raw[i, j]) + 31.086)
    ours = full["focal"] * full["baseline"] / (full["disparity"][0, i, j] + full["doffs"])
    assert float(ours) == pytest.approx(z, rel=1e-5)


def test_train_split_has_no_ground_truth_but_the_same_views():
    train = StereoReal("train", pairs="motorcycle", scale=4)
    val = StereoReal("val", pairs="motorcycle", scale=4)
    (tv, tt), (vv, _) = train[0], val[0]
    assert torch.equal(tv, vv)
    assert set(tt) == {"image_id", "stereo", "focal", "baseline", "doffs"}


@needs_opencv_doc
def test_unlabelled_uncalibrated_pair_flips_as_a_stereo_pair():
    """An Aloe train item has no disparity, no calibration: its ``stereo`` marker makes a flip swap views."""
    views, target = StereoReal("train", pairs="aloe", scale=8)[0]
    assert set(target) == {"image_id", "stereo"}
    flipped, out = hflip(views, target)
    assert torch.equal(flipped[0], views[1].flip(-1)) and torch.equal(flipped[1], views[0].flip(-1))
    assert set(out) == {"image_id", "stereo"}
    unmarked = {"image_id": target["image_id"]}  # without the marker: a plain pair, mirrored in place
    assert torch.equal(hflip(views, unmarked)[0], views.flip(-1))


@needs_opencv_doc
def test_aloe_disparity_is_the_png_value_and_has_no_calibration():
    views, target = StereoReal("val", pairs="aloe")[0]
    gt = np.asarray(Image.open(opencv_doc_file("aloeGT.png"))).astype(np.float32)
    valid = target["valid"]
    assert set(target) == {"image_id", "stereo", "disparity", "valid"}  # calibration not confirmed: none
    assert torch.equal(target["disparity"][0][valid], torch.from_numpy(gt)[valid])
    assert not bool((valid & torch.from_numpy(gt == 0)).any())
    small_views, small = resize(views, target, (278, 320))  # what scale=4 does, without a second decode
    good = photo_error(small_views, small["disparity"], small["valid"])
    assert good < 0.08 and 2 * good < photo_error(small_views, -small["disparity"], small["valid"])
    for wrong in (0.9, 1.1):  # pixel value = disparity: another scale matches worse
        assert good < photo_error(small_views, wrong * small["disparity"], small["valid"])
    assert set(StereoReal("train", pairs="aloe", scale=8)[0][1]) == {"image_id", "stereo"}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"split": "trainval"}, "split"),
        ({"pairs": ("kitti",)}, "pairs"),
        ({"pairs": ()}, "pairs"),
        ({"pairs": ("motorcycle", "motorcycle")}, "pairs"),
        ({"scale": 0.5}, "scale"),
        ({"scale": True}, "scale"),
    ],
)
def test_stereo_real_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        StereoReal(**kwargs)


def test_calibration_at_width():
    full = parse_calib_txt(MOTORCYCLE_CALIB.encode())
    assert (full.focal, full.baseline, full.doffs, full.width) == (3979.911, 0.193001, 124.343, 2964)
    quarter = full.at_width(741)  # skimage's Motorcycle is the 2964-px image shrunk 4x
    assert quarter.focal == pytest.approx(MOTORCYCLE_CALIBRATION["focal"], abs=2e-3)
    assert quarter.doffs == pytest.approx(MOTORCYCLE_CALIBRATION["doffs"], abs=2e-3)
    assert Calibration(5.0, 1.0).at_width(10) == Calibration(5.0, 1.0, 0.0, 10)


# ----------------------------------------------------------------------------- calib.txt


def test_calib_doffs_from_cam1_and_defaults():
    c = parse_calib_txt(
        b"cam0=[100 0 50; 0 100 40; 0 0 1]\ncam1=[100 0 53.5; 0 100 40; 0 0 1]\nbaseline=120\n"
    )
    assert (c.focal, c.baseline, c.doffs, c.width) == (100.0, 0.12, 3.5, None)
    c = parse_calib_txt(b"# comment\n\ncam0 = [7 0 1; 0 7 1; 0 0 1]\nbaseline = 50\nndisp=64\n")
    assert (c.focal, c.doffs) == (7.0, 0.0)


@pytest.mark.parametrize(
    "text, match",
    [
        (b"baseline=1\n", "no cam0"),
        (b"cam0=[1 0 0; 0 1 0; 0 0 1]\n", "no baseline"),
        (b"cam0=[1 0 0; 0 1 0]\nbaseline=1", "3 x 3"),
        (b"cam0=1 0 0; 0 1 0; 0 0 1\nbaseline=1", "matrix"),
        (b"cam0=[1 0 0; 0 1 0; 0 0 1]\nbaseline=nan", "finite"),
        (b"cam0=[1 0 0; 0 1 0; 0 0 1]\nbaseline=abc", "not a number"),
        (b"cam0=[-1 0 0; 0 1 0; 0 0 1]\nbaseline=1", "must be > 0"),
        (b"cam0=[1 0 0; 0 1 0; 0 0 1]\nbaseline=0", "must be > 0"),
        (b"cam0=[1 0 0; 0 1 0; 0 0 1]\nbaseline=1\nbaseline=2", "twice"),
        (b"cam0=[1 0 0; 0 1 0; 0 0 1]\nbaseline=1\ndoffs=-3", "swapped"),
        (b"cam0=[1 0 5; 0 1 0; 0 0 1]\ncam1=[1 0 2; 0 1 0; 0 0 1]\nbaseline=1", "swapped"),
        (b"cam0=[1 0 0; 0 1 0; 0 0 1]\nbaseline=1\nwidth=3.5", "width"),
        (b"cam0=[1 0 0; 0 1 0; 0 0 1]\nbaseline 1", "key=value"),
        (b"\xff\xfe", "UTF-8"),
    ],
)
def test_calib_errors_name_the_file_and_field(text, match):
    with pytest.raises(ValueError, match=match) as info:
        parse_calib_txt(text, "my/calib.txt")
    assert str(info.value).startswith("my/calib.txt: ") and "\n" not in str(info.value)


def test_calib_file_errors_and_limit(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        read_calib_txt(tmp_path / "calib.txt")
    path = tmp_path / "calib.txt"
    path.write_text(MOTORCYCLE_CALIB)
    assert read_calib_txt(path).width == 2964
    with limits.override(max_text_file_bytes=50), pytest.raises(limits.LimitError, match="calib.txt"):
        read_calib_txt(path)


# ----------------------------------------------------------------------------- PFM and disparity files


def test_pfm_both_byte_orders_rows_bottom_up(tmp_path):
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    values[1, 2] = np.inf
    for little in (True, False):
        path = tmp_path / f"d{little}.pfm"
        path.write_bytes(pfm_bytes(values, little))
        assert torch.equal(read_pfm(path), torch.from_numpy(values))
    # the format's own layout, written out by hand: the first data row is the bottom row
    raw = b"Pf\n2 2\n-1.0\n" + np.array([[3, 4], [1, 2]], dtype="<f4").tobytes()
    assert parse_pfm(raw).tolist() == [[1.0, 2.0], [3.0, 4.0]]


@pytest.mark.parametrize(
    "data, match",
    [
        (b"P6\n2 2\n255\n" + bytes(12), "not a PFM"),
        (b"PF\n1 1\n-1.0\n" + bytes(12), "colour"),
        (b"Pf\n0 3\n-1.0\n", "empty"),
        (b"Pf\n2 2\n0\n" + bytes(16), "scale"),
        (b"Pf\n2 2\n-1.0\n" + bytes(15), "15 data bytes, expected 16"),
        (b"Pf\n2 2\n-1.0\n" + bytes(17), "expected 16"),
    ],
)
def test_pfm_errors(data, match):
    with pytest.raises(ValueError, match=match) as info:
        parse_pfm(data, "x.pfm")
    assert str(info.value).startswith("x.pfm: ")


def test_pfm_limit_before_reading():
    with limits.override(max_pixels=100), pytest.raises(limits.LimitError, match="max_pixels"):
        parse_pfm(b"Pf\n20 20\n-1.0\n" + bytes(1600), "big.pfm")


def test_npy_limit_before_loading(tmp_path):
    path = _npy(tmp_path, np.ones((20, 20), dtype=np.float32))
    with limits.override(max_pixels=100), pytest.raises(limits.LimitError, match=r"d.npy.*max_pixels"):
        read_disparity_file(path)


def test_read_disparity_file_formats(tmp_path):
    values = np.array([[0.0, 1.5, 2.25], [np.inf, 0.0, 2.0]], dtype=np.float32)
    (tmp_path / "d.png").write_bytes(png16_bytes(np.nan_to_num(values, posinf=0) * 256))
    np.save(tmp_path / "d.npy", values)
    (tmp_path / "d.pfm").write_bytes(pfm_bytes(values))
    known = torch.tensor([[False, True, True], [False, False, True]])
    for name in ("d.png", "d.npy", "d.pfm"):
        d, k = read_disparity_file(tmp_path / name, (2, 3))
        assert d.shape == (1, 2, 3) and torch.equal(k, known), name
        assert d[0].tolist() == [[0.0, 1.5, 2.25], [0.0, 0.0, 2.0]], name


def _npy(tmp_path: Path, values: np.ndarray, name: str = "d.npy") -> Path:
    path = tmp_path / name
    np.save(path, values)
    return path


def test_read_disparity_file_errors(tmp_path):
    ok = np.ones((2, 3), dtype=np.float32)
    cases = [
        (_npy(tmp_path, np.array([[np.nan, 1.0]]), "nan.npy"), None, "NaN"),
        (_npy(tmp_path, np.array([[-1.0, 1.0]]), "neg.npy"), None, "negative"),
        (_npy(tmp_path, np.array([[-np.inf, 1.0]]), "minf.npy"), None, "-inf"),
        (_npy(tmp_path, np.array([[1.0, 30.0]]), "scale.npy"), None, "exceeds the width 2: wrong scale"),
        (_npy(tmp_path, ok, "size.npy"), (3, 3), "left image is 3 x 3"),
        (_npy(tmp_path, np.zeros((0, 3)), "empty.npy"), None, "empty"),
        (_npy(tmp_path, np.ones((2, 2, 2)), "rgb.npy"), None, "expected numbers"),
        (_npy(tmp_path, np.array(["a"]), "str.npy"), None, "expected numbers"),
    ]
    Image.fromarray(np.ones((2, 3), dtype=np.uint8)).save(tmp_path / "d8.png")
    cases.append((tmp_path / "d8.png", None, "16-bit"))
    (tmp_path / "d.bmp").write_bytes(b"x")
    cases.append((tmp_path / "d.bmp", None, "must be .png"))
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    cases.append((tmp_path / "bad.npy", None, "not a .npy"))
    for path, size, match in cases:
        with pytest.raises(ValueError, match=match) as info:
            read_disparity_file(path, size)
        assert str(path) in str(info.value) and "\n" not in str(info.value), path


# ----------------------------------------------------------------------------- user folder


def make_folder(root: Path, names=("a.png", "b.jpg"), size=(12, 16), disparity=".png", calib=True) -> Path:
    rng = np.random.default_rng(0)
    for side in ("left", "right"):
        (root / side).mkdir(parents=True, exist_ok=True)
        for name in names:
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / side / name)
    if disparity:
        (root / "disparity").mkdir(exist_ok=True)
        for name in names:
            d = np.full(size, 2.5, dtype=np.float32)
            d[0, :] = 0  # unknown
            stem = Path(name).stem
            if disparity == ".png":
                (root / "disparity" / f"{stem}.png").write_bytes(png16_bytes(d * 256))
            elif disparity == ".npy":
                np.save(root / "disparity" / f"{stem}.npy", d)
    if calib:
        (root / "calib.txt").write_text("cam0=[20 0 8; 0 20 6; 0 0 1]\ndoffs=4\nbaseline=100\nwidth=32\n")
    return root


def test_folder_items(tmp_path):
    data = StereoFolder(make_folder(tmp_path / "s"), scale=2)
    assert len(data) == 2 and data.names == ("a.png", "b.jpg")
    views, target = data[1]
    assert views.shape == (2, 3, 6, 8)
    assert set(target) == {"image_id", "stereo", "disparity", "valid", "focal", "baseline", "doffs"}
    # calib.txt is for width 32: the 16-px images halve focal / doffs, scale 2 halves them again
    assert float(target["focal"]) == pytest.approx(5.0) and float(target["doffs"]) == pytest.approx(1.0)
    assert float(target["baseline"]) == pytest.approx(0.1)
    assert float(target["disparity"].max()) == pytest.approx(1.25)
    full = StereoFolder(tmp_path / "s")[0][1]  # row 0 is unknown (0) in the files
    assert not full["valid"][0].any() and full["valid"][1:, 3:].all()
    assert float(full["disparity"].max()) == pytest.approx(2.5)
    bare = StereoFolder(make_folder(tmp_path / "n", disparity=None, calib=False))[0][1]
    assert set(bare) == {"image_id", "stereo"}


def test_folder_errors(tmp_path):
    root = make_folder(tmp_path / "s")
    (root / "right" / "b.jpg").unlink()
    with pytest.raises(ValueError, match=r"right/b.jpg: right image not found"):
        StereoFolder(root)
    root = make_folder(tmp_path / "t")
    Image.fromarray(np.zeros((12, 15, 3), dtype=np.uint8)).save(root / "right" / "a.png")
    with pytest.raises(ValueError, match=r"right/a.png: right image is 12 x 15 but the left"):
        StereoFolder(root)[0]
    root = make_folder(tmp_path / "u")
    (root / "disparity" / "a.png").unlink()
    with pytest.raises(ValueError, match="no disparity file for a.png"):
        StereoFolder(root)
    root = make_folder(tmp_path / "v", disparity=".npy")
    np.save(root / "disparity" / "a.npy", np.ones((5, 5), dtype=np.float32))
    with pytest.raises(ValueError, match=r"a.npy: disparity is 5 x 5 but the left image is 12 x 16"):
        StereoFolder(root)[0]
    empty = tmp_path / "w"
    (empty / "left").mkdir(parents=True)
    (empty / "right").mkdir()
    with pytest.raises(ValueError, match="no .png / .jpg images"):
        StereoFolder(empty)
    with pytest.raises(ValueError, match="folder not found"):
        StereoFolder(tmp_path / "nowhere")
    root = make_folder(tmp_path / "x")
    (root / "calib.txt").write_text("baseline=1\n")
    with pytest.raises(ValueError, match=r"calib.txt: no cam0"):
        StereoFolder(root)


def test_open_stereo_folder_splits(tmp_path):
    root = make_folder(tmp_path / "one", names=("a.png", "b.png", "c.png", "d.png"))
    assert len(open_stereo_folder(root, "train")) == 4
    with pytest.raises(ValueError, match="no 'val' split.*--val-fraction"):
        open_stereo_folder(root, "val")
    val = open_stereo_folder(root, "val", val_fraction=0.25, split_seed=1)
    train = open_stereo_folder(root, "train", val_fraction=0.25, split_seed=1)
    assert len(val) == 1 and len(train) == 3
    split_root = tmp_path / "split"
    make_folder(split_root / "training", names=("a.png",))
    make_folder(split_root / "val", names=("b.png", "c.png"))
    assert (
        len(open_stereo_folder(split_root, "train")) == 1 and len(open_stereo_folder(split_root, "val")) == 2
    )
    with pytest.raises(ValueError, match="no 'test' split"):
        open_stereo_folder(split_root, "test")
    (tmp_path / "none" / "other").mkdir(parents=True)
    with pytest.raises(ValueError, match="no left/ folder"):
        open_stereo_folder(tmp_path / "none", "train")
    with pytest.raises(ValueError, match="folder not found"):
        open_stereo_folder(tmp_path / "missing", "train")


# ----------------------------------------------------------------------------- fuzz


@pytest.mark.parametrize("target", STEREO_TARGETS, ids=lambda t: t.name)
def test_stereo_readers_fuzz_bounded(target, tmp_path):
    """Seeds read; 40 derandomised mutated inputs give a result or a one-line error naming the file."""
    path, run = target.setup(tmp_path)
    corpus = targets.seeds(target)
    assert corpus, f"no seeds in tests/fuzz/corpus/{target.name} (python -m tests.fuzz.targets_stereo)"
    for data in corpus:
        path.write_bytes(data)
        run()
    for n in range(40):
        path.write_bytes(targets.generate(target, corpus, random.Random(f"0:{n}")))
        try:
            run()
            err = None
        except Exception as exc:  # noqa: BLE001 (the oracle classifies it)
            err = exc
        kind = targets.outcome(err, tmp_path)
        assert kind in ("ok", "error"), (target.name, n, kind, repr(err)[:300])


def test_zero_size_left_image_is_a_clear_error(tmp_path):
    """A PNG whose header declares width 0 (valid CRC): one line naming the file."""
    import struct

    from tests.fuzz.mutate import _png_chunks, _png_join

    root = make_folder(tmp_path / "z", names=("a.png",), disparity=None, calib=False)
    chunks = _png_chunks((root / "left" / "a.png").read_bytes())
    assert chunks is not None
    w, h, *rest = struct.unpack(">IIBBBBB", chunks[0][1])
    chunks[0] = (b"IHDR", struct.pack(">IIBBBBB", 0, h, *rest))
    (root / "left" / "a.png").write_bytes(_png_join(chunks))
    with pytest.raises(ValueError, match=r"left/a.png") as info:
        StereoFolder(root)[0]
    assert "\n" not in str(info.value)
