"""The image contract checked where images enter a model from Python (DESIGN.md §3).

Images in are ``float32`` in ``[0, 1]``: a list of ``Tensor[3, H, W]``, a batch
``Tensor[B, 3, H, W]``, pairs ``[B, 2, 3, H, W]`` or clips ``[B, T, 3, H, W]``. Three mistakes
pass silently through a model that normalises internally and give a wrong but finite loss (or NaN
three epochs later): ``float64`` tensors, ``0..255`` floats (``torch.from_numpy(array).float()``
without ``/ 255``), and NaN or infinite pixels. :func:`check_images` refuses them with one
``ValueError`` naming the batch, the item and the field. It reads each tensor once (``aminmax``
and ``isfinite``), about 1 ms per batch of four 256 x 256 images on a CPU core.

Call it for tasks whose inputs are images (every task but ``sequence``): a tensor whose
third dimension from the end is not 3 channels, or an integer tensor of token ids, is left
alone, but a ``[B, T, F]`` sequence batch with ``B = 3`` would look like one image. Where it
runs: once per batch where a batch enters the model (``engine/trainer.py``: the training and
evaluation loops, before ``_to_device``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

RANGE_SLACK = 1e-3  # float noise a [0, 1] image may carry (a resize's overshoot, 1/255 rounding)
IMAGE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _is_image(x: Tensor) -> bool:
    """A tensor whose third dimension from the end is 3 channels (``[..., 3, H, W]``) and that is
    not integer token ids (``uint8`` is an image: 0..255 bytes)."""
    is_ids = not x.is_floating_point() and x.dtype != torch.uint8
    return x.dim() >= 3 and x.shape[-3] == 3 and not is_ids


def check_image(image: Tensor, where: str) -> None:
    """Raise ``ValueError`` naming ``where`` unless ``image`` (``Tensor[..., 3, H, W]``) is a
    float32/16 tensor of finite values in ``[0, 1]`` (with :data:`RANGE_SLACK`)."""
    if not isinstance(image, Tensor):
        raise ValueError(f"{where}: expected a Tensor[3, H, W] image, got {type(image).__name__}")
    if not _is_image(image):
        return
    if image.dtype not in IMAGE_DTYPES:
        fix = ".float()" if image.is_floating_point() else ".float() / 255"
        raise ValueError(f"{where}: image dtype is {image.dtype}, expected float32 in [0, 1] (use {fix})")
    if image.numel() == 0:
        raise ValueError(f"{where}: empty image of shape {tuple(image.shape)}")
    finite = torch.isfinite(image)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        first = (~finite).nonzero()[0].tolist()
        raise ValueError(
            f"{where}: image has {bad} NaN or infinite pixel value(s), the first at index {first} "
            f"of shape {tuple(image.shape)}"
        )
    low, high = (float(v) for v in torch.aminmax(image.detach().float()))
    if high > 1.0 + RANGE_SLACK:
        hint = " (0..255 values: divide by 255)" if high > 2.0 else ""
        raise ValueError(f"{where}: image values reach {high:g}, expected [0, 1]{hint}")
    if low < -RANGE_SLACK:
        raise ValueError(
            f"{where}: image values reach {low:g}, expected [0, 1] (models normalise internally: "
            "pass unnormalised images)"
        )


def check_images(images: Tensor | Sequence[Tensor], where: str = "input") -> None:
    """:func:`check_image` on a batch tensor or on each image of a list (``where[i]`` named)."""
    if isinstance(images, Tensor):
        check_image(images, where)
        return
    if not isinstance(images, Sequence) or isinstance(images, str):
        raise ValueError(
            f"{where}: expected a list of images or a batched tensor, got {type(images).__name__}"
        )
    for i, image in enumerate(images):
        check_image(image, f"{where} item {i}")
