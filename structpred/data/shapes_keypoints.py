"""Keypoints of the shapes world: named corners, tips, arm ends and centres (``--data shapes_keypoints``).

Every shape has well-defined points, named per shape:

    circle   : centre                          ring  : centre
    square   : 4 corners                       cross : 4 arm ends (mid-point of each arm's end)
    triangle : 3 vertices                      star  : 5 tips

Shapes are rotated uniformly, so "corner 0 of the object's frame" cannot be told from the
image. A point is named by where it is in the *image* instead: slot 0 is the topmost point
(smallest y), the others follow clockwise on screen (square: top, right, bottom, left corner;
star: top, upper-right, lower-right, lower-left, upper-left tip). A circle or ring has its
centre in slot 0. One K for the dataset, the largest (5, the star); a class's unused slots
have visibility 0.

Under a horizontal flip the topmost point stays topmost and clockwise becomes anticlockwise,
so slot ``j`` of a class with ``n`` points becomes slot ``(n - j) % n`` (right <-> left, as
COCO's flip_pairs swap left and right eyes): :attr:`ShapesKeypoints.keypoint_flip`, one
permutation per label, is what :class:`~structpred.data.transforms.HorizontalFlip` takes. A
resize keeps the names true (a positive scaling keeps the topmost point and the clockwise order).

Shape shorthand: N annotated objects, K = 5 keypoint slots, L = 7 labels (0 = background).

Convention:
    * Keypoints are float32 ``[N, K, 3]`` (x, y, visibility) in continuous pixel coordinates
      (pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``), the exact geometric points, not pixels.
    * Visibility (COCO's): 2 = visible; 1 = labelled but hidden: the pixel holding the point
      belongs to a *nearer* object (an occluded corner still trains the model, as in COCO and
      torchvision); 0 = unlabelled: an unused slot, or the point lies outside the image
      (COCO's annotators cannot click outside the image), written (0, 0, 0).
    * OKS sigmas: 0.05 for every slot (see docs/keypoints.md: the points are exact, so their
      spread is the rasterisation's, about half a pixel on objects of 10 px across).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .shapes import ShapesWorld, Target
from .shapes_geometry import CLASS_NAMES
from .shapes_render import Render, Scene, ShapeObject

Array = np.ndarray

NUM_KEYPOINTS = 5
KEYPOINT_SIGMA = 0.05
_CENTRE = ((0.0, 0.0),)
_H = float(1.0 / np.sqrt(2.0))  # a square's corner at circumradius 1


def _polar(count: int, start: float, radius: float = 1.0) -> tuple[tuple[float, float], ...]:
    angles = start + 2.0 * np.pi * np.arange(count) / count
    return tuple((float(radius * np.cos(a)), float(radius * np.sin(a))) for a in angles)


# Points of each class in its normalised frame (u, v), see shapes_geometry (unordered: the
# names come from the image, see the module docstring).
LOCAL_POINTS: dict[str, tuple[tuple[float, float], ...]] = {
    "circle": _CENTRE,
    "square": ((_H, _H), (-_H, _H), (-_H, -_H), (_H, -_H)),
    "triangle": _polar(3, -np.pi / 2),
    "star": _polar(5, -np.pi / 2),
    "ring": _CENTRE,
    "cross": ((0.95, 0.0), (0.0, 0.95), (-0.95, 0.0), (0.0, -0.95)),
}
CLASS_KEYPOINT_NAMES: dict[str, list[str]] = {
    "circle": ["centre"],
    "square": ["top corner", "right corner", "bottom corner", "left corner"],
    "triangle": ["top vertex", "right vertex", "left vertex"],
    "star": ["top tip", "upper-right tip", "lower-right tip", "lower-left tip", "upper-left tip"],
    "ring": ["centre"],
    "cross": ["top arm end", "right arm end", "bottom arm end", "left arm end"],
}
# The dataset's K slot names (one K for every class): slot 0 is the top point or the centre.
KEYPOINT_NAMES: list[str] = ["top_or_centre", "clockwise_2", "clockwise_3", "clockwise_4", "clockwise_5"]


def keypoint_flip_table() -> torch.Tensor:
    """int64 ``[L, K]``: row ``label``, entry ``j`` = the slot that becomes slot ``j`` under a flip."""
    table = torch.arange(NUM_KEYPOINTS).repeat(len(CLASS_NAMES) + 1, 1)  # (L, K) identity rows
    for label, name in enumerate(CLASS_NAMES, start=1):
        n = len(LOCAL_POINTS[name])
        table[label, :n] = (n - torch.arange(n)) % n  # top stays; clockwise order reverses
    return table


def skeletons() -> dict[int, list[tuple[int, int]]]:
    """Lines to draw per label (0-based slot pairs): the polygon of corners / tips, the cross's arms."""
    out: dict[int, list[tuple[int, int]]] = {}
    for label, name in enumerate(CLASS_NAMES, start=1):
        n = len(LOCAL_POINTS[name])
        if name == "cross":
            out[label] = [(0, 2), (1, 3)]
        else:
            out[label] = [(j, (j + 1) % n) for j in range(n)] if n > 1 else []
    return out


def object_keypoints(obj: ShapeObject) -> Array:
    """float64 ``[n, 2]`` (x, y) image points of one object, named: topmost first, then clockwise."""
    uv = np.array(LOCAL_POINTS[CLASS_NAMES[obj.label - 1]], dtype=np.float64) * obj.radius  # (n, 2)
    c, s = np.cos(obj.angle), np.sin(obj.angle)
    # Inverse of the renderer's rotation u = x c + y s, v = -x s + y c (x, y from the centre).
    x = obj.cx + uv[:, 0] * c - uv[:, 1] * s
    y = obj.cy + uv[:, 0] * s + uv[:, 1] * c
    if len(x) > 1:
        top = int(np.argmin(y))
        theta = np.arctan2(y - obj.cy, x - obj.cx)  # y down: increasing angle is clockwise on screen
        order = np.argsort(np.mod(theta - theta[top], 2 * np.pi), kind="stable")
        x, y = x[order], y[order]
    return np.stack([x, y], axis=1)


def scene_keypoints(scene: Scene, render: Render, ids: Array) -> Array:
    """float32 ``[N, K, 3]`` keypoints of the annotated ``scene.objects[ids]`` (visibility rule above)."""
    height, width = render.owner.shape
    out = np.zeros((len(ids), NUM_KEYPOINTS, 3), dtype=np.float32)
    for n, k in enumerate(ids.tolist()):
        pts = object_keypoints(scene.objects[k])  # (m, 2)
        for j, (x, y) in enumerate(pts.tolist()):
            if not (0.0 <= x < width and 0.0 <= y < height):
                continue  # outside the image: unlabelled
            holder = int(render.owner[int(y), int(x)])  # 0 background, k + 1 object k
            out[n, j] = (x, y, 1.0 if holder > k + 1 else 2.0)  # a nearer object hides it
    return out


class ShapesKeypoints(ShapesWorld):
    """The shapes world with ``keypoints`` ``[N, 5, 3]`` in every target (see the module docstring).

    Takes :class:`~structpred.data.shapes.ShapesWorld`'s arguments; items are the same plus
    ``keypoints``. Attributes for the keypoint task: ``keypoint_names`` (K slot names),
    ``keypoint_sigmas`` (K OKS sigmas), ``class_keypoint_names`` (each shape's own names of its
    slots), ``keypoint_flip`` (int64 ``[L, K]`` per-label flip permutation), ``skeletons``
    (per label, slot pairs to draw).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.keypoint_names: list[str] = list(KEYPOINT_NAMES)
        self.keypoint_sigmas: list[float] = [KEYPOINT_SIGMA] * NUM_KEYPOINTS
        self.class_keypoint_names: dict[str, list[str]] = {
            k: list(v) for k, v in CLASS_KEYPOINT_NAMES.items()
        }
        self.keypoint_flip = keypoint_flip_table()
        self.skeletons = skeletons()

    def _target(self, scene: Scene, render: Render, index: int) -> tuple[Target, Array]:
        target, ids = super()._target(scene, render, index)
        target["keypoints"] = torch.from_numpy(scene_keypoints(scene, render, ids))
        return target, ids
