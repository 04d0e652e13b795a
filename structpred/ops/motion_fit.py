"""Dominant (camera) motion from point matches or a flow field: affine and homography fits,
robust by RANSAC or IRLS.

Jain et al. (2013, "Better exploiting motion for better action recognition") remove the
camera's motion from the optical flow before building trajectories: the dominant motion of a
frame pair is fitted to the flow as an affine map or a homography, robustly (moving objects are
the outliers), and subtracted, so what remains is the objects' own motion (the "omega-flow").

Shape shorthand:
    N: point matches, K: RANSAC hypotheses, H, W: flow field size.

Convention:
    * Points are ``(x, y)`` pixel coordinates; a motion is a ``float64 Tensor[3, 3]`` ``M`` acting
      on homogeneous column vectors: ``[x', y', w]^T = M [x, y, 1]^T``, target ``(x'/w, y'/w)``;
      normalised so ``M[2, 2] == 1``. An affine motion has last row ``(0, 0, 1)``.
    * On a flow field, pixel ``(i, j)`` is the point ``(x, y) = (j, i)`` and its target is
      ``(j + flow[0, i, j], i + flow[1, i, j])`` (the flow task's convention).
    * Homographies use Hartley's normalised DLT: each point set is moved to its centroid and
      scaled to a mean distance of sqrt(2) before the SVD, then the map is brought back.
    * Degenerate inputs (too few points, all points (nearly) on a line, zero total weight) are a
      ``ValueError`` naming the problem, never a silently wrong matrix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

MODELS = ("affine", "homography")
METHODS = ("ransac", "irls")
MIN_POINTS = {"affine": 3, "homography": 4}
_COLLINEAR_TOL = 1e-6  # smallest / largest singular value of centred, normalised points


def _shape(x: object) -> object:
    return tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__


def _check_matches(points: Tensor, targets: Tensor, weights: Tensor | None, name: str) -> Tensor:
    """Validated float64 weights ``[N]`` (ones when None)."""
    if not isinstance(points, Tensor) or points.dim() != 2 or points.shape[1] != 2:
        raise ValueError(f"{name}: points must be a Tensor[N, 2] of (x, y), got {_shape(points)}")
    if not isinstance(targets, Tensor) or targets.shape != points.shape:
        raise ValueError(
            f"{name}: targets must be a Tensor[N, 2] like points {_shape(points)}, got {_shape(targets)}"
        )
    if not (torch.isfinite(points).all() and torch.isfinite(targets).all()):
        raise ValueError(f"{name}: points and targets must be finite (NaN or inf found)")
    N = points.shape[0]
    if weights is None:
        return torch.ones(N, dtype=torch.float64, device=points.device)
    if not isinstance(weights, Tensor) or weights.shape != (N,):
        raise ValueError(f"{name}: weights must be a Tensor[{N}], got {_shape(weights)}")
    w = weights.to(torch.float64)
    if not torch.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"{name}: weights must be finite and >= 0")
    return w


def _check_spread(points: Tensor, weights: Tensor, model: str, name: str) -> None:
    """ValueError unless enough weighted points, not all on a line."""
    used = points[weights > 0]
    need = MIN_POINTS[model]
    if used.shape[0] < need:
        raise ValueError(
            f"{name}: a {model} needs at least {need} points with weight > 0, got {used.shape[0]}"
        )
    centred = used - used.mean(0)  # (N, 2)
    s = torch.linalg.svdvals(centred)
    if s[0] == 0 or s[1] / s[0] < _COLLINEAR_TOL:
        raise ValueError(f"{name}: the points are (nearly) collinear: a {model} is not determined by them")


def _normaliser(points: Tensor, weights: Tensor) -> Tensor:
    """Hartley's similarity ``T [3, 3]``: weighted centroid to 0, mean distance sqrt(2)."""
    w = weights / weights.sum()
    centre = (w[:, None] * points).sum(0)  # (2,)
    spread = (w * (points - centre).norm(dim=1)).sum().clamp_min(1e-12)
    s = math.sqrt(2.0) / float(spread)
    T = torch.eye(3, dtype=torch.float64, device=points.device)
    T[0, 0] = T[1, 1] = s
    T[:2, 2] = -s * centre
    return T


def _homogeneous(points: Tensor) -> Tensor:
    return torch.cat([points, torch.ones_like(points[..., :1])], dim=-1)  # (..., 2) -> (..., 3)


def apply_motion(motion: Tensor, points: Tensor) -> Tensor:
    """``motion`` (Tensor[3, 3]) applied to ``points`` (Tensor[N, 2]) -> Tensor[N, 2], same dtype.

    Points mapped to infinity (``w == 0``) come back inf/NaN; callers treat them as outliers.
    """
    if not isinstance(motion, Tensor) or motion.shape != (3, 3):
        raise ValueError(f"apply_motion: motion must be a Tensor[3, 3], got {_shape(motion)}")
    if not isinstance(points, Tensor) or points.dim() != 2 or points.shape[1] != 2:
        raise ValueError(f"apply_motion: points must be a Tensor[N, 2], got {_shape(points)}")
    mapped = _homogeneous(points.to(torch.float64)) @ motion.to(torch.float64).T  # (N, 3)
    return (mapped[:, :2] / mapped[:, 2:]).to(points.dtype)


def motion_flow(motion: Tensor, height: int, width: int) -> Tensor:
    """The flow field ``float32[2, H, W]`` of ``motion``: ``motion(p) - p`` at every pixel ``p``."""
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64),
                            torch.arange(width, dtype=torch.float64), indexing="ij")  # fmt: skip
    grid = torch.stack([xs, ys], dim=-1).reshape(-1, 2)  # (H, W, 2) -> (H*W, 2)
    moved = apply_motion(motion, grid) - grid  # (H*W, 2)
    return moved.T.reshape(2, height, width).to(torch.float32)  # (2, H*W) -> (2, H, W)


def fit_affine(points: Tensor, targets: Tensor, weights: Tensor | None = None) -> Tensor:
    """Weighted least-squares affine map ``points -> targets``.

    Args:
        points, targets (Tensor[N, 2]): matched ``(x, y)``; N >= 3 not all on a line.
        weights (Tensor[N] | None): non-negative weight per match.

    Returns:
        float64 Tensor[3, 3] with last row ``(0, 0, 1)``.
    """
    w = _check_matches(points, targets, weights, "fit_affine")
    p, q = points.to(torch.float64), targets.to(torch.float64)
    _check_spread(p, w, "affine", "fit_affine")
    T = _normaliser(p, w)  # conditioning only: the fit is exact for any similarity
    pn = _homogeneous(p) @ T.T  # (N, 3)
    sw = w.sqrt()[:, None]
    # Solve sqrt(w) * pn @ X = sqrt(w) * q for X [3, 2]: the affine map in normalised coordinates.
    X = torch.linalg.lstsq(sw * pn, sw * q).solution  # (3, 2)
    M = torch.eye(3, dtype=torch.float64, device=p.device)
    M[:2] = X.T @ T  # undo the normalisation of the inputs
    return M


def _dlt_rows(pn: Tensor, qn: Tensor) -> Tensor:
    """Two DLT equations per match: ``[..., N, 3]`` x2 -> ``[..., 2N, 9]``."""
    x, y = pn[..., 0:1], pn[..., 1:2]
    u, v = qn[..., 0:1], qn[..., 1:2]
    zero, one = torch.zeros_like(x), torch.ones_like(x)
    r1 = torch.cat([-x, -y, -one, zero, zero, zero, u * x, u * y, u], dim=-1)  # (..., N, 9)
    r2 = torch.cat([zero, zero, zero, -x, -y, -one, v * x, v * y, v], dim=-1)
    return torch.cat([r1, r2], dim=-2)  # (..., 2N, 9)


def fit_homography(points: Tensor, targets: Tensor, weights: Tensor | None = None) -> Tensor:
    """Weighted normalised DLT homography ``points -> targets`` (Hartley & Zisserman, Alg. 4.2).

    Args:
        points, targets (Tensor[N, 2]): matched ``(x, y)``; N >= 4, not all on a line.
        weights (Tensor[N] | None): non-negative weight per match (scales its two equations).

    Returns:
        float64 Tensor[3, 3], ``[2, 2] == 1``.
    """
    w = _check_matches(points, targets, weights, "fit_homography")
    p, q = points.to(torch.float64), targets.to(torch.float64)
    _check_spread(p, w, "homography", "fit_homography")
    _check_spread(q, w, "homography", "fit_homography (targets)")
    Tp, Tq = _normaliser(p, w), _normaliser(q, w)
    A = _dlt_rows((_homogeneous(p) @ Tp.T)[:, :2], (_homogeneous(q) @ Tq.T)[:, :2])  # (2N, 9)
    A = A * w.sqrt().repeat(2)[:, None]
    if A.shape[0] < 9:  # four matches: 8 equations; a zero row keeps Vh square (9 x 9)
        A = torch.cat([A, A.new_zeros(9 - A.shape[0], 9)])
    _, s, Vh = torch.linalg.svd(A, full_matrices=False)  # (2N, 9): never the 2N x 2N U
    if s.shape[0] >= 8 and s[7] < 1e-10 * s[0]:  # a second null vector: the fit is not unique
        raise ValueError(
            "fit_homography: the matches do not determine a homography (degenerate configuration)"
        )
    Hn = Vh[-1].reshape(3, 3)
    H = torch.linalg.solve(Tq, Hn @ Tp)  # Tq^-1 Hn Tp
    if abs(float(H[2, 2])) < 1e-12:
        raise ValueError("fit_homography: the fitted map sends the origin to infinity (degenerate matches)")
    return H / H[2, 2]


def fit_motion(
    points: Tensor, targets: Tensor, weights: Tensor | None = None, model: str = "homography"
) -> Tensor:
    """:func:`fit_affine` or :func:`fit_homography` by name."""
    if model not in MODELS:
        raise ValueError(f"fit_motion: model must be one of {MODELS}, got {model!r}")
    return (
        fit_affine(points, targets, weights)
        if model == "affine"
        else fit_homography(points, targets, weights)
    )


def _batched_minimal(p: Tensor, q: Tensor, model: str) -> Tensor:
    """Exact fits of K minimal samples ``[K, n, 2]`` -> ``[K, 3, 3]`` (NaN where degenerate)."""
    K = p.shape[0]
    if model == "affine":
        A = _homogeneous(p)  # (K, 3, 3): rows (x, y, 1)
        X = torch.linalg.solve_ex(A, q)[0]  # (K, 3, 2); garbage where singular, filtered by scoring
        M = torch.zeros(K, 3, 3, dtype=p.dtype)
        M[:, :2] = X.transpose(1, 2)
        M[:, 2, 2] = 1.0
        return M
    A = _dlt_rows(p, q)  # (K, 8, 9)
    Vh = torch.linalg.svd(A, full_matrices=True)[2]  # (K, 9, 9)
    M = Vh[:, -1].reshape(K, 3, 3)
    return M / M[:, 2:3, 2:3]


def _residuals(M: Tensor, p: Tensor, q: Tensor) -> Tensor:
    """Transfer error ``|M(p) - q|`` for K models ``[K, 3, 3]`` on N matches -> ``[K, N]`` (inf if bad)."""
    mapped = _homogeneous(p) @ M.transpose(1, 2)  # (N, 3) @ (K, 3, 3) -> (K, N, 3)
    err = (mapped[..., :2] / mapped[..., 2:] - q).norm(dim=-1)  # (K, N)
    return torch.nan_to_num(err, nan=math.inf, posinf=math.inf)


@dataclass
class MotionFit:
    """A robust dominant-motion fit.

    Attributes:
        matrix: float64 ``[3, 3]``, the motion (``[2, 2] == 1``).
        inliers: bool ``[N]`` (matches) or ``[H, W]`` (flow pixels): transfer error below the
            threshold under ``matrix``.
        model, method: what was fitted and how.
    """

    matrix: Tensor
    inliers: Tensor
    model: str
    method: str

    @property
    def inlier_fraction(self) -> float:
        return float(self.inliers.float().mean()) if self.inliers.numel() else 0.0


def ransac_motion(
    points: Tensor,
    targets: Tensor,
    model: str = "homography",
    threshold: float = 1.0,
    iterations: int = 256,
    seed: int = 0,
) -> MotionFit:
    """RANSAC over minimal samples (batched), then a least-squares refit on the inliers, twice.

    Args:
        points, targets (Tensor[N, 2]): matches.
        threshold: inlier transfer error in pixels.
        iterations: number of minimal samples K.
        seed: the sampler's seed (results are deterministic).
    """
    if model not in MODELS:
        raise ValueError(f"ransac_motion: model must be one of {MODELS}, got {model!r}")
    if not threshold > 0:
        raise ValueError(f"ransac_motion: threshold must be positive, got {threshold}")
    if iterations < 1:
        raise ValueError(f"ransac_motion: iterations must be >= 1, got {iterations}")
    _check_matches(points, targets, None, "ransac_motion")
    p, q = points.to(torch.float64), targets.to(torch.float64)
    need = MIN_POINTS[model]
    _check_spread(p, torch.ones(p.shape[0], dtype=torch.float64), model, "ransac_motion")
    N = p.shape[0]
    g = torch.Generator().manual_seed(seed)
    # (K, n); a sample that repeats a match is degenerate, scores nothing and is simply outvoted
    idx = torch.randint(N, (iterations, need), generator=g)
    hypotheses = _batched_minimal(p[idx], q[idx], model)  # (K, 3, 3)
    counts = (_residuals(hypotheses, p, q) < threshold).sum(1)  # (K,)
    best = hypotheses[int(counts.argmax())]
    inliers = _residuals(best[None], p, q)[0] < threshold
    for _ in range(2):  # refit on the consensus set, re-select (the refit averages the noise)
        if int(inliers.sum()) < need:
            break
        try:
            best = fit_motion(p[inliers], q[inliers], model=model)
        except ValueError:
            break
        inliers = _residuals(best[None], p, q)[0] < threshold
    return MotionFit(best, inliers, model, "ransac")


def irls_motion(
    points: Tensor,
    targets: Tensor,
    model: str = "homography",
    threshold: float = 1.0,
    iterations: int = 20,
    init: Tensor | None = None,
) -> MotionFit:
    """Iteratively reweighted least squares with Tukey's biweight (cut-off ``4.685 * scale``).

    The scale starts at the median absolute residual of the least-squares (or ``init``) fit and
    never goes below ``threshold / 2``; with many outliers, start from a RANSAC fit (``init``).
    """
    if model not in MODELS:
        raise ValueError(f"irls_motion: model must be one of {MODELS}, got {model!r}")
    if not threshold > 0:
        raise ValueError(f"irls_motion: threshold must be positive, got {threshold}")
    w = _check_matches(points, targets, None, "irls_motion")
    p, q = points.to(torch.float64), targets.to(torch.float64)
    M = fit_motion(p, q, w, model) if init is None else init.to(torch.float64)
    for _ in range(iterations):
        r = _residuals(M[None], p, q)[0]  # (N,)
        scale = (
            max(float(r[torch.isfinite(r)].median()) / 0.6745, threshold / 2)
            if torch.isfinite(r).any()
            else 1.0
        )
        u = (r / (4.685 * scale)).clamp(max=1.0)
        w = (1 - u**2) ** 2  # Tukey: 0 beyond the cut-off
        try:
            M_new = fit_motion(p, q, w, model)
        except ValueError:
            break  # the support collapsed: keep the last good fit
        done = float((M_new - M).abs().max()) < 1e-10
        M = M_new
        if done:
            break
    inliers = _residuals(M[None], p, q)[0] < threshold
    return MotionFit(M, inliers, model, "irls")


def flow_matches(
    flow: Tensor, valid: Tensor | None = None, max_points: int = 4096, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor]:
    """Pixel -> pixel + flow matches of a flow field, at most ``max_points`` (a seeded random subset).

    Args:
        flow (Tensor[2, H, W]): (dx, dy) in pixels.
        valid (Tensor[H, W] bool | None): pixels to use (default: where the flow is finite).

    Returns:
        points float64 ``[N, 2]``, targets float64 ``[N, 2]``, flat pixel indices int64 ``[N]``.
    """
    if not isinstance(flow, Tensor) or flow.dim() != 3 or flow.shape[0] != 2:
        raise ValueError(f"flow_matches: flow must be a Tensor[2, H, W], got {_shape(flow)}")
    _, H, W = flow.shape
    use = torch.isfinite(flow).all(0)  # (H, W)
    if valid is not None:
        if not isinstance(valid, Tensor) or valid.shape != (H, W):
            raise ValueError(f"flow_matches: valid must be a bool Tensor[{H}, {W}], got {_shape(valid)}")
        use = use & valid.bool()
    index = torch.nonzero(use.reshape(-1)).squeeze(1)  # (N,)
    if index.numel() > max_points:
        g = torch.Generator().manual_seed(seed)
        index = index[torch.randperm(index.numel(), generator=g)[:max_points]].sort().values
    ys, xs = (index // W).to(torch.float64), (index % W).to(torch.float64)
    points = torch.stack([xs, ys], dim=1)  # (N, 2)
    f = flow.reshape(2, H * W)[:, index].T.to(torch.float64)  # (2, H*W) -> (N, 2)
    return points, points + f, index


def robust_dominant_motion(
    flow: Tensor,
    valid: Tensor | None = None,
    model: str = "homography",
    method: str = "ransac",
    seed: int = 0,
    threshold: float = 1.0,
    max_points: int = 4096,
    iterations: int = 256,
) -> MotionFit:
    """The dominant motion of a flow field (the camera's, when the background fills most of it).

    Args:
        flow (Tensor[2, H, W]): forward flow (dx, dy) in pixels.
        valid (Tensor[H, W] bool | None): pixels allowed in the fit.
        model: ``"affine"`` or ``"homography"``.
        method: ``"ransac"`` (batched minimal samples, refit on inliers) or ``"irls"`` (Tukey
            weights started from a RANSAC fit with a quarter of the samples: IRLS from plain
            least squares breaks down with many outliers).
        seed: the pixel subset's and the sampler's seed.
        threshold: inlier transfer error in pixels.
        max_points: pixels used in the fit (a seeded random subset).

    Returns:
        :class:`MotionFit` whose ``inliers`` is a bool ``[H, W]`` over the whole field.
    """
    if method not in METHODS:
        raise ValueError(f"robust_dominant_motion: method must be one of {METHODS}, got {method!r}")
    if model not in MODELS:
        raise ValueError(f"robust_dominant_motion: model must be one of {MODELS}, got {model!r}")
    points, targets, _ = flow_matches(flow, valid, max_points, seed)
    if method == "ransac":
        fit = ransac_motion(points, targets, model, threshold, iterations, seed)
    else:
        start = ransac_motion(points, targets, model, threshold, max(8, iterations // 4), seed)
        fit = irls_motion(points, targets, model, threshold, init=start.matrix)
    _, H, W = flow.shape
    moved = motion_flow(fit.matrix, H, W).to(flow.dtype)  # (2, H, W)
    inliers = ((moved - flow).norm(dim=0) < threshold) & torch.isfinite(flow).all(0)
    return MotionFit(fit.matrix, inliers, model, method)
