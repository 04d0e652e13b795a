"""FlyingChairs-style pairs: flow exact by construction (photometric constancy where valid), the
valid / occluded masks, the displacement bound, determinism, sizes, sources and bad arguments."""

from __future__ import annotations

import pytest
import torch

from structpred.data.flow_warped import SOURCES, WarpedPhotoFlow, _inside_polygon, _star_polygon
from structpred.data.registry import build_dataset
from structpred.ops.warp import flow_warp

SMALL = {"size": (48, 64), "num_images": 8, "sources": ("sklearn", "skimage")}


def constancy(views: torch.Tensor, target: dict[str, torch.Tensor], mask: torch.Tensor) -> float:
    warped = flow_warp(views[1][None], target["flow"][None])[0]  # frame1[p + flow[p]]
    return float((warped - views[0]).abs().mean(0)[mask].mean())


def test_item_contract_and_registry():
    ds = build_dataset("flow-warped", "train", **SMALL)
    assert isinstance(ds, WarpedPhotoFlow) and len(ds) == 8
    views, target = ds[3]
    assert views.shape == (2, 3, 48, 64) and views.dtype == torch.float32
    assert 0.0 <= float(views.min()) and float(views.max()) <= 1.0
    assert set(target) == {"flow", "valid", "image_id"}
    assert target["flow"].shape == (2, 48, 64) and target["flow"].dtype == torch.float32
    assert target["valid"].dtype == torch.bool and int(target["image_id"]) == 3
    assert len(WarpedPhotoFlow("val")) == 200


def test_photometric_constancy_where_valid():
    ds = WarpedPhotoFlow("train", photometric=False, **SMALL)
    for i in range(4):
        views, target = ds[i]
        valid = target["valid"]
        assert valid.float().mean() > 0.5
        err = constancy(views, target, valid)
        still = float((views[1] - views[0]).abs().mean(0)[valid].mean())
        assert err < 0.03 and err < 0.25 * still, (i, err, still)
        # a flow that is wrong by 2 px is visibly worse: the check can fail
        shifted = {**target, "flow": target["flow"] + torch.tensor([2.0, 0.0])[:, None, None]}
        assert constancy(views, shifted, valid) > 2 * err


def test_invalid_pixels_are_occluded_or_out_of_view():
    ds = WarpedPhotoFlow("train", photometric=False, num_objects=(3, 4), **{**SMALL, "size": (64, 80)})
    worse = 0
    for i in range(4):
        views, target = ds[i]
        valid = target["valid"]
        flow = target["flow"]
        x1 = torch.arange(80) + flow[0]
        y1 = torch.arange(64)[:, None] + flow[1]
        out = (x1 < -0.5) | (x1 >= 79.5) | (y1 < -0.5) | (y1 >= 63.5)
        assert not (valid & out).any()
        occluded = ~valid & ~out
        if occluded.sum() > 20:
            worse += constancy(views, target, occluded) > 3 * constancy(views, target, valid)
    assert worse >= 2


def test_occlusions_flag_gives_the_same_scene_with_an_occluded_mask():
    plain = WarpedPhotoFlow("val", **SMALL)[5]
    with_occ = WarpedPhotoFlow("val", occlusions=True, **SMALL)[5]
    assert torch.equal(plain[0], with_occ[0]) and torch.equal(plain[1]["flow"], with_occ[1]["flow"])
    assert with_occ[1]["valid"].all()
    assert torch.equal(with_occ[1]["occluded"], ~plain[1]["valid"])


def test_displacement_bound_and_size():
    ds = WarpedPhotoFlow("test", size=(40, 56), max_displacement=5.0, num_images=6, sources=("sklearn",))
    for i in range(6):
        views, target = ds[i]
        assert views.shape == (2, 3, 40, 56)
        assert float(target["flow"].norm(dim=0).max()) <= 5.0 * 1.02
    assert WarpedPhotoFlow(size=32, num_images=1, sources="sklearn")[0][0].shape == (2, 3, 32, 32)


def test_background_only_affine_flow_is_affine():
    ds = WarpedPhotoFlow(num_objects=(0, 0), background_motion="affine", **SMALL)
    flow = ds[2][1]["flow"].double()  # (2, H, W)
    ys, xs = torch.meshgrid(torch.arange(48.0), torch.arange(64.0), indexing="ij")
    design = torch.stack([xs.flatten(), ys.flatten(), torch.ones(48 * 64)], dim=1).double()  # (N, 3)
    for c in range(2):
        coef = torch.linalg.lstsq(design, flow[c].flatten()[:, None]).solution
        assert float((design @ coef - flow[c].flatten()[:, None]).abs().max()) < 1e-4
    homography = WarpedPhotoFlow(num_objects=(0, 0), background_motion="homography", **SMALL)
    hflow = homography[2][1]["flow"].double()
    coef = torch.linalg.lstsq(design, hflow[0].flatten()[:, None]).solution
    assert float((design @ coef - hflow[0].flatten()[:, None]).abs().max()) > 1e-3  # not affine


def test_deterministic_by_split_seed_index():
    a = WarpedPhotoFlow("train", **SMALL)
    b = WarpedPhotoFlow("train", **SMALL)
    for i in (0, 7, -1):
        va, ta = a[i]
        vb, tb = b[i]
        assert torch.equal(va, vb) and all(torch.equal(ta[k], tb[k]) for k in ta)
    assert not torch.equal(a[0][0], a[1][0])
    assert not torch.equal(a[0][0], WarpedPhotoFlow("val", **SMALL)[0][0])
    assert not torch.equal(a[0][0], WarpedPhotoFlow("train", seed=1, **SMALL)[0][0])


def test_photometric_changes_differ_between_frames():
    on = WarpedPhotoFlow(**SMALL)[1]
    off = WarpedPhotoFlow(photometric=False, **SMALL)[1]
    assert torch.equal(on[1]["flow"], off[1]["flow"])
    assert not torch.equal(on[0], off[0])
    assert constancy(*on, on[1]["valid"]) > constancy(*off, off[1]["valid"])


def test_polygon_inside_against_ray_casting():
    g = torch.Generator().manual_seed(3)
    poly = _star_polygon(g)
    pts = torch.rand(400, 2, generator=g, dtype=torch.float64) * 2.4 - 1.2
    got = _inside_polygon(poly, pts)
    # ray casting, written out
    want = []
    for x, y in pts.tolist():
        inside = False
        for k in range(len(poly)):
            (x0, y0), (x1, y1) = poly[k].tolist(), poly[(k + 1) % len(poly)].tolist()
            if (y0 > y) != (y1 > y) and x < x0 + (y - y0) * (x1 - x0) / (y1 - y0):
                inside = not inside
        want.append(inside)
    assert got.tolist() == want


def test_no_evaluation_images_among_the_sources():
    names = [f.lower() for _, _, files in SOURCES.values() for f in files]
    assert not [n for n in names if any(bad in n for bad in ("graf", "aloe", "motorcycle"))]
    ds = WarpedPhotoFlow()
    assert len(ds.paths) == 31 and all(p.is_file() for p in ds.paths)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"split": "dev"}, "split"),
        ({"size": (4, 64)}, "size"),
        ({"num_images": 0}, "num_images"),
        ({"seed": -1}, "seed"),
        ({"max_displacement": 0}, "max_displacement"),
        ({"num_objects": (3, 1)}, "num_objects"),
        ({"background_motion": "spline"}, "background_motion"),
        ({"sources": ("kitti",)}, "sources"),
        ({"transforms": 1}, "transforms"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WarpedPhotoFlow(**kwargs)


def test_index_errors():
    ds = WarpedPhotoFlow(num_images=2, sources="sklearn")
    with pytest.raises(IndexError):
        ds[2]
    with pytest.raises(TypeError):
        ds[0.5]  # type: ignore[index]


def test_items_keep_the_optical_flow_task_contract_and_transforms():
    from structpred.data.transforms import Resize
    from structpred.tasks import get_task

    task = get_task("optical_flow")
    task.check_dataset(build_dataset("flow-warped", "val", **SMALL), {}, "flow-warped")
    views, target = WarpedPhotoFlow(transforms=Resize((24, 32)), **SMALL)[0]
    full = WarpedPhotoFlow(**SMALL)[0][1]
    assert views.shape == (2, 3, 24, 32)
    assert torch.allclose(target["flow"], full["flow"][:, 1::2, 1::2] / 2)  # nearest, vectors halved


def test_smooth_background_is_exact_and_not_a_homography():
    from structpred.data.flow_warped import _affine, _apply, _SmoothField

    g = torch.Generator().manual_seed(0)
    field = _SmoothField(g, amplitude=6.0, extent=64)
    assert 0 < field.amplitude <= 6.0 + 1e-9
    M = _affine(0.05, 1.05, 0.97, 3.0, -2.0)
    q = torch.rand(50, 2, generator=g, dtype=torch.float64) * 64
    p = field.invert(torch.linalg.inv(M), q)
    assert torch.allclose(_apply(M, p) + field(p), q, atol=1e-5)  # the inverse, to 1e-5 px

    ds = WarpedPhotoFlow(num_objects=(0, 0), background_motion="smooth", photometric=False, **SMALL)
    ys, xs = torch.meshgrid(torch.arange(48.0), torch.arange(64.0), indexing="ij")
    design = torch.stack([xs.flatten(), ys.flatten(), torch.ones(48 * 64)], dim=1).double()  # (N, 3)
    for i in range(3):
        views, target = ds[i]
        assert float(target["flow"].norm(dim=0).max()) <= 20.0 * 1.02
        flow = target["flow"].double()
        fit = design @ torch.linalg.lstsq(design, flow[0].flatten()[:, None]).solution
        assert float((fit - flow[0].flatten()[:, None]).abs().max()) > 0.05  # not affine
        err = constancy(views, target, target["valid"])
        assert err < 0.03, (i, err)
