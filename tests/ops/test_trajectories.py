"""ops.trajectories: Sundaram et al. tracking against a naive loop, exact flows, occlusion, omega."""

from __future__ import annotations

import math

import pytest
import torch

from structpred.ops.motion_fit import apply_motion, motion_flow
from structpred.ops.trajectories import (
    ALIVE,
    LEFT_IMAGE,
    MOTION_BOUNDARY,
    OCCLUDED,
    PointTracker,
    grid_seeds,
    omega_tracks,
    track_points,
)


def _bilinear(field: torch.Tensor, x: float, y: float) -> list[float]:
    """Naive bilinear read with border clamping: field [C, H, W] at (x, y)."""
    C, H, W = field.shape
    x, y = min(max(x, 0.0), W - 1.0), min(max(y, 0.0), H - 1.0)
    x0, y0 = int(math.floor(x)), int(math.floor(y))
    x1, y1 = min(x0 + 1, W - 1), min(y0 + 1, H - 1)
    fx, fy = x - x0, y - y0
    out = []
    for c in range(C):
        f = field[c].double()
        top = f[y0, x0] * (1 - fx) + f[y0, x1] * fx
        bottom = f[y1, x0] * (1 - fx) + f[y1, x1] * fx
        out.append(float(top * (1 - fy) + bottom * fy))
    return out


def _naive_track(
    fw: torch.Tensor, bw: torch.Tensor, spacing: int
) -> dict[int, list[tuple[float, float] | None]]:
    """Reference: no seeding after frame 0; per point a Python loop with the paper's rules."""
    T1, _, H, W = fw.shape
    out: dict[int, list[tuple[float, float] | None]] = {}
    k = 0
    for y0 in range(spacing // 2, H, spacing):
        for x0 in range(spacing // 2, W, spacing):
            path: list[tuple[float, float] | None] = [(float(x0), float(y0))]
            x, y = float(x0), float(y0)
            for t in range(T1):
                u, v = _bilinear(fw[t], x, y)
                nx, ny = x + u, y + v
                if not (0 <= nx <= W - 1 and 0 <= ny <= H - 1):
                    break
                bu, bv = _bilinear(bw[t], nx, ny)
                if (u + bu) ** 2 + (v + bv) ** 2 > 0.01 * (u * u + v * v + bu * bu + bv * bv) + 0.5:
                    break
                f = fw[t].double()
                pad = torch.nn.functional.pad(f[None], (1, 1, 1, 1), mode="replicate")[0]
                gx = (pad[:, 1:-1, 2:] - pad[:, 1:-1, :-2]) / 2
                gy = (pad[:, 2:, 1:-1] - pad[:, :-2, 1:-1]) / 2
                (strength,) = _bilinear((gx**2 + gy**2).sum(0, keepdim=True), x, y)
                if strength > 0.01 * (u * u + v * v) + 0.002:
                    break
                x, y = nx, ny
                path.append((x, y))
            out[k] = path
            k += 1
    return out


def _smooth_flows(T1: int, H: int, W: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(T1, 2, 2, 2, generator=g) * 0.6
    fw = torch.nn.functional.interpolate(coarse, size=(H, W), mode="bilinear", align_corners=True) + 1.0
    bw = -fw + 0.45 * torch.randn(T1, 2, H, W, generator=g)  # roughly consistent, some points fail
    return fw, bw


def test_matches_a_naive_loop():
    fw, bw = _smooth_flows(5, 24, 32, 0)
    tracks = track_points(fw, bw, spacing=4, seed_new=False)
    ref = _naive_track(fw, bw, 4)
    assert len(tracks) == len(ref)
    ended = 0
    for k, path in ref.items():
        assert int(tracks.death[k]) == len(path), k
        got = tracks.points[k, : len(path)]
        assert torch.allclose(got, torch.tensor(path, dtype=torch.float32), atol=1e-4)
        assert torch.isnan(tracks.points[k, len(path) :]).all()
        ended += len(path) < 6
    assert 0 < ended < len(ref)  # the case exercises both outcomes


def test_pure_translation_moves_points_exactly():
    T1, H, W = 6, 40, 50
    v = torch.tensor([1.75, -0.5])
    fw = v[None, :, None, None].expand(T1, 2, H, W).clone()
    tracks = track_points(fw, -fw, spacing=8)
    first = tracks.birth == 0
    seeds = grid_seeds(H, W, 8)
    assert torch.equal(tracks.points[first, 0], seeds)
    for t in range(T1 + 1):
        alive = first & (tracks.death > t)
        expected = seeds[alive[first]] + t * v
        assert torch.allclose(tracks.points[alive, t], expected, atol=1e-5)
    # points that left the image say so; the others are alive at the end
    gone = first & (tracks.death <= T1)
    assert gone.any() and (tracks.end[gone] == LEFT_IMAGE).all()
    assert (tracks.end[first & ~gone] == ALIVE).all()
    # new points fill the cells emptied at the right edge
    assert (tracks.birth > 0).any()


def _occluder_clip(T1: int = 4, H: int = 32, W: int = 48, speed: float = 4.0):
    """A 10 px square sliding right over a static background (rows 10..19)."""
    fw = torch.zeros(T1, 2, H, W)
    bw = torch.zeros(T1, 2, H, W)
    for t in range(T1):
        x0 = 6 + int(speed) * t
        fw[t, 0, 10:20, x0 : x0 + 10] = speed
        bw[t, 0, 10:20, x0 + int(speed) : x0 + int(speed) + 10] = -speed
    return fw, bw


def test_points_stop_where_an_occluder_covers_them():
    fw, bw = _occluder_clip()
    tracks = track_points(fw, bw, spacing=2, seed_new=False)
    start = tracks.points[:, 0]
    band = (start[:, 1] >= 10) & (start[:, 1] < 20)
    # background points the square reaches in the first step: columns 16..19 (covered at t=1)
    covered = band & (start[:, 0] >= 16) & (start[:, 0] < 20)
    assert covered.any()
    assert (tracks.death[covered] == 1).all()
    assert (tracks.end[covered] == OCCLUDED).all()
    # far from the square, every point lives to the end
    far = (start[:, 1] < 6) | (start[:, 1] > 24)
    assert (tracks.end[far] == ALIVE).all() and (tracks.death[far] == 5).all()
    # the square's own edge is a motion boundary
    assert (tracks.end == MOTION_BOUNDARY).any()


def test_streaming_equals_batch_and_seeds_in_empty_cells():
    fw, bw = _occluder_clip()
    batch = track_points(fw, bw, spacing=4)
    tracker = PointTracker(spacing=4)
    for t in range(fw.shape[0]):
        tracker.step(fw[t], bw[t])
    streamed = tracker.tracks()
    assert torch.equal(batch.points.isnan(), streamed.points.isnan())
    assert torch.equal(batch.death, streamed.death)
    # every grid cell is covered by a living point after each step
    for t in range(1, fw.shape[0] + 1):
        alive = streamed.points[:, t]
        alive = alive[~alive.isnan().any(1)]
        cells = set(((alive[:, 1] // 4) * 100 + alive[:, 0] // 4).long().tolist())
        assert len(cells) == len(grid_seeds(32, 48, 4))


def test_omega_removes_a_known_camera_motion():
    T1, H, W = 5, 40, 56
    cam = torch.tensor([[1.0, 0.0, 1.5], [0.0, 1.0, -0.75], [0.0, 0.0, 1.0]], dtype=torch.float64)
    inv = torch.linalg.inv(cam)
    fw = motion_flow(cam, H, W)[None].repeat(T1, 1, 1, 1)
    bw = motion_flow(inv, H, W)[None].repeat(T1, 1, 1, 1)
    fw[:, :, 12:24, 12:24] += torch.tensor([2.0, 0.0])[:, None, None]  # an object moving on its own
    tracks = track_points(fw, bw, spacing=4, boundary_beta=math.inf, cameras=cam[None].repeat(T1, 1, 1))
    assert tracks.omega is not None
    first = (tracks.birth == 0) & (tracks.death == T1 + 1)
    start = tracks.points[first, 0]
    still = tracks.omega[first] - tracks.omega[first, :1]  # (P, T, 2) displacement of omega
    path = tracks.points[first]  # (P, T, 2): background = never within 2 px of the object
    near = (path[..., 0] > 9) & (path[..., 0] < 26) & (path[..., 1] > 9) & (path[..., 1] < 26)
    background = ~near.any(1)
    assert background.sum() > 50 and (~background).sum() > 3
    assert still[background].abs().max() < 1e-4
    raw = tracks.points[first][background, -1] - start[background]
    assert raw.abs().max() > 5  # the raw tracks carry the camera's motion


def test_omega_tracks_fit_the_camera_themselves():
    T1, H, W = 3, 48, 64
    cam = torch.tensor([[1.01, 0.0, 0.5], [0.0, 1.01, -1.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    fw = motion_flow(cam, H, W)[None].repeat(T1, 1, 1, 1)
    bw = motion_flow(torch.linalg.inv(cam), H, W)[None].repeat(T1, 1, 1, 1)
    tracks = omega_tracks(fw, bw, model="affine", spacing=8, seed_new=False)
    assert tracks.omega is not None
    alive = tracks.death == T1 + 1
    drift = (tracks.omega[alive, -1] - tracks.omega[alive, 0]).norm(dim=1)
    assert alive.sum() > 10 and drift.max() < 1e-3
    p = tracks.points[alive, 0].double()
    for _ in range(T1):
        p = apply_motion(cam, p)
    assert torch.allclose(tracks.points[alive, -1].double(), p, atol=1e-3)


def test_bad_inputs():
    tracker = PointTracker()
    with pytest.raises(ValueError, match="flow_forward must be"):
        tracker.step(torch.zeros(3, 8, 8), torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match="NaN"):
        tracker.step(torch.full((2, 8, 8), float("nan")), torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match="one shape"):
        tracker.step(torch.zeros(2, 8, 8), torch.zeros(2, 8, 9))
    tracker.step(torch.zeros(2, 8, 8), torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match="earlier ones"):
        tracker.step(torch.zeros(2, 9, 8), torch.zeros(2, 9, 8))
    with pytest.raises(ValueError, match="spacing"):
        PointTracker(spacing=0)
    with pytest.raises(ValueError, match="cameras"):
        track_points(torch.zeros(2, 2, 8, 8), torch.zeros(2, 2, 8, 8), cameras=torch.zeros(1, 3, 3))
    with pytest.raises(ValueError, match="camera must be"):
        PointTracker().step(torch.zeros(2, 8, 8), torch.zeros(2, 8, 8), torch.full((3, 3), float("nan")))


def test_recent_is_the_tail_of_the_tracks():
    fw, bw = _occluder_clip()
    tracker = PointTracker(spacing=4)
    for t in range(fw.shape[0]):
        tracker.step(fw[t], bw[t])
    full = tracker.tracks()
    alive = torch.nonzero(full.death == fw.shape[0] + 1).squeeze(1)
    recent = tracker.recent(2)
    assert recent.shape == (tracker.num_alive, 3, 2) and tracker.num_alive == len(alive)
    assert torch.equal(recent.isnan(), full.points[alive, -3:].isnan())
    assert torch.equal(recent.nan_to_num(-1), full.points[alive, -3:].nan_to_num(-1))


def test_min_texture_seeds_only_where_the_frame_has_corners():
    H, W = 24, 48
    g = torch.Generator().manual_seed(0)
    frame = torch.full((3, H, W), 0.5)
    frame[:, :, :24] = torch.rand(1, H, 24, generator=g)  # textured left half, flat right half
    zero = torch.zeros(2, H, W)
    tracker = PointTracker(spacing=4, min_texture=1e-3)
    tracker.step(zero, zero, frames=(frame, frame))
    start = tracker.tracks().points[:, 0]
    assert (start[:, 0] < 26).all() and len(start) == 6 * 6  # the left half's 6 x 6 grid
    plain = PointTracker(spacing=4)
    plain.step(zero, zero, frames=(frame, frame))
    assert len(plain.tracks()) == 6 * 12
    with pytest.raises(ValueError, match="flow's size"):
        PointTracker().step(zero, zero, frames=(frame, frame[:, :10]))


def test_max_history_keeps_recent_and_refuses_tracks():
    fw, bw = _occluder_clip()
    full, short = PointTracker(spacing=4), PointTracker(spacing=4, max_history=2)
    for t in range(fw.shape[0]):
        full.step(fw[t], bw[t])
        short.step(fw[t], bw[t])
        assert torch.equal(full.recent(2).nan_to_num(-1), short.recent(2).nan_to_num(-1))
    with pytest.raises(ValueError, match="dropped"):
        short.tracks()
