"""Detection input transform: validate, normalise, resize and batch images (and their targets).

Shape shorthand:
    B: images, H, W: an image's size, Hr, Wr: after resizing, Hp, Wp: the padded batch's size.

Convention (torchvision's ``GeneralizedRCNNTransform``, so its weights see the same pixels):
each image is normalised with ``image_mean`` / ``image_std``, then resized by one factor
``min(min_size / min(H, W), max_size / max(H, W))`` with bilinear interpolation
(``align_corners=False``, scale factor recomputed from the output size), then every image is
copied into the top-left corner of a zero batch whose sides are rounded up to
``size_divisible``. Boxes scale with the per-axis ratio of the sizes, target masks are resized
nearest; predicted boxes are scaled back to the original image (and per-box masks pasted into
it) by :meth:`DetectionTransform.postprocess`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops.masks import paste_masks_in_image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_image_batch(images: Tensor) -> Tensor:
    """A validated float ``[B, 3, H, W]`` batch, checked without splitting it (so its sizes may be
    symbolic under ``torch.export``)."""
    if images.dim() != 4:
        raise ValueError(f"images as a Tensor must be [B, 3, H, W], got {tuple(images.shape)}")
    if images.shape[1] != 3:
        raise ValueError(f"images[0] must be a Tensor[3, H, W], got {tuple(images.shape[1:])}")
    if not images.is_floating_point():
        raise ValueError(f"images[0] must be float in [0, 1], got {images.dtype}")
    if images.shape[2] == 0 or images.shape[3] == 0:
        raise ValueError(f"images are empty: {tuple(images.shape)}")
    return images


def as_image_list(images: Sequence[Tensor] | Tensor) -> list[Tensor]:
    """Validated ``list[Tensor[3, H, W]]`` of floats from a list or a ``[B, 3, H, W]`` batch."""
    if isinstance(images, Tensor):
        if images.dim() != 4:
            raise ValueError(f"images as a Tensor must be [B, 3, H, W], got {tuple(images.shape)}")
        images = list(images.unbind(0))
    if not isinstance(images, Sequence) or len(images) == 0:
        raise ValueError("images must be a non-empty list of Tensor[3, H, W] or a Tensor[B, 3, H, W]")
    for i, image in enumerate(images):
        if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3:
            shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise ValueError(f"images[{i}] must be a Tensor[3, H, W], got {shape}")
        if not image.is_floating_point():
            raise ValueError(f"images[{i}] must be float in [0, 1], got {image.dtype}")
        if image.shape[1] == 0 or image.shape[2] == 0:
            raise ValueError(f"images[{i}] is empty: {tuple(image.shape)}")
    return list(images)


def resize_boxes(boxes: Tensor, original_size: Sequence[int], new_size: Sequence[int]) -> Tensor:
    """Scale xyxy ``boxes (Tensor[N, 4])`` from an ``(H, W)`` image to another ``(H', W')``."""
    ratio_h = torch.tensor(new_size[0], dtype=torch.float32, device=boxes.device) / original_size[0]
    ratio_w = torch.tensor(new_size[1], dtype=torch.float32, device=boxes.device) / original_size[1]
    scale = torch.stack([ratio_w, ratio_h, ratio_w, ratio_h])  # (4,)
    return boxes * scale


class DetectionTransform(nn.Module):
    """Images (and targets) in, one padded normalised batch out; see the module docstring.

    Args:
        min_size: target length of the shorter side (a sequence: one is drawn per image in
            training, the last is used in eval, as torchvision).
        max_size: cap on the longer side.
        image_mean, image_std: per-channel normalisation of [0, 1] images.
        size_divisible: the batch's sides are rounded up to a multiple of this.
        fixed_size: resize every image to exactly ``(W, H)`` instead (torchvision's order).
    """

    def __init__(
        self,
        min_size: int | Sequence[int] = 800,
        max_size: int = 1333,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        size_divisible: int = 32,
        fixed_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.min_size = (min_size,) if isinstance(min_size, int) else tuple(min_size)
        if not self.min_size or any(s <= 0 for s in self.min_size) or max_size <= 0:
            raise ValueError(f"min_size and max_size must be positive, got {min_size}, {max_size}")
        self.max_size = max_size
        self.image_mean = tuple(float(m) for m in image_mean)
        self.image_std = tuple(float(s) for s in image_std)
        self.size_divisible = size_divisible
        self.fixed_size = fixed_size

    def _resize(self, image: Tensor) -> Tensor:
        """(3, H, W) -> (3, Hr, Wr)."""
        if self.fixed_size is not None:
            size = [self.fixed_size[1], self.fixed_size[0]]
            return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
        if self.training:
            # Drawn as torchvision draws it, so a seeded run samples as torchvision's does.
            pick = int(torch.empty(1).uniform_(0.0, float(len(self.min_size))).item())
            target = self.min_size[pick]
        else:
            target = self.min_size[-1]
        H, W = image.shape[-2:]
        scale = min(target / min(H, W), self.max_size / max(H, W))
        return F.interpolate(
            image[None], scale_factor=scale, mode="bilinear", recompute_scale_factor=True, align_corners=False
        )[0]

    def forward(
        self, images: Sequence[Tensor] | Tensor, targets: Sequence[dict[str, Tensor]] | None = None
    ) -> tuple[Tensor, list[tuple[int, int]], list[tuple[int, int]], list[dict[str, Tensor]] | None]:
        """Returns ``(batch [B, 3, Hp, Wp], resized sizes, original sizes, resized targets)``.

        Targets are shallow copies with ``boxes`` (and ``masks``, resized nearest) scaled to the
        resized image; the caller's dicts are not modified.
        """
        image_list = as_image_list(images)
        if targets is not None and len(targets) != len(image_list):
            raise ValueError(f"{len(targets)} targets for {len(image_list)} images")
        original_sizes = [(int(im.shape[1]), int(im.shape[2])) for im in image_list]
        out_targets: list[dict[str, Tensor]] | None = None if targets is None else []
        resized = []
        for i, image in enumerate(image_list):
            mean = torch.as_tensor(self.image_mean, dtype=image.dtype, device=image.device)[:, None, None]
            std = torch.as_tensor(self.image_std, dtype=image.dtype, device=image.device)[:, None, None]
            image = self._resize((image - mean) / std)  # (3, H, W) -> (3, Hr, Wr)
            resized.append(image)
            if targets is not None and out_targets is not None:
                target = dict(targets[i])
                new_size = image.shape[-2:]
                if "boxes" in target:
                    target["boxes"] = resize_boxes(target["boxes"], original_sizes[i], new_size)
                if "masks" in target and target["masks"].numel():
                    masks = target["masks"][:, None].float()  # (N, H, W) -> (N, 1, H, W)
                    target["masks"] = F.interpolate(masks, size=list(new_size))[:, 0].byte()
                out_targets.append(target)
        sizes = [(int(im.shape[1]), int(im.shape[2])) for im in resized]
        stride = self.size_divisible
        Hp = int(math.ceil(max(s[0] for s in sizes) / stride) * stride)
        Wp = int(math.ceil(max(s[1] for s in sizes) / stride) * stride)
        batch = resized[0].new_zeros(len(resized), 3, Hp, Wp)  # (B, 3, Hp, Wp)
        for i, image in enumerate(resized):
            batch[i, :, : image.shape[1], : image.shape[2]].copy_(image)
        return batch, sizes, original_sizes, out_targets

    def postprocess(
        self,
        predictions: list[dict[str, Tensor]],
        sizes: Sequence[tuple[int, int]],
        original_sizes: Sequence[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        """Scale each prediction's ``boxes`` from the resized image back to the original; per-box
        ``masks [N, 1, M, M]`` (Mask R-CNN) are pasted into it: ``[N, 1, H, W]``, as torchvision."""
        for pred, size, original in zip(predictions, sizes, original_sizes, strict=True):
            pred["boxes"] = resize_boxes(pred["boxes"], size, original)
            if "masks" in pred:
                pred["masks"] = paste_masks_in_image(pred["masks"], pred["boxes"], original)
        return predictions

    def extra_repr(self) -> str:
        return (
            f"min_size={self.min_size}, max_size={self.max_size}, mean={self.image_mean}, "
            f"std={self.image_std}, size_divisible={self.size_divisible}"
        )
