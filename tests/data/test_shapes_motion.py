"""data.shapes_motion: clips by a moving camera — exact flow, occlusion, camera and true tracks."""

from __future__ import annotations

import pytest
import torch

from structpred.data.registry import build_dataset
from structpred.data.shapes_motion import ShapesMotion, true_tracks
from structpred.data.shapes_views import ShapesVideo
from structpred.ops.motion_fit import apply_motion, motion_flow
from structpred.ops.warp import flow_warp


@pytest.fixture(scope="module")
def clip():
    return ShapesMotion("val", size=(64, 80), length=6, seed=1)[2]


def test_static_camera_is_the_shapes_video_clip():
    frames, target = ShapesMotion("val", size=(64, 80), length=5, camera="none")[0]
    video, vt = ShapesVideo("val", size=(64, 80), length=5)[0]
    assert torch.equal(frames, video)
    assert torch.equal(target["owner"], vt["instances"])
    still = (target["owner"][:-1] == 0)[:, None].expand(-1, 2, -1, -1)  # (T-1, 2, H, W)
    assert target["flow"][still].abs().max() == 0  # the background stands still


def test_keys_shapes_and_determinism(clip):
    frames, target = clip
    T, H, W = 6, 64, 80
    assert frames.shape == (T, 3, H, W) and frames.dtype == torch.float32
    assert target["flow"].shape == target["flow_backward"].shape == (T - 1, 2, H, W)
    assert target["valid"].shape == target["valid_backward"].shape == (T - 1, H, W)
    assert target["camera"].shape == (T - 1, 3, 3) and target["camera_to_frame"].shape == (T, 3, 3)
    again = ShapesMotion("val", size=(64, 80), length=6, seed=1)[2]
    assert torch.equal(frames, again[0]) and torch.equal(target["flow"], again[1]["flow"])
    other = ShapesMotion("val", size=(64, 80), length=6, seed=2)[2]
    assert not torch.equal(frames, other[0])


def test_background_flow_is_the_camera_motion(clip):
    _, target = clip
    owner, flow = target["owner"], target["flow"]
    for t in range(flow.shape[0]):
        cam = motion_flow(target["camera"][t], 64, 80)
        bg = owner[t] == 0
        assert (flow[t][:, bg] - cam[:, bg]).abs().max() < 1e-4
        C = target["camera_to_frame"]
        assert torch.allclose(target["camera"][t], C[t + 1] @ torch.linalg.inv(C[t]), atol=1e-12)
    assert target["camera"][:, :2, 2].abs().max() > 0.3  # the camera moves


def test_forward_and_backward_flow_agree_where_visible(clip):
    _, target = clip
    fw, bw, valid = target["flow"], target["flow_backward"], target["valid"]
    back = flow_warp(bw, fw)  # bw read at p + fw[p]
    gap = (fw + back).norm(dim=1)  # (T-1, H, W)
    # away from layer edges the round trip is exact up to bilinear reading of a smooth field
    owner = target["owner"][:-1, None].float()  # (T-1, 1, H, W)
    pool = torch.nn.functional.max_pool2d
    same = (pool(owner, 7, 1, 3) == -pool(-owner, 7, 1, 3))[:, 0]  # one layer within 3 px
    interior = valid & same & (pool((~valid).float()[:, None], 7, 1, 3)[:, 0] == 0)
    interior[:, :3], interior[:, -3:], interior[:, :, :3], interior[:, :, -3:] = False, False, False, False
    assert interior.float().mean() > 0.3  # (zero padding reads partly outside within 1 px of the border)
    assert gap[interior].max() < 0.05
    assert 0.5 < valid.float().mean() < 1.0  # some pixels leave or are covered


def test_warping_the_next_frame_by_the_flow_gives_the_frame(clip):
    frames, target = clip
    warped = flow_warp(frames[1:], target["flow"])
    valid = target["valid"]
    err = (warped - frames[:-1]).abs().mean(1)[valid].mean()
    still = (frames[1:] - frames[:-1]).abs().mean(1)[valid].mean()
    assert err < 0.7 * still  # the textures alias (no anti-aliasing): not 0


def test_true_tracks_follow_the_camera_and_the_objects(clip):
    _, target = clip
    points = torch.tensor([[10.0, 10.0], [40.0, 30.0], [70.0, 50.0]])
    pos, visible, layer = true_tracks(target, points, torch.tensor([0, 1, 0]))
    assert torch.isnan(pos[1, 0]).all() and not visible[1, 0]
    for k in range(3):
        s = 1 if k == 1 else 0
        p = points[k : k + 1].double()
        for t in range(s, 6):
            if layer[k] == 0:
                C = target["camera_to_frame"]
                expected = apply_motion(C[t] @ torch.linalg.inv(C[s]), p)[0]
            else:
                c = target["centres"][layer[k] - 1]
                expected = p[0] + c[t] - c[s]
            assert torch.allclose(pos[k, t].double(), expected, atol=1e-4)
    # chaining the exact flow reaches the same place while visible
    pos0, vis0, _ = true_tracks(target, points[:1], torch.tensor([0]))
    x = points[0].clone()
    for t in range(5):
        if not vis0[0, t + 1]:
            break
        xi, yi = int(x[0].round()), int(x[1].round())
        assert abs(xi - x[0]) < 1e-3 or layer[0] == 0
        x = x + target["flow"][t][:, yi, xi] if layer[0] != 0 else pos0[0, t + 1]
        assert torch.allclose(x, pos0[0, t + 1], atol=1e-3)


def test_occluded_points_become_invisible_for_good():
    _, target = ShapesMotion("val", size=(64, 80), length=12, seed=0)[5]
    ys, xs = torch.meshgrid(torch.arange(0, 64, 2.0), torch.arange(0, 80, 2.0), indexing="ij")
    points = torch.stack([xs.reshape(-1), ys.reshape(-1)], 1)
    _, visible, _ = true_tracks(target, points, torch.zeros(len(points), dtype=torch.long))
    ends = visible.long().sum(1)
    assert (ends < 12).any() and (ends == 12).any()
    # once hidden, never visible again
    assert torch.equal(visible, torch.cummin(visible.long(), 1).values.bool())


def test_registry_and_bad_arguments():
    ds = build_dataset("shapes-motion", "val", size=(32, 32), num_images=3, length=3)
    assert len(ds) == 3 and ds[0][0].shape == (3, 3, 32, 32)
    with pytest.raises(ValueError, match="length"):
        ShapesMotion(length=1)
    with pytest.raises(ValueError, match="camera must be"):
        ShapesMotion(camera="dolly")
    with pytest.raises(ValueError, match="camera_speed"):
        ShapesMotion(camera_speed=float("nan"))
    with pytest.raises(IndexError):
        ShapesMotion("val", num_images=2)[5]
    _, target = ShapesMotion("val", size=(32, 32), length=3)[0]
    with pytest.raises(ValueError, match="starts must be frames"):
        true_tracks(target, torch.zeros(1, 2), torch.tensor([3]))
    with pytest.raises(ValueError, match="points must be"):
        true_tracks(target, torch.zeros(2, 3), torch.tensor([0, 0]))
