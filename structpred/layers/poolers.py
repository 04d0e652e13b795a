"""FPN poolers as modules: ``MultiScaleRoIAlign`` (a drop-in for torchvision's) and its quantised
counterpart ``MultiScaleRoIPool`` (Mask R-CNN's RoIPool ablation); :func:`multiscale_pooler`
picks one by name."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from ..ops._checks import pair
from ..ops.poolers import multiscale_roi_align, multiscale_roi_pool

ROI_OPS = ("align", "pool")


def _levels(featmap_names: Sequence[str], x: Mapping[str, Tensor]) -> list[Tensor]:
    """The maps of ``x`` named in ``featmap_names``, in ``x``'s order (finest first)."""
    # Trailing names the backbone does not produce are skipped, as in torchvision (mobilenet
    # FPNs give "0", "1" of the default "0".."3"); a gap would shift every level's scale.
    present = [n for n in featmap_names if n in x]
    if not present:
        raise ValueError(f"none of the feature maps {list(featmap_names)} found; got {list(x)}")
    if present != list(featmap_names[: len(present)]):
        gap = next(n for n in featmap_names if n not in x)
        raise ValueError(
            f"feature map {gap!r} is missing but finer and coarser ones are there; got {list(x)}"
        )
    # The dict's order decides the level order, as in torchvision.
    return [v for k, v in x.items() if k in featmap_names]


class _PyramidPooler(nn.Module):
    """What both FPN poolers hold: the maps to pool from, the output grid, FPN eq. 1's constants."""

    def __init__(
        self,
        featmap_names: Sequence[str],
        output_size: int | Sequence[int],
        canonical_scale: int = 224,
        canonical_level: int = 4,
    ) -> None:
        super().__init__()
        if len(featmap_names) == 0:
            raise ValueError("featmap_names must name at least one feature map")
        self.featmap_names = list(featmap_names)
        self.output_size = pair(output_size, "output_size")
        self.canonical_scale = canonical_scale
        self.canonical_level = canonical_level


class MultiScaleRoIAlign(_PyramidPooler):
    """Pool RoIs from the named feature maps, each RoI from the level its size selects.

    Args:
        featmap_names: keys of the feature dict to pool from, finest first.
        output_size: ``PH`` or ``(PH, PW)``.
        sampling_ratio: bilinear samples per bin and axis (``<= 0``: adaptive).
        canonical_scale, canonical_level: FPN eq. 1's 224 and k0 = 4.
    """

    def __init__(
        self,
        featmap_names: Sequence[str],
        output_size: int | Sequence[int],
        sampling_ratio: int,
        *,
        canonical_scale: int = 224,
        canonical_level: int = 4,
    ) -> None:
        super().__init__(featmap_names, output_size, canonical_scale, canonical_level)
        self.sampling_ratio = sampling_ratio

    def forward(
        self,
        x: Mapping[str, Tensor],
        boxes: Sequence[Tensor],
        image_shapes: Sequence[tuple[int, int]],
    ) -> Tensor:
        """Pool.

        Args:
            x: feature maps ``[N, C, Hl, Wl]`` by name (unnamed ones are ignored).
            boxes: per image, xyxy ``[K_i, 4]`` in image pixels.
            image_shapes: (H, W) of each image before padding.
        Returns:
            Tensor[sum K_i, C, PH, PW].
        """
        features = _levels(self.featmap_names, x)
        return multiscale_roi_align(
            features,
            boxes,
            image_shapes,
            self.output_size,
            self.sampling_ratio,
            self.canonical_scale,
            self.canonical_level,
        )

    def extra_repr(self) -> str:
        return (
            f"featmap_names={self.featmap_names}, output_size={self.output_size}, "
            f"sampling_ratio={self.sampling_ratio}"
        )


class MultiScaleRoIPool(_PyramidPooler):
    """Max-pool RoIs (RoIPool, quantised) from the named maps, each from the level its size selects.

    Args: as :class:`MultiScaleRoIAlign` without ``sampling_ratio``.
    """

    def __init__(
        self,
        featmap_names: Sequence[str],
        output_size: int | Sequence[int],
        *,
        canonical_scale: int = 224,
        canonical_level: int = 4,
    ) -> None:
        super().__init__(featmap_names, output_size, canonical_scale, canonical_level)

    def forward(
        self,
        x: Mapping[str, Tensor],
        boxes: Sequence[Tensor],
        image_shapes: Sequence[tuple[int, int]],
    ) -> Tensor:
        """Pool: as :meth:`MultiScaleRoIAlign.forward`, ``Tensor[sum K_i, C, PH, PW]``."""
        return multiscale_roi_pool(
            _levels(self.featmap_names, x),
            boxes,
            image_shapes,
            self.output_size,
            self.canonical_scale,
            self.canonical_level,
        )

    def extra_repr(self) -> str:
        return f"featmap_names={self.featmap_names}, output_size={self.output_size}"


def multiscale_pooler(
    roi_op: str, featmap_names: Sequence[str], output_size: int | Sequence[int], sampling_ratio: int
) -> MultiScaleRoIAlign | MultiScaleRoIPool:
    """``roi_op="align"``: :class:`MultiScaleRoIAlign`; ``"pool"``: :class:`MultiScaleRoIPool`
    (which has no sampling ratio)."""
    if roi_op == "align":
        return MultiScaleRoIAlign(featmap_names, output_size, sampling_ratio)
    if roi_op == "pool":
        return MultiScaleRoIPool(featmap_names, output_size)
    raise ValueError(f"roi_op must be one of {ROI_OPS}, got {roi_op!r}")
