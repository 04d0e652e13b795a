"""Point trajectories from optical flow (Sundaram, Brox & Keutzer, ECCV 2010) and
omega-trajectories (Jain et al., CVPR 2013).

A point is carried from frame to frame by the forward flow read at its sub-pixel position
(bilinear). It stops when

* the forward and backward flow disagree (occlusion):
  ``|w + w'(p + w)|^2 > alpha (|w|^2 + |w'(p + w)|^2) + beta`` with ``w`` the forward flow at
  ``p`` and ``w'`` the backward flow at ``p + w`` (the paper: ``alpha = 0.01``, ``beta = 0.5``);
* it lies on a motion boundary: ``|grad u|^2 + |grad v|^2 > alpha_b |w|^2 + beta_b`` (the
  paper: ``0.01`` and ``0.002``);
* or it leaves the image.

After every step, new points are seeded on a grid of ``spacing`` pixels wherever no living
point lies in the grid cell, so the density stays even as points die.

Omega-trajectories follow the same points (the tracking uses the real flow, so the checks
above keep their meaning) and also accumulate, per point, only the motion left after the
dominant (camera) motion of each frame pair is removed: ``omega_{t+1} = omega_t + (p_{t+1} -
p_t) - (M_t(p_t) - p_t)``, ``M_t`` the camera's ``[3, 3]`` motion from frame t to t+1
(:mod:`structpred.ops.motion_fit`). A background point's omega-track stays put; an object's
shows its own motion.

Shape shorthand:
    T: frames, H, W: frame size, P: trajectories, N: points alive in a frame.

Convention: positions are ``(x, y)`` pixel coordinates with pixel ``(i, j)`` at ``(j, i)``
(the flow task's convention: pixel p moves to ``p + flow[p]``). Tracks are ``float32[P, T, 2]``,
NaN where the point is not alive; ``birth[p]`` is its first frame and ``death[p]`` one past its
last (``T`` when alive at the end).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .motion_fit import apply_motion, robust_dominant_motion
from .warp import grid_sample

logger = logging.getLogger(__name__)

# Why a trajectory ended (``Tracks.end``).
ALIVE, LEFT_IMAGE, OCCLUDED, MOTION_BOUNDARY = 0, 1, 2, 3
END_REASONS = ("alive", "left_image", "occluded", "motion_boundary")


def _shape(x: object) -> object:
    return tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__


def sample_at(field: Tensor, points: Tensor) -> Tensor:
    """Bilinear read of ``field`` (Tensor[C, H, W]) at ``points`` (Tensor[N, 2], (x, y) pixels) -> [N, C].

    Points outside read the nearest border value (callers stop such points anyway).
    """
    C, H, W = field.shape
    scale = torch.tensor([2.0 / max(W - 1, 1), 2.0 / max(H - 1, 1)], dtype=field.dtype)
    grid = (points.to(field.dtype) * scale - 1.0).reshape(1, 1, -1, 2)  # (N, 2) -> (1, 1, N, 2)
    out = grid_sample(field[None], grid, padding_mode="border", align_corners=True)  # (1, C, 1, N)
    return out[0, :, 0].T  # (C, N) -> (N, C)


def forward_backward_inconsistent(
    forward: Tensor, backward_at_target: Tensor, alpha: float = 0.01, beta: float = 0.5
) -> Tensor:
    """Sundaram et al.'s occlusion test per point: ``|w + w'|^2 > alpha (|w|^2 + |w'|^2) + beta``.

    Args:
        forward (Tensor[N, 2]): forward flow ``w`` at each point.
        backward_at_target (Tensor[N, 2]): backward flow ``w'`` read at ``p + w``.

    Returns:
        bool Tensor[N]: True where the point is (likely) occluded in the next frame.
    """
    gap = (forward + backward_at_target).pow(2).sum(-1)
    scale = forward.pow(2).sum(-1) + backward_at_target.pow(2).sum(-1)
    return gap > alpha * scale + beta


def motion_boundary_strength(flow: Tensor) -> Tensor:
    """``|grad u|^2 + |grad v|^2`` of a flow field (Tensor[2, H, W]) -> Tensor[H, W] (central differences)."""
    padded = torch.nn.functional.pad(flow[None], (1, 1, 1, 1), mode="replicate")[0]  # (2, H+2, W+2)
    gx = (padded[:, 1:-1, 2:] - padded[:, 1:-1, :-2]) / 2  # (2, H, W)
    gy = (padded[:, 2:, 1:-1] - padded[:, :-2, 1:-1]) / 2
    return (gx.pow(2) + gy.pow(2)).sum(0)


def corner_strength(image: Tensor, window: int = 3) -> Tensor:
    """Smaller eigenvalue of the structure tensor of ``image`` (Tensor[C, H, W], channels averaged)
    -> Tensor[H, W]: small in flat areas and along straight edges (where flow is ill-posed)."""
    grey = image.float().mean(0)[None, None]  # (C, H, W) -> (1, 1, H, W)
    padded = torch.nn.functional.pad(grey, (1, 1, 1, 1), mode="replicate")
    gx = (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2]) / 2  # (1, 1, H, W)
    gy = (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1]) / 2
    products = torch.cat([gx * gx, gx * gy, gy * gy], dim=1)  # (1, 3, H, W)
    a, b, c = torch.nn.functional.avg_pool2d(products, window, 1, window // 2, count_include_pad=False)[0]
    return (a + c) / 2 - torch.sqrt(((a - c) / 2) ** 2 + b**2)


def grid_seeds(height: int, width: int, spacing: int) -> Tensor:
    """Grid points ``[N, 2]`` (x, y), ``spacing`` apart, centred in their cells."""
    ys = torch.arange(spacing // 2, height, spacing, dtype=torch.float32)
    xs = torch.arange(spacing // 2, width, spacing, dtype=torch.float32)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)  # (Gy, Gx) -> (N, 2)


@dataclass
class Tracks:
    """Point trajectories.

    Attributes:
        points: float32 ``[P, T, 2]`` (x, y), NaN where not alive.
        birth: int64 ``[P]``, first frame; death: int64 ``[P]``, one past the last frame alive.
        end: int64 ``[P]``, why it ended (``END_REASONS``; ``ALIVE`` when alive at frame T - 1).
        omega: float32 ``[P, T, 2]`` camera-compensated positions (omega-trajectories), or None.
    """

    points: Tensor
    birth: Tensor
    death: Tensor
    end: Tensor
    omega: Tensor | None = None

    def __len__(self) -> int:
        return int(self.points.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.points.shape[1])

    def lengths(self) -> Tensor:
        """int64 ``[P]``: frames each trajectory lives."""
        return self.death - self.birth


class PointTracker:
    """Streaming Sundaram et al. tracker: feed one forward/backward flow pair per frame step.

    Args:
        spacing: seeding grid step in pixels (the paper samples every 8 px; dense = small).
        alpha, beta: forward-backward consistency constants (paper: 0.01, 0.5).
        boundary_alpha, boundary_beta: motion boundary constants (paper: 0.01, 0.002); a
            ``boundary_beta`` of ``inf`` disables the test.
        seed_new: seed new points in empty grid cells after every step (the paper does).
        min_texture: with frames given to :meth:`step`, seed only where the structure tensor's
            smaller eigenvalue (:func:`corner_strength`) is at least ``min_texture`` times its
            largest value in the frame (the paper skips homogeneous areas; Wang et al. 2011 use
            0.001); 0 seeds everywhere.
        max_history: keep only the last this many frames' positions (a long video's writer needs
            only :meth:`recent`); None keeps all, which :meth:`tracks` needs.

    Use :meth:`step` once per frame pair with ``flow_forward`` from frame t to t+1 and
    ``flow_backward`` from t+1 to t; then :meth:`tracks`. ``camera`` (a ``[3, 3]`` motion from t
    to t+1) also records omega-trajectories.
    """

    def __init__(
        self,
        spacing: int = 8,
        alpha: float = 0.01,
        beta: float = 0.5,
        boundary_alpha: float = 0.01,
        boundary_beta: float = 0.002,
        seed_new: bool = True,
        min_texture: float = 0.0,
        max_history: int | None = None,
    ) -> None:
        if not isinstance(spacing, int) or isinstance(spacing, bool) or spacing < 1:
            raise ValueError(f"PointTracker: spacing must be a positive int, got {spacing!r}")
        for name, value in (("alpha", alpha), ("beta", beta), ("boundary_alpha", boundary_alpha),
                            ("boundary_beta", boundary_beta), ("min_texture", min_texture)):  # fmt: skip
            if not value >= 0:
                raise ValueError(f"PointTracker: {name} must be >= 0, got {value}")
        self.spacing, self.alpha, self.beta = spacing, alpha, beta
        self.boundary_alpha, self.boundary_beta = boundary_alpha, boundary_beta
        if max_history is not None and max_history < 0:
            raise ValueError(f"PointTracker: max_history must be >= 0 or None, got {max_history}")
        self.seed_new, self.min_texture, self.max_history = seed_new, min_texture, max_history
        self._dropped = 0  # frames forgotten under max_history
        self.size: tuple[int, int] | None = None
        self.frame = 0  # index of the frame the living points are in
        self._birth: list[int] = []  # per trajectory
        self._death: list[int] = []  # -1 while alive
        self._end: list[int] = []
        self._alive = torch.zeros(0, dtype=torch.int64)  # (N,) ids of the living trajectories
        self._pos = torch.zeros(0, 2)  # (N, 2) their positions in frame ``self.frame``
        self._om = torch.zeros(0, 2)  # (N, 2) their omega positions
        self._frames: list[tuple[Tensor, Tensor, Tensor]] = []  # per finished frame: ids, pos, omega
        self._has_omega = False

    # ----------------------------------------------------------------- plumbing

    def _seed(self, points: Tensor) -> None:
        start, n = len(self._birth), points.shape[0]
        self._birth += [self.frame] * n
        self._death += [-1] * n
        self._end += [ALIVE] * n
        self._alive = torch.cat([self._alive, torch.arange(start, start + n)])
        self._pos = torch.cat([self._pos, points])
        self._om = torch.cat([self._om, points])

    def _textured(self, seeds: Tensor, frame: Tensor | None) -> Tensor:
        """The ``seeds`` [G, 2] (whole pixels) where ``frame`` is textured enough (all without a frame)."""
        if frame is None or self.min_texture == 0 or seeds.numel() == 0:
            return seeds
        strength = corner_strength(frame.detach().cpu())  # (H, W)
        at = strength[seeds[:, 1].long(), seeds[:, 0].long()]  # (G,)
        return seeds[at >= self.min_texture * strength.max().clamp_min(1e-12)]

    def _empty_cells(self) -> Tensor:
        """Grid seeds whose cell holds no living point."""
        assert self.size is not None
        H, W = self.size
        s = self.spacing
        seeds = grid_seeds(H, W, s)  # (G, 2)
        gw = (W - s // 2 + s - 1) // s  # grid columns (as grid_seeds lays them)
        taken = torch.zeros(seeds.shape[0], dtype=torch.bool)
        if self._pos.numel():
            cx = (self._pos[:, 0] / s).floor().long()
            cy = (self._pos[:, 1] / s).floor().long()
            ok = (cx >= 0) & (cx < gw) & (cy >= 0) & (cy * gw + cx < seeds.shape[0])
            taken[(cy * gw + cx)[ok]] = True
        return seeds[~taken]

    def _check_flows(
        self, flow_forward: Tensor, flow_backward: Tensor, frames: Sequence[Tensor] | None
    ) -> None:
        for name, f in (("flow_forward", flow_forward), ("flow_backward", flow_backward)):
            if not isinstance(f, Tensor) or f.dim() != 3 or f.shape[0] != 2 or not f.is_floating_point():
                raise ValueError(f"PointTracker: {name} must be a float Tensor[2, H, W], got {_shape(f)}")
            if not torch.isfinite(f).all():
                raise ValueError(f"PointTracker: {name} of frame {self.frame} holds NaN or inf")
        if flow_forward.shape != flow_backward.shape:
            raise ValueError(
                f"PointTracker: flow_forward {_shape(flow_forward)} and flow_backward "
                f"{_shape(flow_backward)} must have one shape"
            )
        size = (int(flow_forward.shape[1]), int(flow_forward.shape[2]))
        if frames is not None:
            if len(frames) != 2 or any(not isinstance(f, Tensor) or f.dim() != 3 for f in frames):
                raise ValueError("PointTracker: frames must be the two frames (t, t+1), each Tensor[C, H, W]")
            if any(tuple(f.shape[1:]) != size for f in frames):
                shapes = [_shape(f) for f in frames]
                raise ValueError(f"PointTracker: frames {shapes} must have the flow's size {size}")
        if self.size is None:
            self.size = size
            self._seed(self._textured(grid_seeds(*size, self.spacing), None if frames is None else frames[0]))
        elif size != self.size:
            raise ValueError(f"PointTracker: frame {self.frame}'s flow is {size}, earlier ones {self.size}")

    # ----------------------------------------------------------------- public

    def step(
        self,
        flow_forward: Tensor,
        flow_backward: Tensor,
        camera: Tensor | None = None,
        frames: Sequence[Tensor] | None = None,
    ) -> None:
        """Advance every living point from frame t to t+1 and seed new ones in frame t+1.

        Args:
            flow_forward (Tensor[2, H, W]): flow from frame t to t+1.
            flow_backward (Tensor[2, H, W]): flow from frame t+1 to t.
            camera (Tensor[3, 3] | None): the dominant motion from t to t+1 (omega-trajectories).
            frames: the images of frames t and t+1 (``[C, H, W]`` each), for ``min_texture``.
        """
        self._check_flows(flow_forward, flow_backward, frames)
        assert self.size is not None
        H, W = self.size
        fw, bw = flow_forward.float(), flow_backward.float()
        pos = self._pos  # (N, 2)
        w = sample_at(fw, pos)  # (N, 2)
        new = pos + w
        inside = (new[:, 0] >= 0) & (new[:, 0] <= W - 1) & (new[:, 1] >= 0) & (new[:, 1] <= H - 1)
        occluded = forward_backward_inconsistent(w, sample_at(bw, new), self.alpha, self.beta)
        strength = sample_at(motion_boundary_strength(fw)[None], pos)[:, 0]  # (N,)
        boundary = strength > self.boundary_alpha * w.pow(2).sum(-1) + self.boundary_beta
        if camera is not None:
            if not isinstance(camera, Tensor) or camera.shape != (3, 3) or not torch.isfinite(camera).all():
                raise ValueError(f"PointTracker: camera must be a finite Tensor[3, 3], got {_shape(camera)}")
            self._has_omega = True
            own = new - apply_motion(camera, pos.double()).float()  # the motion the camera does not explain
            om = self._om + own
        else:
            om = self._om + w
        reason = torch.full_like(self._alive, ALIVE)
        reason[boundary] = MOTION_BOUNDARY
        reason[occluded] = OCCLUDED
        reason[~inside] = LEFT_IMAGE
        keep = reason == ALIVE
        self._frames.append((self._alive, self._pos, self._om))  # frame t is complete
        if self.max_history is not None and len(self._frames) > self.max_history:
            self._dropped += len(self._frames) - self.max_history
            self._frames = self._frames[len(self._frames) - self.max_history :]
        for k in torch.nonzero(~keep).squeeze(1).tolist():
            tid = int(self._alive[k])
            self._death[tid], self._end[tid] = self.frame + 1, int(reason[k])
        self.frame += 1
        self._alive, self._pos, self._om = self._alive[keep], new[keep], om[keep]
        if self.seed_new:
            self._seed(self._textured(self._empty_cells(), None if frames is None else frames[1]))

    @property
    def num_alive(self) -> int:
        """Trajectories alive in the current frame."""
        return int(self._alive.numel())

    def recent(self, tail: int) -> Tensor:
        """The living trajectories' last ``tail + 1`` positions: float32 ``[N, L, 2]`` (L <= tail + 1),
        NaN before a trajectory's birth; the last column is the current frame. Cheap per frame
        (no full :meth:`tracks` array): what a video writer draws."""
        if tail < 0:
            raise ValueError(f"PointTracker.recent: tail must be >= 0, got {tail}")
        history = [*self._frames[max(0, len(self._frames) - tail) :], (self._alive, self._pos, self._om)]
        row = torch.full((len(self._birth),), -1, dtype=torch.int64)
        row[self._alive] = torch.arange(self._alive.numel())
        out = torch.full((self._alive.numel(), len(history), 2), float("nan"))
        for j, (ids, pos, _) in enumerate(history):
            r = row[ids]  # (n,): -1 for trajectories dead by now
            keep = r >= 0
            out[r[keep], j] = pos[keep]
        return out

    def tracks(self) -> Tracks:
        """The trajectories so far (frames ``0..self.frame``); needs the whole history."""
        if self._dropped:
            raise ValueError(
                f"PointTracker.tracks: {self._dropped} frames were dropped (max_history={self.max_history}); "
                "only recent() is available"
            )
        T = self.frame + 1
        P = len(self._birth)
        points = torch.full((P, T, 2), float("nan"))
        omega = torch.full((P, T, 2), float("nan"))
        for t, (ids, pos, om) in enumerate([*self._frames, (self._alive, self._pos, self._om)]):
            points[ids, t] = pos
            omega[ids, t] = om
        birth = torch.tensor(self._birth, dtype=torch.int64)
        death = torch.tensor([d if d >= 0 else T for d in self._death], dtype=torch.int64)
        end = torch.tensor(self._end, dtype=torch.int64)
        return Tracks(points, birth, death, end, omega if self._has_omega else None)


def _check_sequence(flows: Tensor, name: str) -> None:
    if not isinstance(flows, Tensor) or flows.dim() != 4 or flows.shape[1] != 2:
        raise ValueError(f"track_points: {name} must be a Tensor[T - 1, 2, H, W], got {_shape(flows)}")


def track_points(
    flows_forward: Tensor,
    flows_backward: Tensor,
    spacing: int = 8,
    alpha: float = 0.01,
    beta: float = 0.5,
    boundary_alpha: float = 0.01,
    boundary_beta: float = 0.002,
    seed_new: bool = True,
    cameras: Tensor | Sequence[Tensor] | None = None,
) -> Tracks:
    """Sundaram et al. trajectories of a clip of T frames from its T - 1 flow pairs.

    Args:
        flows_forward (Tensor[T - 1, 2, H, W]): ``flows_forward[t]`` from frame t to t+1.
        flows_backward (Tensor[T - 1, 2, H, W]): ``flows_backward[t]`` from frame t+1 to t.
        spacing, alpha, beta, boundary_alpha, boundary_beta, seed_new: see :class:`PointTracker`.
        cameras (Tensor[T - 1, 3, 3] | None): dominant motion per frame pair; gives
            ``Tracks.omega`` (omega-trajectories).
    """
    _check_sequence(flows_forward, "flows_forward")
    _check_sequence(flows_backward, "flows_backward")
    if flows_forward.shape != flows_backward.shape:
        raise ValueError(
            f"track_points: flows_forward {_shape(flows_forward)} and flows_backward "
            f"{_shape(flows_backward)} must have one shape"
        )
    if cameras is not None and len(cameras) != flows_forward.shape[0]:
        raise ValueError(f"track_points: {len(cameras)} cameras for {flows_forward.shape[0]} frame pairs")
    tracker = PointTracker(spacing, alpha, beta, boundary_alpha, boundary_beta, seed_new)
    for t in range(flows_forward.shape[0]):
        tracker.step(flows_forward[t], flows_backward[t], None if cameras is None else cameras[t])
    return tracker.tracks()


def dominant_motions(
    flows_forward: Tensor,
    model: str = "affine",
    method: str = "ransac",
    seed: int = 0,
    threshold: float = 1.0,
) -> Tensor:
    """The camera's motion per frame pair, fitted robustly to each forward flow -> float64 ``[T-1, 3, 3]``."""
    _check_sequence(flows_forward, "flows_forward")
    fits = [
        robust_dominant_motion(f, model=model, method=method, seed=seed + t, threshold=threshold).matrix
        for t, f in enumerate(flows_forward)
    ]
    return torch.stack(fits) if fits else torch.zeros(0, 3, 3, dtype=torch.float64)


def omega_tracks(
    flows_forward: Tensor,
    flows_backward: Tensor,
    model: str = "affine",
    method: str = "ransac",
    seed: int = 0,
    spacing: int = 8,
    seed_new: bool = True,
) -> Tracks:
    """Jain et al.'s omega-trajectories: :func:`track_points` (paper constants) with the dominant
    motion of every frame pair fitted (:func:`dominant_motions`) and removed from ``Tracks.omega``."""
    cameras = dominant_motions(flows_forward, model, method, seed)
    return track_points(flows_forward, flows_backward, spacing, seed_new=seed_new, cameras=cameras)
