"""Training augmentation: random flip, zoom / translation and colour jitter on ``(images, target)``.

Shape shorthand:
    V: views (2 for a pair, T for a clip); C: channels (3 for colour jitter); H, W: the item's
    size (kept by every augmentation); h, w: the zoomed size; N: objects; K: keypoints.

Convention:
    * Items and targets are :mod:`.transforms`'s (single images, flow pairs, stereo pairs, clips;
      boxes, masks, keypoints, label maps, flow / disparity / depth maps, tracks). The geometry
      is :mod:`.transforms`'s own functions (:func:`~.transforms.hflip`, :func:`~.transforms.resize`,
      :func:`~.transforms.crop`); this module adds only the padding a zoom-out needs.
    * **Flip** (probability ``hflip``): :func:`~.transforms.hflip`; keypoints are renamed by the
      dataset's ``keypoint_flip``; a stereo pair swaps its views.
    * **Zoom and translation** (:func:`zoom_translate`): the content is scaled by ``s`` in
      ``[1 - scale, 1 + scale]`` about the image centre and moved by ``(tx W, ty H)``,
      ``tx, ty`` in ``[-translate, translate]``; the output keeps the size ``H x W``. Zoom-in crops,
      zoom-out pads: images with ``fill``, masks / instance maps / ``valid`` maps with 0, label maps
      (``semantic``, ``parts``) with ``ignore_index`` (255), flow / disparity / depth with 0 (their
      ``valid`` map is 0 there). Boxes are clipped to the image; an object keeping less than
      ``min_visible`` of its box area is dropped with its masks, keypoints, area, crowd flag and
      track id. Flow with no ``valid`` map is refused (zero flow in the padding would be a lie).
    * **Colour** (images only, every view alike): saturation and value (exposure) multiplied by
      gains in ``[1 / (1 + hsv), 1 + hsv]`` (log-uniform: the paper's "up to 1.5x" is ``hsv=0.5``),
      hue shifted by up to ``hue`` of the colour circle; clipped to [0, 1].
    * **Determinism**: the draws for item ``i`` of epoch ``e`` come from a generator seeded by
      ``(seed, e, i)`` alone (:func:`item_generator`), never the global RNG; so a resumed run, a
      DataLoader worker and an uninterrupted run draw the same numbers for the same item.
      Every item draws the same 7 numbers whether or not an augmentation is on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .transforms import (
    BOX_KEYS,
    KEYPOINT_KEY,
    LABEL_MAPS,
    OBJECT_KEYS,
    VALUE_MAPS,
    Target,
    crop,
    hflip,
    resize,
)

IGNORE_MAPS = ("semantic", "parts")  # label maps whose padding is the ignore value


@dataclass(frozen=True)
class AugmentSpec:
    """What to draw; every field 0 means "off". See the module docstring."""

    hflip: float = 0.0  # probability of a horizontal flip
    scale: float = 0.0  # zoom factor in [1 - scale, 1 + scale]
    translate: float = 0.0  # shift of up to this fraction of the width / height
    hsv: float = 0.0  # saturation and value gains in [1 / (1 + hsv), 1 + hsv]
    hue: float = 0.0  # hue shift of up to this fraction of the colour circle
    min_visible: float = 0.25  # an object keeping less of its box area is dropped

    @property
    def active(self) -> bool:
        return any(getattr(self, f) > 0 for f in ("hflip", "scale", "translate", "hsv", "hue"))


# field -> (low, high, value when named without "=")
BOUNDS: dict[str, tuple[float, float, float]] = {
    "hflip": (0.0, 1.0, 0.5),
    "scale": (0.0, 0.9, 0.5),
    "translate": (0.0, 0.5, 0.1),
    "hsv": (0.0, 4.0, 0.5),
    "hue": (0.0, 0.5, 0.015),
    "min_visible": (0.0, 1.0, 0.25),
}
#: Named settings: ``yolo`` is ultralytics' default training augmentation less mosaic / mixup
#: (flip 0.5, scale 0.5, translate 0.1; its HSV gains s 0.7 / v 0.4 become one log-uniform
#: gain up to 1.5x); ``yolo_v1`` the paper's (scale and translation up to 20 %, exposure and
#: saturation up to 1.5x in HSV) plus darknet's flip.
PRESETS: dict[str, AugmentSpec] = {
    "yolo": AugmentSpec(hflip=0.5, scale=0.5, translate=0.1, hsv=0.5, hue=0.015),
    "yolo_v1": AugmentSpec(hflip=0.5, scale=0.2, translate=0.2, hsv=0.5),
}


def parse_augment(spec: str, where: str = "--augment") -> AugmentSpec | None:
    """``"hflip,scale=0.2,translate=0.2,hsv=0.5"`` (items left to right; a preset name such as
    ``yolo`` sets its fields, later items change them) -> an :class:`AugmentSpec`, or None for
    ``"none"`` / no active field. A bad item raises one ``ValueError`` naming it."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"{where}: give a comma-separated spec such as 'hflip,scale=0.2' or a preset")
    out = AugmentSpec()
    for item in (part.strip() for part in spec.split(",")):
        name, eq, text = item.partition("=")
        name = name.strip()
        if not eq and name in PRESETS:
            out = replace(PRESETS[name], min_visible=out.min_visible)
            continue
        if not eq and name == "none":
            out = replace(AugmentSpec(), min_visible=out.min_visible)
            continue
        if name not in BOUNDS:
            known = f"fields: {', '.join(BOUNDS)}; presets: {', '.join(PRESETS)}, none"
            raise ValueError(f"{where} {spec}: unknown item {item!r} ({known})")
        low, high, default = BOUNDS[name]
        try:
            value = float(text) if eq else default
        except ValueError:
            raise ValueError(
                f"{where} {spec}: {name} must be a number in [{low}, {high}], got {text!r}"
            ) from None
        if not (math.isfinite(value) and low <= value <= high):
            raise ValueError(f"{where} {spec}: {name} must be in [{low}, {high}], got {text}")
        out = replace(out, **{name: value})
    return out if out.active else None


def format_augment(spec: AugmentSpec | None) -> str | None:
    """The canonical text of ``spec`` (what a config records): its non-zero fields in a fixed
    order, ``min_visible`` only when not the default; None for no augmentation."""
    if spec is None or not spec.active:
        return None
    parts = [f"{f.name}={getattr(spec, f.name):g}" for f in fields(spec) if f.name != "min_visible"]
    parts = [p for p in parts if float(p.partition("=")[2]) != 0.0]
    if spec.min_visible != AugmentSpec.min_visible:
        parts.append(f"min_visible={spec.min_visible:g}")
    return ",".join(parts)


def canonical_augment(spec: str | None, where: str = "--augment") -> str | None:
    """``parse_augment`` then ``format_augment`` (None stays None)."""
    return None if spec is None else format_augment(parse_augment(spec, where))


# ----------------------------------------------------------------------------- functional


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A generator whose stream depends on ``(seed, epoch, index)`` only (numpy's SeedSequence
    mixes the three, so neighbouring items and epochs get unrelated streams)."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(index)]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def pad(
    images: Tensor, target: Target, top: int, left: int, height: int, width: int,
    fill: float = 0.5, ignore_index: int = 255,
) -> tuple[Tensor, Target]:  # fmt: skip
    """Place an ``[..., H, W]`` item at ``(top, left)`` of a ``height x width`` canvas (the module
    docstring says what fills each key). Boxes, tracks and labelled keypoints move by
    ``(left, top)``; flow and disparity values are unchanged (every view moves alike)."""
    H, W = images.shape[-2:]
    if top < 0 or left < 0 or top + H > height or left + W > width:
        raise ValueError(
            f"pad: an {H} x {W} item at ({top}, {left}) does not fit a {height} x {width} canvas"
        )
    if "flow" in target and "valid" not in target:
        raise ValueError(
            "augment: zooming out or translating flow needs target['valid'] (the padding has no flow)"
        )
    rows, cols = slice(top, top + H), slice(left, left + W)

    def canvas(value: Tensor, filler: float) -> Tensor:
        out = value.new_full((*value.shape[:-2], height, width), filler)  # (..., height, width)
        out[..., rows, cols] = value
        return out

    out: Target = {}
    for key, value in target.items():
        if key in LABEL_MAPS or key in VALUE_MAPS:
            value = canvas(value, ignore_index if key in IGNORE_MAPS else 0)
        elif key in BOX_KEYS:
            value = value + value.new_tensor([left, top, left, top])
        elif key == KEYPOINT_KEY:
            shift = value.new_tensor([left, top, 0.0])
            value = value + shift * (value[..., 2:] > 0)  # unlabelled points stay (0, 0, 0)
        out[key] = value
    return canvas(images, fill), out


def _keep_objects(target: Target, keep: Tensor) -> Target:
    """The target with only the objects ``keep`` (bool ``[N]``) in every per-object key."""
    num = keep.shape[0]
    out = dict(target)
    for key in OBJECT_KEYS:
        if key in out:
            if not isinstance(out[key], Tensor) or out[key].shape[:1] != (num,):
                raise ValueError(
                    f"augment: target[{key!r}] must have {num} rows like boxes, got {out[key]!r}"
                )
            out[key] = out[key][keep]
    return out


def zoom_translate(
    images: Tensor, target: Target, scale: float, tx: float, ty: float,
    fill: float = 0.5, min_visible: float = 0.25, ignore_index: int = 255,
) -> tuple[Tensor, Target]:  # fmt: skip
    """Scale the content by ``scale`` about the centre, move it by ``(tx W, ty H)`` pixels, keep
    the size ``H x W`` (crop what leaves, pad what is uncovered); see the module docstring.

    Args:
        scale: zoom factor (> 0; 1 keeps the size).
        tx, ty: shift as fractions of the width / height (positive: right / down).
    """
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"zoom_translate: scale must be a positive number, got {scale}")
    H, W = images.shape[-2:]
    h, w = max(1, round(H * scale)), max(1, round(W * scale))
    if (h, w) != (H, W):
        images, target = resize(images, target, (h, w))
    oy, ox = round((H - h) / 2 + ty * H), round((W - w) / 2 + tx * W)  # zoomed image's corner
    top, left = max(0, -oy), max(0, -ox)  # the window of the zoomed image that stays in view
    bottom, right = min(h, H - oy), min(w, W - ox)
    if bottom <= top or right <= left:
        raise ValueError(
            f"zoom_translate: scale {scale}, shift ({tx}, {ty}) moves the whole image out of view"
        )
    if "boxes" in target and target["boxes"].shape[0]:
        boxes = target["boxes"]  # (N, 4) in the zoomed frame
        lo = torch.maximum(boxes[:, :2], boxes.new_tensor([left, top]))
        hi = torch.minimum(boxes[:, 2:], boxes.new_tensor([right, bottom]))
        kept = (hi - lo).clamp(min=0).prod(1)  # (N,) area left in view
        area = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0).prod(1)
        visible = torch.where(area > 0, kept / area.clamp(min=1e-12), torch.ones_like(area))
        target = _keep_objects(target, visible >= min_visible)
    if (top, left, bottom, right) != (0, 0, h, w):
        images, target = crop(images, target, top, left, bottom - top, right - left)
    if images.shape[-2:] != (H, W):
        images, target = pad(images, target, max(0, oy), max(0, ox), H, W, fill, ignore_index)
    return images, target


def rgb_to_hsv(rgb: Tensor) -> Tensor:
    """``[..., 3, H, W]`` RGB in [0, 1] -> HSV in [0, 1] (hue as a fraction of the circle)."""
    r, g, b = rgb.unbind(-3)
    value, _ = rgb.max(-3)
    delta = value - rgb.min(-3).values  # (..., H, W)
    sat = torch.where(value > 0, delta / value.clamp(min=1e-12), torch.zeros_like(value))
    safe = delta.clamp(min=1e-12)
    hue = torch.where(
        value == r, (g - b) / safe, torch.where(value == g, 2 + (b - r) / safe, 4 + (r - g) / safe)
    )
    hue = torch.where(delta > 0, (hue / 6) % 1.0, torch.zeros_like(hue))
    return torch.stack([hue, sat, value], -3)


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    """``[..., 3, H, W]`` HSV in [0, 1] -> RGB (the inverse of :func:`rgb_to_hsv`)."""
    hue, sat, value = hsv.unbind(-3)
    k = (
        torch.tensor([5.0, 3.0, 1.0], dtype=hsv.dtype, device=hsv.device)[:, None, None]
        + hue[..., None, :, :] * 6
    ) % 6
    return value[..., None, :, :] * (1 - sat[..., None, :, :] * (torch.minimum(k, 4 - k).clamp(0, 1)))


def color_jitter(images: Tensor, hue_shift: float, sat_gain: float, value_gain: float) -> Tensor:
    """Images ``[..., 3, H, W]`` with hue shifted by ``hue_shift`` (fraction of the circle) and
    saturation / value multiplied by the gains, clipped to [0, 1]."""
    if images.shape[-3] != 3:
        raise ValueError(f"augment: colour jitter needs 3-channel images, got {tuple(images.shape)}")
    hsv = rgb_to_hsv(images.clamp(0, 1))
    hue, sat, value = hsv.unbind(-3)
    hsv = torch.stack(
        [(hue + hue_shift) % 1.0, (sat * sat_gain).clamp(0, 1), (value * value_gain).clamp(0, 1)], -3
    )
    return hsv_to_rgb(hsv).clamp(0, 1)


# ----------------------------------------------------------------------------- transforms


class Augment:
    """One training augmentation; ``augment(images, target, generator)`` draws its 7 numbers
    from ``generator`` (``[0, 1)`` each: flip, zoom, shift x, shift y, hue, saturation, value).

    Args:
        spec: what to apply.
        keypoint_flip: the keypoints' left/right permutation (``[K]`` or ``[L, K]``), needed to
            flip targets with keypoints (a keypoint dataset's ``keypoint_flip``).
        fill: the image value of padded pixels. ignore_index: the label maps' padding.
    """

    DRAWS = 7

    def __init__(
        self, spec: AugmentSpec, keypoint_flip: Any = None, fill: float = 0.5, ignore_index: int = 255
    ) -> None:
        self.spec, self.fill, self.ignore_index = spec, float(fill), int(ignore_index)
        self.keypoint_flip = (
            None if keypoint_flip is None else torch.as_tensor(keypoint_flip, dtype=torch.int64)
        )

    def __call__(self, images: Tensor, target: Target, generator: torch.Generator) -> tuple[Tensor, Target]:
        s = self.spec
        u = torch.rand(self.DRAWS, generator=generator, dtype=torch.float64).tolist()
        if u[0] < s.hflip:
            images, target = hflip(images, target, self.keypoint_flip)
        if s.scale > 0 or s.translate > 0:
            zoom = 1.0 + s.scale * (2 * u[1] - 1)
            tx, ty = s.translate * (2 * u[2] - 1), s.translate * (2 * u[3] - 1)
            images, target = zoom_translate(
                images, target, zoom, tx, ty, self.fill, s.min_visible, self.ignore_index
            )
        if s.hsv > 0 or s.hue > 0:
            span = math.log1p(s.hsv)
            sat, value = math.exp(span * (2 * u[5] - 1)), math.exp(span * (2 * u[6] - 1))
            images = color_jitter(images, s.hue * (2 * u[4] - 1), sat, value)
        return images, target

    def check(self, images: Tensor, target: Target) -> None:
        """Apply every enabled part at its extreme to one item: a target kind it cannot augment
        raises its ``ValueError`` now, not in the middle of a run."""
        s = self.spec
        if s.hflip > 0:
            images, target = hflip(images, target, self.keypoint_flip)
        if s.scale > 0 or s.translate > 0:
            for zoom in (1 - s.scale, 1 + s.scale):
                zoom_translate(
                    images,
                    target,
                    zoom,
                    s.translate,
                    s.translate,
                    self.fill,
                    s.min_visible,
                    self.ignore_index,
                )
        if s.hsv > 0 or s.hue > 0:
            color_jitter(images, s.hue, 1 + s.hsv, 1 + s.hsv)

    def __repr__(self) -> str:
        return f"Augment({format_augment(self.spec)})"


class AugmentedDataset(Dataset):
    """``dataset`` with item ``i`` augmented by draws from ``item_generator(seed, epoch, i)``.

    ``set_epoch(e)`` before an epoch's DataLoader is made (workers copy the dataset when it
    starts). Other attributes (categories, keypoint_flip...) are the dataset's.
    """

    def __init__(self, dataset: Dataset, augment: Augment, seed: int) -> None:
        self.dataset, self.augment, self.seed, self.epoch = dataset, augment, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        images, target = self.dataset[index]
        return self.augment(images, target, item_generator(self.seed, self.epoch, index))

    def __getattr__(self, name: str) -> Any:
        if name in ("dataset", "augment", "seed", "epoch"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


def augmented(
    dataset: Dataset, spec: str | AugmentSpec | None, seed: int, ignore_index: int = 255
) -> Dataset:
    """``dataset`` wrapped for training augmentation (unchanged when ``spec`` is None / off);
    its first item is tried at every extreme first (``ValueError`` if it cannot be augmented)."""
    parsed = parse_augment(spec) if isinstance(spec, str) else spec
    if parsed is None or not parsed.active:
        return dataset
    flip = getattr(dataset, "keypoint_flip", None)
    augment = Augment(parsed, flip, ignore_index=ignore_index)
    if len(dataset):  # type: ignore[arg-type]
        images, target = dataset[0]
        if not isinstance(images, Tensor) or not isinstance(target, dict):
            raise ValueError(
                "--augment: the data's items are not (images, target) pairs; only image data augments"
            )
        try:
            augment.check(images, target)
        except ValueError as err:
            raise ValueError(
                f"--augment {format_augment(parsed)}: the data cannot be augmented: {err}"
            ) from None
    return AugmentedDataset(dataset, augment, seed)
