"""Joint transforms: one geometric change applied alike to every view and every target key.

Shape shorthand:
    V: views (2 for a pair, T for a clip); C: channels; H, W: size before; h, w: after;
    N: objects of a single image; M: tracks of a clip.

Convention:
    * An item is ``(images, target)``: images float ``[C, H, W]`` (a single image), ``[2, C, H, W]``
      (a pair: frame0 / frame1, or left / right) or ``[T, C, H, W]`` (a clip). A pair is a
      *stereo pair* when its target has any of :data:`STEREO_KEYS`; every other multi-view item
      (flow pair, clip) is transformed view by view alike, its target described in view 0's frame.
    * Pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``; boxes are xyxy pixel edges. A flip maps box
      edges ``x -> W - x`` and pixel columns ``j -> W - 1 - j``.
    * Resampling: images bilinear (``align_corners=False``, antialiased when shrinking, as
      torchvision). Every dense target is resampled nearest at pixel centres (``nearest-exact``):
      label maps stay labels, and flow / disparity / depth are never blended across a motion or
      depth edge. Flow vectors scale by ``(sx, sy) = (w / W, h / H)``, disparities, ``focal`` and
      ``doffs`` by ``sx``; depth (metres) and ``baseline`` are unchanged, so
      ``depth = focal * baseline / (disparity + doffs)`` still holds.
    * ``valid`` / ``valid_right`` after a crop or resize also require the matched pixel to lie in
      the new image: ``p + flow[p]`` (flow pair), ``x - disparity`` (left), ``x + disparity_right``.
    * ``keypoints`` ``[N, K, 3]`` are (x, y, visibility) in the boxes' continuous pixel frame: a flip
      maps ``x -> W - x`` and renames the points by a permutation (COCO's ``flip_pairs``: a left
      eye becomes a right eye), given to :func:`hflip` as ``keypoint_flip`` (one ``[K]``
      permutation, or one per label ``[L, K]``); a resize scales them; a crop moves them and
      makes the points outside the window unlabelled. Unlabelled points (visibility 0) are
      (0, 0, 0) after every transform, as COCO writes them.
    * Unknown tensor keys whose trailing dims are ``(H, W)`` raise ``ValueError``; other unknown keys
      pass through unchanged, as do :data:`PASS_THROUGH` keys (updated where they have geometry).
    * Randomness comes from each transform's own ``torch.Generator``, never the global RNG. A
      DataLoader worker gets a copy of the transform and of its generator: reseed per worker
      (``worker_init_fn``) if workers must draw differently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .keypoint_ops import crop_keypoints, flip_keypoints, scale_keypoints

Target = dict[str, Any]
JointTransform = Callable[[Tensor, Target], tuple[Tensor, Target]]

LABEL_MAPS = (
    "masks",
    "semantic",
    "parts",
    "instances",
    "valid",
    "valid_right",
    "occluded",
    "noc",
)  # nearest, values kept
VALUE_MAPS = ("flow", "disparity", "disparity_right", "depth", "depth_right")  # nearest, values scaled
BOX_KEYS = ("boxes", "tracks")  # xyxy [N, 4] (single image, view 0) / [M, T, 4] (clip)
CALIBRATION_KEYS = ("focal", "baseline", "doffs")  # scalars; focal and doffs follow the width
PASS_THROUGH = ("image_id", "labels", "track_ids", "iscrowd", "area", "visible", "stereo") + CALIBRATION_KEYS
# any of these marks a [2, C, H, W] item as a rectified stereo pair; ``stereo`` (bool scalar) is the
# marker of pairs that carry nothing else (e.g. unlabelled, uncalibrated training pairs)
STEREO_KEYS = ("disparity", "disparity_right", "valid_right", "depth_right", "baseline", "stereo")
OBJECT_KEYS = ("boxes", "labels", "masks", "area", "iscrowd", "track_ids", "keypoints")  # dropped together
_MAPS = LABEL_MAPS + VALUE_MAPS
KEYPOINT_KEY = "keypoints"  # [N, K, 3] (x, y, visibility), single images only


def _size_pair(size: int | Sequence[int], where: str) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in pair):
        raise ValueError(f"{where}: size must be a positive int or a pair (h, w) of them, got {size!r}")
    return int(pair[0]), int(pair[1])


def _generator(generator: torch.Generator | int | None, where: str) -> torch.Generator:
    if isinstance(generator, torch.Generator):
        return generator
    if generator is None:
        generator = 0
    if isinstance(generator, bool) or not isinstance(generator, int) or generator < 0:
        raise ValueError(f"{where}: generator must be a torch.Generator or a non-negative int seed")
    return torch.Generator().manual_seed(generator)


def _inspect(images: Tensor, target: Target, where: str) -> tuple[str, int, int]:
    """Validate an item; return its kind (``"image"``, ``"stereo"`` or ``"views"``) and ``(H, W)``."""
    if not isinstance(images, Tensor) or images.dim() not in (3, 4) or not images.is_floating_point():
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"{where}: images must be float [C, H, W] or [V, C, H, W], got {got}")
    if not isinstance(target, dict):
        raise ValueError(f"{where}: target must be a dict, got {type(target).__name__}")
    height, width = images.shape[-2:]
    views = images.shape[0] if images.dim() == 4 else 1
    for key, value in target.items():
        shape = tuple(value.shape) if isinstance(value, Tensor) else None
        if key == KEYPOINT_KEY:
            if shape is None or len(shape) != 3 or shape[2] != 3 or not value.is_floating_point():
                got = f"{value.dtype} {shape}" if isinstance(value, Tensor) else type(value).__name__
                raise ValueError(f"{where}: target['keypoints'] must be float [N, K, 3], got {got}")
            if images.dim() != 3:
                raise ValueError(f"{where}: target['keypoints'] is for single images, not [V, C, H, W] items")
        elif key in _MAPS:
            if shape is None or len(shape) < 2 or shape[-2:] != (height, width):
                raise ValueError(
                    f"{where}: target[{key!r}] must end in (H, W) = ({height}, {width}), got {shape}"
                )
            if key == "flow" and (len(shape) < 3 or shape[-3] != 2):
                raise ValueError(f"{where}: target['flow'] must be [2, H, W], got {shape}")
        elif key == "boxes" and (shape is None or len(shape) != 2 or shape[1] != 4):
            raise ValueError(f"{where}: target['boxes'] must be [N, 4], got {shape}")
        elif key == "tracks" and (shape is None or len(shape) != 3 or shape[1:] != (views, 4)):
            raise ValueError(
                f"{where}: target['tracks'] must be [M, {views}, 4] for {views} frames, got {shape}"
            )
        elif key not in BOX_KEYS and key not in PASS_THROUGH and shape is not None:
            if len(shape) >= 2 and shape[-2:] == (height, width):
                raise ValueError(
                    f"{where}: unknown spatial target key {key!r} {shape} would be left inconsistent; "
                    f"known dense keys: {', '.join(LABEL_MAPS + VALUE_MAPS)}"
                )
    if images.dim() == 3:
        return "image", height, width
    if any(key in target for key in STEREO_KEYS):
        if views != 2:
            raise ValueError(f"{where}: a stereo pair must be [2, C, H, W], got {tuple(images.shape)}")
        return "stereo", height, width
    return "views", height, width


def _nearest_index(old: int, new: int, device: torch.device) -> Tensor:
    """int64 ``[new]``: the source index of each output pixel, sampled at its centre (exact integers)."""
    return (2 * torch.arange(new, device=device) + 1) * old // (2 * new)  # floor((i + 0.5) * old / new)


def _in_view(valid: Tensor, dx: Tensor, dy: Tensor | None) -> Tensor:
    """``valid`` where pixel ``p`` displaced by ``(dx, dy)[p]`` still lands inside the ``[H, W]`` image."""
    height, width = valid.shape[-2:]
    xs = torch.arange(width, device=valid.device, dtype=dx.dtype) + dx  # (H, W)
    inside = (xs >= -0.5) & (xs < width - 0.5)
    if dy is not None:
        ys = torch.arange(height, device=valid.device, dtype=dy.dtype)[:, None] + dy  # (H, W)
        inside = inside & (ys >= -0.5) & (ys < height - 0.5)
    return valid & inside


def _revalidate(target: Target, kind: str) -> None:
    """Re-apply the stay-in-the-image rule to ``valid`` / ``valid_right`` (in place on the dict)."""
    if kind == "stereo":
        if "valid" in target and "disparity" in target:
            target["valid"] = _in_view(target["valid"], -target["disparity"][0], None)
        if "valid_right" in target and "disparity_right" in target:
            target["valid_right"] = _in_view(target["valid_right"], target["disparity_right"][0], None)
    elif "valid" in target and "flow" in target:
        target["valid"] = _in_view(target["valid"], target["flow"][0], target["flow"][1])


def _tight_boxes(masks: Tensor) -> tuple[Tensor, Tensor]:
    """Tight xyxy ``float32[N, 4]`` of ``masks (bool[N, H, W])`` (empty: zeros), ``nonempty (bool[N])``."""
    num, height, width = masks.shape
    rows, cols = masks.any(dim=2), masks.any(dim=1)  # (N, H), (N, W)
    y1, x1 = rows.byte().argmax(dim=1), cols.byte().argmax(dim=1)  # first True
    y2 = height - rows.flip(1).byte().argmax(dim=1)  # one past the last True
    x2 = width - cols.flip(1).byte().argmax(dim=1)
    nonempty = rows.any(dim=1)
    boxes = torch.stack([x1, y1, x2, y2], dim=1).float() * nonempty[:, None]  # (N, 4)
    return boxes, nonempty


def _positive(boxes: Tensor) -> Tensor:
    """bool ``[N]``: the box has positive width and height (False for NaN)."""
    return (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])


def _crop_boxes(boxes: Tensor, top: int, left: int, height: int, width: int, masks: Tensor | None) -> Tensor:
    """Boxes ``[K, 4]`` moved into a crop and clipped to it; a box cut by the crop border is tightened
    to its object's remaining ``masks`` pixels (``bool[K, h, w]``, cropped) when given."""
    moved = boxes - boxes.new_tensor([left, top, left, top])
    clipped = torch.minimum(moved.clamp(min=0), moved.new_tensor([width, height, width, height]))
    if masks is not None:
        cut = (clipped != moved).any(dim=1)  # (K,)
        if bool(cut.any()):
            tight, nonempty = _tight_boxes(masks[cut])
            lo = torch.maximum(tight[:, :2], clipped[cut, :2])
            hi = torch.minimum(tight[:, 2:], clipped[cut, 2:])
            clipped[cut] = torch.cat([lo, hi], dim=1) * nonempty[:, None]  # empty: zero area
    return clipped


def _crop_tracks(target: Target, top: int, left: int, height: int, width: int) -> Target:
    """Clip tracks: boxes into the crop, NaN and not visible where nothing is left."""
    tracks = target["tracks"]  # (M, T, 4)
    visible = target.get("visible", ~torch.isnan(tracks).any(dim=-1))  # (M, T)
    if not isinstance(visible, Tensor) or visible.shape != tracks.shape[:2]:
        raise ValueError(f"RandomCrop: target['visible'] must be bool {tuple(tracks.shape[:2])} like tracks")
    ids, inst = target.get("track_ids"), target.get("instances")  # (M,), (T, h, w) already cropped
    new_tracks = torch.full_like(tracks, float("nan"))
    new_visible = torch.zeros_like(visible)
    for t in range(tracks.shape[1]):
        rows = visible[:, t].nonzero().flatten()  # (K,)
        masks = None
        if ids is not None and inst is not None:
            masks = inst[t][None] == ids[rows][:, None, None]  # (K, h, w)
        boxes = _crop_boxes(tracks[rows, t], top, left, height, width, masks)
        alive = _positive(boxes)
        new_tracks[rows[alive], t] = boxes[alive]
        new_visible[rows[alive], t] = True
    out = dict(target, tracks=new_tracks)
    if "visible" in target:
        out["visible"] = new_visible
    return out


def _crop_objects(target: Target, old: Target, top: int, left: int, height: int, width: int) -> Target:
    """Single image (or view 0): move boxes into the crop, drop objects left with zero area."""
    boxes = old["boxes"]
    masks = target.get("masks")  # (N, h, w), already cropped
    new_boxes = _crop_boxes(boxes, top, left, height, width, None if masks is None else masks.bool())
    out = dict(target, boxes=new_boxes)
    if "area" in old:  # scale by the fraction of the object kept (pixels if masks, else box area)
        if masks is not None and "masks" in old:
            before, after = old["masks"].flatten(1).sum(1), masks.flatten(1).sum(1)  # (N,), (N,)
        else:
            before, after = (
                (boxes[:, 2:] - boxes[:, :2]).prod(1),
                (new_boxes[:, 2:] - new_boxes[:, :2]).prod(1),
            )
        area, before, after = old["area"].double(), before.double(), after.double()
        kept = torch.where(before > 0, area * after / before.clamp(min=1e-12), area)  # exact for pixel areas
        out["area"] = kept.to(old["area"].dtype)
    keep = _positive(new_boxes)
    num = boxes.shape[0]
    for key in OBJECT_KEYS:
        if key in out:
            if not isinstance(out[key], Tensor) or out[key].shape[:1] != (num,):
                raise ValueError(
                    f"RandomCrop: target[{key!r}] must have {num} rows like boxes, got {out[key]!r}"
                )
            out[key] = out[key][keep]
    return out


# ----------------------------------------------------------------------------- functional


def hflip(images: Tensor, target: Target, keypoint_flip: Tensor | None = None) -> tuple[Tensor, Target]:
    """Mirror an item left-right; a stereo pair also swaps its views (see the module docstring).

    ``keypoint_flip`` (int ``[K]``, or ``[L, K]`` indexed by each object's label) renames the
    keypoints: point ``j`` of a flipped object is point ``keypoint_flip[j]`` of the original.
    It is required when the target has ``keypoints``.

    A stereo flip makes ``new left = flip(old right)``, ``new right = flip(old left)``, and swaps
    ``disparity`` / ``disparity_right``, ``valid`` / ``valid_right``, ``depth`` / ``depth_right``
    (``depth`` is recomputed as ``focal * baseline / disparity`` when ``depth_right`` is absent;
    ``inf`` where the disparity is not positive). Raises ``ValueError`` when a right-view key is
    missing or the target has left-view-only keys (boxes, masks, ...).
    """
    kind, _, width = _inspect(images, target, "HorizontalFlip")
    out: Target = {}
    if kind == "stereo":
        for a, b in (("disparity", "disparity_right"), ("valid", "valid_right"), ("depth", "depth_right")):
            if a in target and b in target:
                out[a], out[b] = target[b].flip(-1), target[a].flip(-1)
            elif b in target or (a in target and a != "depth"):  # a left depth alone is recomputed
                raise ValueError(
                    f"HorizontalFlip: flipping a stereo pair swaps its views and needs both {a!r} and {b!r}; "
                    f"got only {a if a in target else b!r}"
                )
        if "depth" in target and "depth_right" not in target:
            if not all(k in target for k in ("focal", "baseline", "disparity_right")):
                raise ValueError(
                    "HorizontalFlip: a stereo flip recomputes depth from disparity_right, focal, baseline"
                )
            disp = out["disparity"].double()
            scale = float(target["focal"]) * float(target["baseline"])
            depth = torch.where(disp > 0, scale / disp.clamp(min=1e-12), float("inf"))
            out["depth"] = depth.to(target["depth"].dtype)
        for key, value in target.items():
            if key in out:
                continue
            if key in _MAPS or key in BOX_KEYS or key == KEYPOINT_KEY:
                raise ValueError(
                    f"HorizontalFlip: target[{key!r}] is of the left view only; a stereo flip swaps views"
                )
            out[key] = value
        return torch.stack([images[1].flip(-1), images[0].flip(-1)]), out  # (2, C, H, W)
    for key, value in target.items():
        if key in _MAPS:
            value = value.flip(-1)
            if key == "flow":
                value = torch.cat([-value[..., :1, :, :], value[..., 1:, :, :]], dim=-3)  # negate dx
        elif key in BOX_KEYS:
            value = torch.stack(
                [width - value[..., 2], value[..., 1], width - value[..., 0], value[..., 3]], -1
            )
        elif key == KEYPOINT_KEY:
            if keypoint_flip is None:
                raise ValueError(
                    "HorizontalFlip: target['keypoints'] needs keypoint_flip, the left/right permutation "
                    "of the keypoints (e.g. the dataset's keypoint_flip)"
                )
            value = flip_keypoints(value, target.get("labels"), keypoint_flip, width)
        out[key] = value
    return images.flip(-1), out


def crop(
    images: Tensor, target: Target, top: int, left: int, height: int, width: int
) -> tuple[Tensor, Target]:
    """Cut the window ``[top, top + height) x [left, left + width)`` out of every view and target key.

    Boxes and tracks move and are clipped to the window (a box cut by the border is tightened to its
    mask / instance pixels when those are given); an object left with zero area is dropped (single
    image) or becomes NaN and not visible (clip). Flow and disparity values are unchanged.
    """
    kind, full_h, full_w = _inspect(images, target, "RandomCrop")
    inside = 0 <= top <= full_h - height and 0 <= left <= full_w - width
    if height < 1 or width < 1 or not inside:
        raise ValueError(
            f"RandomCrop: window at (top={top}, left={left}) of {height} x {width} is not inside the "
            f"{full_h} x {full_w} image"
        )
    out: Target = {}
    for key, value in target.items():
        is_map = key in _MAPS
        out[key] = value[..., top : top + height, left : left + width] if is_map else value
    if "tracks" in out:
        out = _crop_tracks(out, top, left, height, width)
    if KEYPOINT_KEY in out:  # moved; points outside the window become unlabelled
        out[KEYPOINT_KEY] = crop_keypoints(out[KEYPOINT_KEY], top, left, height, width)
    if "boxes" in out:
        out = _crop_objects(out, target, top, left, height, width)
    _revalidate(out, kind)
    return images[..., top : top + height, left : left + width], out


def resize(
    images: Tensor, target: Target, size: int | Sequence[int], antialias: bool = True
) -> tuple[Tensor, Target]:
    """Resample an item to ``size = (h, w)`` (an int means ``size x size``, not torchvision's
    shorter-side rule): images bilinear, dense targets nearest; geometry scaled as the module says."""
    kind, height, width = _inspect(images, target, "Resize")
    new_h, new_w = _size_pair(size, "Resize")
    sx, sy = new_w / width, new_h / height
    flat = images if images.dim() == 4 else images[None]  # (V, C, H, W)
    shrink = antialias and (new_h < height or new_w < width)
    resized = F.interpolate(flat, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=shrink)
    resized = resized if images.dim() == 4 else resized[0]  # (V, C, h, w) or (C, h, w)
    rows = _nearest_index(height, new_h, images.device)[:, None]  # (h, 1)
    cols = _nearest_index(width, new_w, images.device)[None, :]  # (1, w)
    out: Target = {}
    for key, value in target.items():
        if key in _MAPS:
            value = value[..., rows, cols]  # (..., H, W) -> (..., h, w)
            if key == "flow":
                value = value * value.new_tensor([sx, sy])[:, None, None]  # (2, 1, 1): (dx, dy) scale
            elif key in ("disparity", "disparity_right"):
                value = value * sx
        elif key in BOX_KEYS:
            value = value * value.new_tensor([sx, sy, sx, sy])
        elif key in ("focal", "doffs"):
            value = value * sx
        elif key == "area":
            value = value * (sx * sy)
        elif key == KEYPOINT_KEY:
            value = scale_keypoints(value, sx, sy)
        out[key] = value
    _revalidate(out, kind)
    return resized, out


# ----------------------------------------------------------------------------- transforms


class Compose:
    """Apply joint transforms in order."""

    def __init__(self, transforms: Sequence[JointTransform]) -> None:
        for i, t in enumerate(transforms):
            if not callable(t):
                raise ValueError(f"Compose: transforms[{i}] is not callable: {t!r}")
        self.transforms = list(transforms)

    def __call__(self, images: Tensor, target: Target) -> tuple[Tensor, Target]:
        for t in self.transforms:
            images, target = t(images, target)
        return images, target

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class Resize:
    """Resample to ``size`` ``(h, w)`` (an int is square); see :func:`resize`."""

    def __init__(self, size: int | Sequence[int], antialias: bool = True) -> None:
        self.size = _size_pair(size, "Resize")
        self.antialias = bool(antialias)

    def __call__(self, images: Tensor, target: Target) -> tuple[Tensor, Target]:
        return resize(images, target, self.size, self.antialias)

    def __repr__(self) -> str:
        return f"Resize(size={self.size})"


class HorizontalFlip:
    """Mirror with probability ``p`` (a stereo pair swaps views); see :func:`hflip`.

    Args:
        p: flip probability in [0, 1].
        generator: a ``torch.Generator``, or an int seed for a new one (None: seed 0).
        keypoint_flip: the keypoints' left/right permutation, int ``[K]`` or per label ``[L, K]``
            (a keypoint dataset's ``keypoint_flip``); needed when targets have ``keypoints``.
    """

    def __init__(
        self,
        p: float = 0.5,
        generator: torch.Generator | int | None = None,
        keypoint_flip: Tensor | Sequence[Any] | None = None,
    ) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"HorizontalFlip: p must be in [0, 1], got {p}")
        self.p = float(p)
        self.generator = _generator(generator, "HorizontalFlip")
        self.keypoint_flip = (
            None if keypoint_flip is None else torch.as_tensor(keypoint_flip, dtype=torch.int64)
        )

    def __call__(self, images: Tensor, target: Target) -> tuple[Tensor, Target]:
        draw = float(torch.rand((), generator=self.generator))  # drawn every call: a steady stream
        if draw < self.p:
            return hflip(images, target, self.keypoint_flip)
        _inspect(images, target, "HorizontalFlip")  # the same validation whether or not it flips
        return images, target

    def __repr__(self) -> str:
        return f"HorizontalFlip(p={self.p})"


class RandomCrop:
    """A uniformly placed ``size`` ``(h, w)`` window (an int is square); see :func:`crop`.

    Args:
        size: crop size; larger than the image raises ``ValueError``.
        generator: a ``torch.Generator``, or an int seed for a new one (None: seed 0).
    """

    def __init__(self, size: int | Sequence[int], generator: torch.Generator | int | None = None) -> None:
        self.size = _size_pair(size, "RandomCrop")
        self.generator = _generator(generator, "RandomCrop")

    def __call__(self, images: Tensor, target: Target) -> tuple[Tensor, Target]:
        _, height, width = _inspect(images, target, "RandomCrop")
        new_h, new_w = self.size
        if new_h > height or new_w > width:
            raise ValueError(
                f"RandomCrop: crop {new_h} x {new_w} is larger than the {height} x {width} image"
            )
        top = int(torch.randint(height - new_h + 1, (), generator=self.generator))
        left = int(torch.randint(width - new_w + 1, (), generator=self.generator))
        return crop(images, target, top, left, new_h, new_w)

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size})"
