"""Rendered stereo pairs from real photos: disparity exact by construction (the right view warped by
it is the left view where valid, and back), left-right consistency, occlusions, determinism, the
photo sources and bad arguments."""

from __future__ import annotations

import pytest
import torch

from structpred.data.stereo_warped import WarpedPhotoStereo, render_stereo_pair
from structpred.ops.warp import flow_warp

SMALL = {"size": (32, 64), "num_images": 6, "sources": ("sklearn", "skimage"), "disparity": (12.0, 10.0)}


def warp_error(
    source: torch.Tensor, reference: torch.Tensor, shift: torch.Tensor, mask: torch.Tensor
) -> float:
    """Mean |reference - source[x + shift]| over ``mask`` (``shift`` [1, H, W] px along x)."""
    flow = torch.cat([shift, torch.zeros_like(shift)])[None]  # (1, 2, H, W)
    warped = flow_warp(source[None], flow)[0]
    return float((warped - reference).abs().mean(0)[mask].mean())


def test_item_contract():
    views, target = WarpedPhotoStereo("train", **SMALL)[2]
    assert views.shape == (2, 3, 32, 64) and views.dtype == torch.float32
    assert 0.0 <= float(views.min()) and float(views.max()) <= 1.0
    assert set(target) == {"disparity", "valid", "disparity_right", "valid_right", "image_id"}
    for key in ("disparity", "disparity_right"):
        assert target[key].shape == (1, 32, 64) and target[key].dtype == torch.float32
        assert float(target[key].min()) >= 0.0 and float(target[key].max()) < 64
    assert target["valid"].dtype == torch.bool and int(target["image_id"]) == 2
    plain = WarpedPhotoStereo("train", right_view=False, **SMALL)[2]
    assert set(plain[1]) == {"disparity", "valid", "image_id"} and torch.equal(plain[0], views)
    assert len(WarpedPhotoStereo("val", sources="sklearn")) == 200


def test_right_view_matches_left_where_valid():
    ds = WarpedPhotoStereo("train", photometric=False, **SMALL)
    for i in range(4):
        views, t = ds[i]
        d, valid = t["disparity"], t["valid"]
        assert valid.float().mean() > 0.5
        err = warp_error(views[1], views[0], -d, valid)  # left x <-> right x - d
        still = float((views[1] - views[0]).abs().mean(0)[valid].mean())
        assert err < 0.03 and err < 0.3 * still, (i, err, still)
        assert warp_error(views[1], views[0], -d - 2.0, valid) > 2 * err  # 2 px off is visibly worse
        # and the right view's own disparity: right x <-> left x + d_right
        dr, vr = t["disparity_right"], t["valid_right"]
        assert warp_error(views[0], views[1], dr, vr) < 0.03


def test_left_right_consistency_and_out_of_view():
    ds = WarpedPhotoStereo("val", photometric=False, num_objects=(2, 4), **{**SMALL, "num_images": 4})
    occluded_seen = 0
    for i in range(4):
        _, t = ds[i]
        d, valid, dr = t["disparity"][0], t["valid"], t["disparity_right"][0]
        xs = torch.arange(64, dtype=torch.float32)
        assert not (valid & (xs - d < -0.5)).any()  # a match outside the right view is never valid
        # d_right at the matched point equals d (both planes affine: bilinear reads them exactly)
        back = flow_warp(dr[None, None], torch.stack([-d, torch.zeros_like(d)])[None], "border")[0, 0]
        gap = (back - d).abs()[valid]
        assert float(gap.median()) < 1e-3 and float((gap > 0.1).float().mean()) < 0.1
        occluded_seen += int(((xs - d >= 0) & ~valid).sum()) > 10
    assert occluded_seen >= 1


def test_fronto_parallel_layers_have_constant_disparity():
    ds = WarpedPhotoStereo("test", slant=0.0, num_objects=(2, 2), **SMALL)
    for i in range(3):
        d = ds[i][1]["disparity"]
        assert len(torch.unique(d)) <= 3  # background + 2 patches


def test_deterministic_in_split_seed_index():
    a, b = WarpedPhotoStereo("train", **SMALL), WarpedPhotoStereo("train", **SMALL)
    assert torch.equal(a[3][0], b[3][0]) and torch.equal(a[3][1]["disparity"], b[3][1]["disparity"])
    assert torch.equal(a[-1][0], a[5][0])
    assert not torch.equal(a[3][0], WarpedPhotoStereo("val", **SMALL)[3][0])
    assert not torch.equal(a[3][0], WarpedPhotoStereo("train", seed=1, **SMALL)[3][0])


def test_never_the_evaluation_photos():
    names = " ".join(str(p).lower() for p in WarpedPhotoStereo().photos.paths)
    assert "motorcycle" not in names and "aloe" not in names and "graf" not in names


def test_transforms_applied():
    calls = []

    def t(views, target):
        calls.append(views.shape)
        return views.flip(-1), target

    ds = WarpedPhotoStereo("train", transforms=t, **SMALL)
    assert torch.equal(ds[0][0], WarpedPhotoStereo("train", **SMALL)[0][0].flip(-1)) and len(calls) == 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"split": "all"}, "split"),
        ({"size": (4, 64)}, "size"),
        ({"size": (32.0, 64)}, "size"),
        ({"num_images": 0}, "num_images"),
        ({"seed": -1}, "seed"),
        ({"disparity": (40.0, 30.0)}, "disparity"),
        ({"disparity": (-1.0, 3.0)}, "disparity"),
        ({"disparity": (float("nan"), 3.0)}, "disparity"),
        ({"num_objects": (3, 2)}, "num_objects"),
        ({"slant": 0.5}, "slant"),
        ({"sources": ("kitti",)}, "sources"),
        ({"sources": ()}, "sources"),
        ({"transforms": 3}, "transforms"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WarpedPhotoStereo(**{**SMALL, **kwargs})


def test_bad_index_and_textures():
    ds = WarpedPhotoStereo("train", **SMALL)
    with pytest.raises(IndexError):
        ds[6]
    with pytest.raises(TypeError):
        ds[True]
    with pytest.raises(ValueError, match="textures is empty"):
        render_stereo_pair([], (8, 8), torch.Generator())


def test_stereo_flip_keeps_the_geometry():
    """A joint horizontal flip swaps the views and the two disparities; the match still holds."""
    from structpred.data.transforms import hflip

    views, target = WarpedPhotoStereo("train", photometric=False, **SMALL)[1]
    fv, ft = hflip(views, target)
    assert torch.equal(fv[0], views[1].flip(-1)) and torch.equal(
        ft["disparity"], target["disparity_right"].flip(-1)
    )
    assert warp_error(fv[1], fv[0], -ft["disparity"], ft["valid"]) < 0.03
