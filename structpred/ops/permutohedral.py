"""The permutohedral lattice (Adams, Baek & Davis, 2010): O(N) high-dimensional Gaussian filtering.

Filtering ``N`` points with a Gaussian kernel over ``d``-dimensional features,
``out_i = sum_j exp(-|f_i - f_j|^2 / 2) v_j``, costs O(N^2) done exactly. The lattice
approximates it in O(N (d+1)): every point is *splatted* onto the ``d+1`` vertices of the
lattice simplex that encloses it (barycentric weights), the lattice values are *blurred* with
the ``[1/2, 1, 1/2]`` kernel along each of the ``d+1`` lattice directions in turn, and every
point *slices* its value back from its vertices with the same weights.

The lattice is built once per feature set (:func:`build_lattice`) and applied to any number of
value tensors (:func:`lattice_filter`), which is what mean-field CRF inference needs: one image,
many filterings. Splat, each blur direction and slice are one weighted ``embedding_bag`` sum
each (a gather-and-accumulate over fixed index lists, one parallel region per step). Several
lattices over the same points stack into one (:func:`stack_lattices`, their vertices side by
side) whose filter is their weighted sum, in the same number of steps. Autograd goes through a
custom function whose backward is the transposed filter (the same splat and slice, the blur
directions in reverse order), so it is cheap and twice-differentiable.

Shape shorthand:
    N: points (pixels), d: feature dimensions, S: distinct enclosing simplices,
    M: lattice vertices in use, c: vertices per point (d+1), C: value channels.

Convention (that of Krähenbühl's ``permutohedral.cpp``, which pydensecrf wraps, so results match):
    * Features are not scaled by any sigma here: pass ``f / sigma``. The lattice's own scale
      ``sqrt(2/3) (d+1)`` makes the blur a Gaussian of standard deviation ~1 in feature units.
    * Elevation, rounding to the nearest remainder-0 point (ties to even, as SSE rounding) and
      the rank (a stable descending order of the remainders: equal remainders rank by index)
      are computed in float32 like the C++, whatever the dtype of the values.
    * A missing blur neighbour counts as 0; the slice is scaled by ``alpha = 1 / (1 + 2^-d)``.
    * The filter includes every point's own contribution (the kernel at distance 0 is ~1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

# Lattice and simplex codes are mixed-radix int64; above this whole rows are matched instead.
_MAX_CODE = 2**62


@dataclass(frozen=True)
class Bags:
    """Weighted index lists: ``out[b] = sum_e weight[e] * table[index[e]]`` over bag ``b``'s entries.

    Attributes:
        index (int[E]): rows of the table, bag after bag.
        offsets (int[B]): where each bag starts in ``index`` (no bag is empty).
        weight (Tensor[E]): one weight per entry.
    """

    index: Tensor
    offsets: Tensor
    weight: Tensor

    def __call__(self, table: Tensor) -> Tensor:
        """``[B, C]`` sums of the rows of ``table`` (``[R, C]``)."""
        return F.embedding_bag(self.index, table, self.offsets, mode="sum", per_sample_weights=self.weight)


def _bags(index: Tensor, counts: Tensor, weight: Tensor) -> Bags:
    """Bags from entries already grouped by bag, ``counts[b]`` entries for bag ``b``."""
    offsets = torch.cumsum(counts, 0) - counts  # exclusive prefix sum
    return Bags(index, offsets.to(index.dtype), weight)


@dataclass(frozen=True)
class Lattice:
    """A permutohedral lattice over ``N`` points (see :func:`build_lattice`).

    The filter is ``slice(blur_D(... blur_1(splat(values))))``. Invariant: the slice is the
    splat transposed times a per-vertex factor that is constant on each stacked block
    (``alpha`` times the block's weight) and every blur step is symmetric, so the transposed
    filter is the same chain with the blur directions reversed.

    Attributes:
        splat: ``M`` bags over the points: vertex ``m`` sums ``weight * values[point]``.
        slice_index (int[N, c]) and slice_weight (Tensor[N, c]): the vertices of every point and
            their (scaled) barycentric weights.
        blur: one :class:`Bags` per direction, ``M`` bags over the vertices (itself with weight 1,
            each existing neighbour with weight 1/2).
    """

    splat: Bags
    slice_index: Tensor
    slice_weight: Tensor
    blur: tuple[Bags, ...]

    @property
    def num_points(self) -> int:
        return self.slice_index.shape[0]

    @property
    def num_vertices(self) -> int:
        return self.splat.offsets.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.slice_weight.dtype

    def slice(self, vertex_values: Tensor) -> Tensor:
        """``[N, C]`` point values read back from the ``[M, C]`` vertex values."""
        index, weight = self.slice_index, self.slice_weight
        return F.embedding_bag(index, vertex_values, mode="sum", per_sample_weights=weight)

    def rescaled(self, point_scale: Tensor) -> Lattice:
        """The lattice of ``diag(s) F diag(s)``: splat and slice weights of point ``n`` times ``s[n]``.

        Args:
            point_scale (Tensor[N]): per-point factor (e.g. a symmetric normalisation).
        """
        s = point_scale.to(self.dtype)
        splat_weight = self.splat.weight * s.index_select(0, self.splat.index)
        splat = Bags(self.splat.index, self.splat.offsets, splat_weight)
        return Lattice(splat, self.slice_index, self.slice_weight * s[:, None], self.blur)


def _elevate(features: Tensor) -> Tensor:
    """Project ``features`` (float32 ``[d, N]``) onto the plane ``sum = 0`` of Z^(d+1): ``[d+1, N]``."""
    d, N = features.shape
    inv_std_dev = math.sqrt(2.0 / 3.0) * (d + 1)  # expected std of the blur (p. 6 of the paper)
    scale = [inv_std_dev / math.sqrt((j + 1) * (j + 2)) for j in range(d)]
    cf = features * torch.tensor(scale, dtype=torch.float32, device=features.device)[:, None]  # (d, N)
    # tail[j] = sum_{k >= j} cf[k], accumulated from the last feature as the C++ does.
    tail = cf.flip(0).cumsum(0).flip(0)  # (d, N)
    j = torch.arange(1, d + 1, dtype=torch.float32, device=features.device)[:, None]
    after = torch.cat([tail[1:], tail.new_zeros(1, N)])  # (d, N): sum_{k > j-1} cf[k]
    return torch.cat([tail[:1], after - j * cf])  # (d+1, N)


def _enclosing_simplex(elevated: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Remainder-0 corner, ranks and barycentric weights of each point's simplex.

    Args:
        elevated (Tensor[d+1, N]): float32 points on the lattice plane.

    Returns:
        rem0, rank (float32[d+1, N], integer-valued: exact, and faster than int64 on CPU),
        barycentric (float32[d+1, N]).
    """
    d1, N = elevated.shape
    d = d1 - 1
    down = float(torch.tensor(1.0 / d1, dtype=torch.float32))
    nearest = torch.round(elevated * down)  # (d+1, N) ties to even, like _mm_cvtps_epi32
    rem0 = nearest * d1
    residual = elevated - rem0
    # rank[i] = how many residuals are larger (ties: the earlier coordinate counts as larger),
    # i.e. the position in a stable descending sort. As the C++: for every pair i < j, +1 for i
    # if residual_i < residual_j, else +1 for j. Starts at the plane offset sum(nearest).
    rank = nearest.sum(0).expand(d1, N).clone()  # (d+1, N)
    for i in range(d):
        smaller = (residual[i : i + 1] < residual[i + 1 :]).to(torch.float32)  # (d-i, N): vs every j > i
        rank[i] += smaller.sum(0)
        rank[i + 1 :] += 1.0 - smaller
    # Bring the corner back onto the plane: wrap ranks outside [0, d] around.
    shift = (rank < 0).to(torch.float32) - (rank > d).to(torch.float32)  # (d+1, N) in {-1, 0, 1}
    rank += d1 * shift
    rem0 += d1 * shift
    # Barycentric weights (p. 10): b[d - rank_i] += v_i, b[d - rank_i + 1] -= v_i.
    v = (elevated - rem0) * down  # (d+1, N)
    slot = (d - rank).to(torch.int64)
    bary = elevated.new_zeros(d1 + 1, N).scatter_add_(0, slot, v).scatter_add_(0, slot + 1, -v)
    bary[0] += 1.0 + bary[d1]  # wrap around
    return rem0, rank, bary[:d1]


def _radix(low: list[int], high: list[int], limit: int) -> list[int] | None:
    """Mixed-radix place values of the integer box ``[low, high]``; ``None`` if it has ``>= limit`` cells."""
    radix, size = [], 1
    for lo, hi in zip(low, high, strict=True):
        radix.append(size)
        size *= hi - lo + 1
    return radix if size < limit else None


def _group(columns: Tensor) -> tuple[Tensor, Tensor]:
    """Group equal columns of integer-valued float ``columns`` (``[C, P]``).

    Returns ``(group of each column [P], member [G])``, ``member[g]`` the first column of group
    ``g`` (deterministic on every device).
    """
    P = columns.shape[1]
    low = columns.amin(1)
    radix = _radix([int(v) for v in low.tolist()], [int(v) for v in columns.amax(1).tolist()], 2**53)
    if radix is None:
        _, group = torch.unique(columns.t(), dim=0, return_inverse=True)
    else:  # float64 codes are exact below 2^53; a GEMV is much faster than int64 arithmetic
        place = torch.tensor(radix, dtype=torch.float64, device=columns.device)
        codes = place @ (columns - low[:, None]).to(torch.float64)  # (C,) @ (C, P) -> (P,)
        _, group = torch.unique(codes, return_inverse=True)
    G = int(group.max()) + 1
    member = torch.full((G,), P, dtype=torch.int64, device=columns.device)
    member.scatter_reduce_(0, group, torch.arange(P, device=columns.device), "amin")  # deterministic
    return group, member


def _vertices(corner: Tensor, rank: Tensor) -> tuple[Tensor, Tensor]:
    """Vertex ids of every simplex and the blur neighbours of every vertex.

    Vertex ``r`` of a simplex is ``corner + canonical[r][rank]`` with ``canonical[r][k] = r``
    for ``k <= d - r`` and ``r - (d+1)`` otherwise. Only the first ``d`` coordinates are used
    (they sum to 0 with the last one).

    Args:
        corner (int64[d+1, S]) and rank (int64[d+1, S]) of each distinct simplex.

    Returns:
        vertex (int64[S, d+1]): ids in ``[0, M)`` (in the sorted order of the vertex codes).
        blur_index (int64[d+1, 2*M]): ``-`` then ``+`` neighbour per direction, ``M`` if absent.
    """
    d1, S = corner.shape
    d = d1 - 1
    dev = corner.device
    # Along direction j the "-" neighbour moves every coordinate by -1 except coordinate j, by +d
    # (for j = d the moved coordinate is the implied last one): key + steps[j].
    steps = torch.full((d1, d), -1, dtype=torch.int64, device=dev)
    steps[torch.arange(d), torch.arange(d)] = d
    # Vertices lie within d of the corner, their blur neighbours d further.
    reach = 2 * d + 1
    low = (corner[:d].amin(1) - reach).tolist()
    radix = _radix(low, (corner[:d].amax(1) + reach).tolist(), _MAX_CODE)
    if radix is not None:
        low_t = torch.tensor(low, dtype=torch.int64, device=dev)[:, None]
        radix_t = torch.tensor(radix, dtype=torch.int64, device=dev)
        base = ((corner[:d] - low_t) * radix_t[:, None]).sum(0)  # (S,): code of each corner
        # code(vertex r) = base + r * sum(radix) - (d+1) * sum_{i: rank_i > d-r} radix_i, and the
        # last sum is a suffix sum over rank values of radix_i placed at rank_i.
        placed = torch.zeros(d1 + 1, S, dtype=torch.int64, device=dev)
        placed.scatter_(0, rank[:d], radix_t[:, None].expand(d, S))  # (d+2, S): radix_i at row rank_i
        above = placed.flip(0).cumsum(0).flip(0)  # (d+2, S): above[k] = sum_{rank_i >= k} radix_i
        r = torch.arange(d1, device=dev)
        codes = base + r[:, None] * sum(radix) - d1 * above[1:].flip(0)  # (d+1, S): above[d+1-r]
        table, vertex = torch.unique(codes.t().reshape(-1), return_inverse=True)  # (M,), (S*(d+1),)
        delta = (steps * radix_t).sum(1)  # (d+1,): a step is a constant shift of the code
        query = torch.stack([table[None] + delta[:, None], table[None] - delta[:, None]], 1)  # (d+1, 2, M)
        M = table.numel()
        pos = torch.searchsorted(table, query).clamp_(max=M - 1).reshape(-1)
        blur = torch.where(table.index_select(0, pos) == query.reshape(-1), pos, M)
        return vertex.view(S, d1), blur.view(d1, 2 * M)
    r = torch.arange(d1, device=dev)
    wraps = rank[None, :d, :] > (d - r)[:, None, None]  # (d+1 vertices, d coords, S)
    shift = r[:, None, None] - d1 * wraps.to(torch.int64)  # (d+1, d, S): vertex - corner
    # Huge coordinate ranges (tiny sigmas): match whole coordinate rows instead of codes.
    keys = (corner[None, :d] + shift).permute(2, 0, 1).reshape(-1, d)  # (d+1, d, S) -> (S*(d+1), d)
    table, vertex = torch.unique(keys, dim=0, return_inverse=True)  # (M, d)
    M = table.shape[0]
    query = torch.stack([table[None] + steps[:, None], table[None] - steps[:, None]], 1)  # (d+1, 2, M, d)
    both = torch.cat([table, query.reshape(-1, d)])
    _, ids = torch.unique(both, dim=0, return_inverse=True)
    owner = torch.full((both.shape[0],), M, dtype=torch.int64, device=keys.device)
    owner[ids[:M]] = torch.arange(M, device=keys.device)  # row id -> vertex (M: not a vertex)
    return vertex.view(S, d1), owner[ids[M:]].reshape(d1, 2 * M)


def build_lattice(
    features: Tensor, dtype: torch.dtype = torch.float32, *, points_last: bool = False
) -> Lattice:
    """Build the permutohedral lattice of ``N`` points.

    Args:
        features (Tensor[N, d]): point positions already divided by the kernel's standard
            deviations (the lattice geometry is computed in float32); ``Tensor[d, N]`` with
            ``points_last=True`` (one contiguous row per feature, the layout used inside).
        dtype: dtype of the splat/slice weights, i.e. of the values it will filter.

    Returns:
        The :class:`Lattice`; build it once and filter many value tensors with it.
    """
    shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
    if not isinstance(features, Tensor) or features.dim() != 2:
        raise ValueError(f"features must be a Tensor[{'d, N' if points_last else 'N, d'}], got {shape}")
    columns = features.to(torch.float32)
    columns = columns.contiguous() if points_last else columns.t().contiguous()  # (d, N)
    if columns.shape[0] < 1 or columns.shape[1] < 1:
        raise ValueError(f"features must hold at least one point with d >= 1 features, got {shape}")
    d, N = columns.shape
    d1 = d + 1
    # Every per-coordinate step below is one contiguous vector op over the points.
    rem0, rank, bary = _enclosing_simplex(_elevate(columns))
    # Points in the same simplex share its vertices: find them once per distinct simplex,
    # identified by its corner (multiples of d+1) and rank permutation (first d entries each).
    of_point, member = _group(torch.cat([rem0[:d] / d1, rank[:d]]))  # (N,), (S,)
    # (d+1, N) -> (d+1, S), row by row (a 1-D index_select is much faster than along dim 1)
    corner = torch.stack([row.index_select(0, member) for row in rem0]).to(torch.int64)
    ranks = torch.stack([row.index_select(0, member) for row in rank]).to(torch.int64)
    simplex_vertex, blur_index = _vertices(corner, ranks)  # (S, d+1), (d+1, 2M)
    M = blur_index.shape[1] // 2
    index_dtype = torch.int32 if N * d1 < 2**31 else torch.int64  # int32 indices read faster
    vertex = simplex_vertex.to(index_dtype).index_select(0, of_point)  # (N, d+1)
    weight = bary.t().to(dtype).contiguous()  # (d+1, N) -> (N, d+1)
    alpha = 1.0 / (1.0 + 2.0**-d)  # Adams' constant, folded into the slice
    # Splat bags: the (point, corner) entries ordered by vertex (stable: points stay ascending).
    by_vertex = torch.sort(vertex.reshape(-1), stable=True)
    points = torch.div(by_vertex.indices.to(index_dtype), d1, rounding_mode="floor")
    counts = torch.bincount(by_vertex.values, minlength=M)
    splat = _bags(points, counts, weight.reshape(-1).index_select(0, by_vertex.indices))
    return Lattice(splat, vertex, weight * alpha, _blur_bags(blur_index, index_dtype, dtype))


def _blur_bags(blur_index: Tensor, index_dtype: torch.dtype, dtype: torch.dtype) -> tuple[Bags, ...]:
    """Per direction, the bag ``[m, minus, plus]`` of each vertex, absent neighbours left out."""
    D, M = blur_index.shape[0], blur_index.shape[1] // 2
    me = torch.arange(M, device=blur_index.device)
    centre_weight = torch.tensor([1.0, 0.5, 0.5], dtype=dtype, device=blur_index.device)
    out = []
    for j in range(D):
        three = torch.stack([me, blur_index[j, :M], blur_index[j, M:]], dim=1)  # (M, 3)
        present = three != M
        out.append(_bags(three[present].to(index_dtype), present.sum(1), centre_weight.expand(M, 3)[present]))
    return tuple(out)


def _cat_bags(parts: Sequence[Bags]) -> Bags:
    """The bags of every part, one after the other (offsets moved past the earlier entries)."""
    starts, total = [], 0
    for b in parts:
        starts.append(b.offsets + total)
        total += b.index.numel()
    return Bags(torch.cat([b.index for b in parts]), torch.cat(starts), torch.cat([b.weight for b in parts]))


def stack_lattices(parts: Sequence[tuple[Lattice, float]]) -> Lattice:
    """One lattice whose filter is ``sum_k w_k filter_k`` (the parts' vertices side by side).

    Args:
        parts: ``(lattice, weight)`` pairs over the same ``N`` points, same dtype.
    """
    if not parts:
        raise ValueError("stack_lattices needs at least one lattice")
    N = parts[0][0].num_points
    if any(lat.num_points != N for lat, _ in parts):
        sizes = [lat.num_points for lat, _ in parts]
        raise ValueError(f"stacked lattices must share their points, got {sizes} points")
    directions = max(len(lat.blur) for lat, _ in parts)
    slice_index, slice_weight = [], []
    blur: list[list[Bags]] = [[] for _ in range(directions)]
    first = 0  # id of the part's first vertex in the stack
    for lat, w in parts:
        M = lat.num_vertices
        slice_index.append(lat.slice_index + first)  # (N, c_k)
        slice_weight.append(lat.slice_weight * w)
        for j in range(directions):
            if j < len(lat.blur):
                blur[j].append(Bags(lat.blur[j].index + first, lat.blur[j].offsets, lat.blur[j].weight))
            else:  # a direction this part does not have: its vertices keep their values
                me = torch.arange(M, device=lat.slice_index.device, dtype=lat.slice_index.dtype)
                ones = torch.ones(M, dtype=lat.dtype, device=me.device)
                blur[j].append(Bags(me + first, me, ones))
        first += M
    return Lattice(
        _cat_bags([lat.splat for lat, _ in parts]),
        torch.cat(slice_index, dim=1),  # (N, sum c_k)
        torch.cat(slice_weight, dim=1),
        tuple(_cat_bags(bags) for bags in blur),
    )


def _filter(values: Tensor, lattice: Lattice, reverse: bool) -> Tensor:
    vertex_values = lattice.splat(values)  # (N, C) -> (M, C)
    for step in reversed(lattice.blur) if reverse else lattice.blur:
        vertex_values = step(vertex_values)  # (M, C) -> (M, C)
    return lattice.slice(vertex_values)  # (M, C) -> (N, C)


class _LatticeFilter(torch.autograd.Function):
    """The filter is linear, so its backward is the transposed filter: blur directions reversed."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx, values: Tensor, lattice: Lattice, reverse: bool
    ) -> Tensor:
        ctx.lattice = lattice  # type: ignore[attr-defined]
        ctx.reverse = reverse  # type: ignore[attr-defined]
        return _filter(values, lattice, reverse)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor, None, None]:
        lattice: Lattice = ctx.lattice  # type: ignore[attr-defined]
        reverse: bool = ctx.reverse  # type: ignore[attr-defined]
        return _LatticeFilter.apply(grad.contiguous(), lattice, not reverse), None, None


def lattice_filter(values: Tensor, lattice: Lattice, reverse: bool = False) -> Tensor:
    """Approximate Gaussian filtering of ``values`` over the lattice's points (differentiable).

    Args:
        values (Tensor[N, C]): one row per point, in the dtype the lattice was built with.
        lattice: from :func:`build_lattice` (or :func:`stack_lattices`) over the same points.
        reverse: blur the directions in reverse order (the transposed filter).

    Returns:
        Tensor[N, C]: ``sum_j k(f_i, f_j) values_j`` with ``k ~ exp(-|f_i - f_j|^2 / 2)``.
    """
    N = lattice.num_points
    if not isinstance(values, Tensor) or values.dim() != 2 or values.shape[0] != N:
        shape = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
        raise ValueError(f"values must be a Tensor[N, C] with N = {N}, got {shape}")
    if values.dtype != lattice.dtype:
        raise ValueError(f"values are {values.dtype} but the lattice was built for {lattice.dtype}")
    return _LatticeFilter.apply(values.contiguous(), lattice, reverse)
