"""Input validation shared by the ops: clear ``ValueError``s at public boundaries.

Shape and dtype checks are free (no device sync). Checks that look at values
(``x2 >= x1``, batch indices in range) need one reduction; they are done only where a
wrong value would silently give a meaningless result (RoI pooling, box encoding, GIoU), and
only in eager mode (under ``torch.export`` a value cannot steer Python control flow).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import torch
import torch.fx
from torch import Tensor

_Fn = TypeVar("_Fn", bound=Callable[..., Any])

BOX_FORMATS = ("xyxy", "xywh", "cxcywh")


def _tracer_of(args: Any) -> torch.fx.Tracer | None:
    """The ``torch.fx`` tracer of the first Proxy in ``args`` (nested lists, tuples, dicts)."""
    if isinstance(args, torch.fx.Proxy):
        return args.tracer  # type: ignore[return-value]
    if isinstance(args, (list, tuple)):
        values: Sequence[Any] = args
    elif isinstance(args, Mapping):
        values = list(args.values())
    else:
        return None
    for v in values:
        tracer = _tracer_of(v)
        if tracer is not None:
            return tracer
    return None


def fx_leaf(fn: _Fn) -> _Fn:
    """Make ``torch.fx.symbolic_trace`` record a call of ``fn`` as one graph node.

    The RoI ops check values and branch on sizes, which symbolic tracing cannot follow. Like
    ``torch.fx.wrap``, but wherever the caller lives: a call that receives a ``torch.fx.Proxy``
    (directly or inside a list, tuple or dict) is recorded, not run; the traced module calls
    ``fn`` on real tensors. Eager calls, ``torch.export`` and ``torch.compile`` see no Proxy and
    run ``fn`` itself.
    """

    @functools.wraps(fn)
    def leaf(*args: Any, **kwargs: Any) -> Any:
        tracer = _tracer_of((args, kwargs))
        if tracer is not None:
            return tracer.create_proxy("call_function", leaf, args, kwargs)
        return fn(*args, **kwargs)

    return leaf  # type: ignore[return-value]


def check_format(fmt: str, name: str = "fmt") -> None:
    """Raise unless ``fmt`` is one of the axis-aligned box formats."""
    if fmt not in BOX_FORMATS:
        raise ValueError(
            f"{name}={fmt!r} is not supported; expected one of {BOX_FORMATS} "
            "(rotated formats are not implemented in structpred)"
        )


def check_boxes(boxes: Tensor, name: str, *, ordered: bool = False, rank2: bool = False) -> None:
    """Validate a box tensor ``[..., 4]``.

    Args:
        boxes: the tensor to check.
        name: argument name used in the error message.
        ordered: also require ``x2 >= x1`` and ``y2 >= y1`` (one reduction; syncs on GPU).
        rank2: require exactly ``[N, 4]``.
    """
    if not isinstance(boxes, Tensor):
        raise ValueError(f"{name} must be a Tensor, got {type(boxes).__name__}")
    if rank2 and boxes.dim() != 2:
        raise ValueError(f"{name} must have shape [N, 4], got {tuple(boxes.shape)}")
    if boxes.dim() < 1 or boxes.shape[-1] != 4:
        raise ValueError(f"{name} must have shape [..., 4], got {tuple(boxes.shape)}")
    if ordered:
        if not boxes.is_floating_point():
            raise ValueError(f"{name} must be a floating point tensor, got {boxes.dtype}")
        if torch.compiler.is_exporting():  # a value check is eager-only: no branch in a graph
            return
        bad = (boxes[..., 2] < boxes[..., 0]) | (boxes[..., 3] < boxes[..., 1])
        if bool(bad.any()):
            first = int(bad.reshape(-1).nonzero()[0])
            raise ValueError(
                f"{name} must be in (x1, y1, x2, y2) order with x2 >= x1 and y2 >= y1; "
                f"box {first} is {boxes.reshape(-1, 4)[first].tolist()}"
            )


def check_float(t: Tensor, name: str) -> None:
    """Raise unless ``t`` is a floating point tensor."""
    if not isinstance(t, Tensor):
        raise ValueError(f"{name} must be a Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be a floating point tensor, got {t.dtype}")


def pair(size: int | Sequence[int], name: str) -> tuple[int, int]:
    """``7 -> (7, 7)``; ``(7, 5) -> (7, 5)``; positive ints only."""
    if isinstance(size, int):
        out = (size, size)
    elif len(size) == 1:
        out = (int(size[0]), int(size[0]))
    elif len(size) == 2:
        out = (int(size[0]), int(size[1]))
    else:
        raise ValueError(f"{name} must be an int or a pair (h, w), got {size!r}")
    if out[0] <= 0 or out[1] <= 0:
        raise ValueError(f"{name} must be positive, got {size!r}")
    return out


def rois_from_boxes(
    boxes: Tensor | Sequence[Tensor], feature: Tensor, name: str = "boxes"
) -> tuple[Tensor, Tensor]:
    """Normalise torchvision's two RoI forms to ``(batch_idx int64[K], xyxy[K, 4])``.

    ``boxes`` is either ``Tensor[K, 5]`` rows ``(batch_index, x1, y1, x2, y2)`` or a list
    with one ``Tensor[L_i, 4]`` per image of ``feature`` (``[N, C, H, W]``). Boxes are cast
    to ``feature``'s dtype. Raises ``ValueError`` on a wrong form, non-float boxes, non-finite or
    inverted boxes or a batch index that is not an image of ``feature``.
    """
    if not isinstance(feature, Tensor) or feature.dim() != 4:
        shape = tuple(feature.shape) if isinstance(feature, Tensor) else type(feature).__name__
        raise ValueError(f"input must be a Tensor[N, C, H, W], got {shape}")
    check_float(feature, "input")
    num_images = feature.shape[0]
    if isinstance(boxes, Tensor):
        if boxes.dim() != 2 or boxes.shape[1] != 5:
            raise ValueError(
                f"{name} as a Tensor must be [K, 5] (batch_index, x1, y1, x2, y2), got {tuple(boxes.shape)}"
            )
        check_float(boxes, name)
        batch = boxes[:, 0]
        xyxy = boxes[:, 1:]
        bad = (batch != batch.round()) | (batch < 0) | (batch >= num_images)
        if not torch.compiler.is_exporting() and bool(bad.any()):
            raise ValueError(
                f"{name}[:, 0] must hold integer batch indices in [0, {num_images - 1}] "
                f"(input has {num_images} images), got values {batch.unique().tolist()[:8]}"
            )
        batch_idx = batch.to(torch.int64)
    elif isinstance(boxes, (list, tuple)):
        if len(boxes) > num_images:  # fewer is fine: the last images then have no RoIs
            raise ValueError(
                f"{name} as a list must hold one Tensor[L, 4] per image: "
                f"got {len(boxes)} tensors for {num_images} images"
            )
        for i, b in enumerate(boxes):
            if not isinstance(b, Tensor) or b.dim() != 2 or b.shape[1] != 4:
                got = tuple(b.shape) if isinstance(b, Tensor) else type(b).__name__
                raise ValueError(f"{name}[{i}] must be a Tensor[L, 4], got {got}")
            check_float(b, f"{name}[{i}]")
        xyxy = torch.cat([b.to(feature.dtype) for b in boxes]) if boxes else feature.new_zeros(0, 4)
        if len(boxes) == 1:  # one image (an exported detector's case: no repeat over a symbolic count)
            batch_idx = torch.zeros(xyxy.shape[0], dtype=torch.int64, device=feature.device)
        else:
            counts = torch.tensor([b.shape[0] for b in boxes], dtype=torch.int64, device=feature.device)
            batch_idx = torch.repeat_interleave(torch.arange(len(boxes), device=feature.device), counts)
    else:
        raise ValueError(
            f"{name} must be a Tensor[K, 5] or a list of Tensor[L, 4], got {type(boxes).__name__}"
        )
    xyxy = xyxy.to(device=feature.device, dtype=feature.dtype)
    if not torch.compiler.is_exporting():
        # A NaN corner passes the order test below and would pool zeros or a wrong window.
        finite = torch.isfinite(xyxy).all(1)
        if not bool(finite.all()):
            first = int((~finite).nonzero()[0])
            raise ValueError(f"{name} must be finite; box {first} is {xyxy[first].tolist()}")
    check_boxes(xyxy, name, ordered=True)
    return batch_idx.to(feature.device), xyxy
