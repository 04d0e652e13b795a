"""Draw keypoints: a dot per labelled point, optional skeleton lines between points of one object.

Shape shorthand: N objects, K keypoints per object.

Convention: as :mod:`structpred.viz.draw`: images ``[3, H, W]`` float in [0, 1] or uint8 in,
a new ``uint8 [3, H, W]`` out. Keypoints are (x, y) in continuous pixel coordinates (pixel
``(i, j)`` covers ``[j, j+1) x [i, i+1)``, so the point (10.5, 4.5) is the centre of pixel
row 4, column 10). A third column is the visibility (targets) or any score-like value
(predictions: torchvision's 1): points whose third value is <= 0 are not drawn, nor the
lines that touch them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from PIL import ImageDraw
from torch import Tensor

from .colors import ColorLike, distinct_color
from .draw import _from_pil, _per_item_colors, _shape, _to_pil, to_uint8_image

Pairs = Sequence[tuple[int, int]]


def _check_keypoints(keypoints: Tensor, labels: Tensor | None) -> Tensor:
    if not isinstance(keypoints, Tensor) or keypoints.dim() != 3 or keypoints.shape[2] not in (2, 3):
        raise ValueError(f"keypoints must be a Tensor[N, K, 2 or 3], got {_shape(keypoints)}")
    kp = keypoints.detach().cpu().float()
    if not bool(torch.isfinite(kp).all()):
        raise ValueError("keypoints must be finite")
    if labels is not None and (not isinstance(labels, Tensor) or labels.shape != (kp.shape[0],)):
        raise ValueError(f"labels must be a Tensor[{kp.shape[0]}] (one per object), got {_shape(labels)}")
    return kp


def _pairs_of(
    skeleton: Pairs | Mapping[int, Pairs] | None, label: int | None, K: int
) -> list[tuple[int, int]]:
    if skeleton is None:
        return []
    if isinstance(skeleton, Mapping):
        if label is None:
            raise ValueError("a per-label skeleton (a mapping) needs labels")
        pairs = list(skeleton.get(label, []))
    else:
        pairs = list(skeleton)
    for a, b in pairs:
        if not (0 <= a < K and 0 <= b < K):
            raise ValueError(f"skeleton pair {(a, b)} is outside the keypoints 0..{K - 1}")
    return pairs


def draw_keypoints(
    image: Tensor,
    keypoints: Tensor,
    labels: Tensor | None = None,
    skeleton: Pairs | Mapping[int, Pairs] | None = None,
    colors: ColorLike | Sequence[ColorLike] | None = None,
    radius: int = 2,
    width: int = 1,
) -> Tensor:
    """Dots at the labelled keypoints and skeleton lines, one colour per object.

    Args:
        image: ``[3, H, W]`` float in [0, 1] or uint8.
        keypoints: ``[N, K, 2]`` (x, y) or ``[N, K, 3]`` (x, y, visibility / score).
        labels: int ``[N]``: each object's label (the colour's key, and the skeleton's when
            ``skeleton`` is a mapping).
        skeleton: 0-based keypoint index pairs to join, the same for every object, or a
            mapping ``label -> pairs`` (classes with different points).
        colors: one colour or one per object (default: a distinct colour per label, or per object).
        radius: dot radius in pixels (0: one pixel).
        width: line width in pixels.

    Returns:
        uint8 ``[3, H, W]``.
    """
    out = to_uint8_image(image)
    kp = _check_keypoints(keypoints, labels)
    N, K, C = kp.shape
    if radius < 0 or width < 1:
        raise ValueError(f"radius must be >= 0 and width >= 1, got radius={radius}, width={width}")
    per = _per_item_colors(colors, N, "colors")
    label_list = labels.tolist() if labels is not None else [None] * N
    pil = _to_pil(out)
    draw = ImageDraw.Draw(pil)
    for n in range(N):
        label = label_list[n]
        color = per[n] if per is not None else distinct_color(int(label) if label is not None else n + 1)
        xy = kp[n, :, :2].tolist()
        shown = (kp[n, :, 2] > 0).tolist() if C == 3 else [True] * K
        for a, b in _pairs_of(skeleton, label, K):
            if shown[a] and shown[b]:
                (x0, y0), (x1, y1) = xy[a], xy[b]
                draw.line(
                    [(x0 - 0.5, y0 - 0.5), (x1 - 0.5, y1 - 0.5)], fill=color, width=width
                )  # -> PIL's centres
        for (x, y), visible in zip(xy, shown, strict=True):
            if visible:
                cx, cy = x - 0.5, y - 0.5  # PIL puts pixel j's centre at j, ours at j + 0.5
                if radius == 0:
                    draw.point((round(cx), round(cy)), fill=color)
                else:
                    draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=color)
    return _from_pil(pil)
