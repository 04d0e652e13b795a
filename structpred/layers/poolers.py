"""RoI poolers as modules. FPN: ``MultiScaleRoIAlign`` (a drop-in for torchvision's) and its
quantised counterpart ``MultiScaleRoIPool`` (Mask R-CNN's RoIPool ablation); :func:`multiscale_pooler`
picks one by name. One map: :class:`RoIPooler` (Fast R-CNN's RoIPool, SPP or RoIAlign)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from ..ops._checks import fx_leaf, pair
from ..ops.poolers import multiscale_roi_align, multiscale_roi_pool
from ..ops.roi_align import roi_align
from ..ops.roi_pool import roi_pool, spp

ROI_OPS = ("align", "pool")
POOLS = ("roi_pool", "spp", "roi_align")  # RoIPooler's modes


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


# The forwards below go through fx_leaf functions: torch.fx.symbolic_trace records one node
# per pooler call (the feature dict's keys and the ops' value checks cannot be traced).


@fx_leaf
def _align_levels(
    featmap_names: Sequence[str],
    x: Mapping[str, Tensor],
    boxes: Sequence[Tensor],
    image_shapes: Sequence[tuple[int, int]],
    output_size: tuple[int, int],
    sampling_ratio: int,
    canonical_scale: int,
    canonical_level: int,
) -> Tensor:
    """:func:`multiscale_roi_align` over the named maps of ``x``."""
    return multiscale_roi_align(
        _levels(featmap_names, x),
        boxes,
        image_shapes,
        output_size,
        sampling_ratio,
        canonical_scale,
        canonical_level,
    )


@fx_leaf
def _pool_levels(
    featmap_names: Sequence[str],
    x: Mapping[str, Tensor],
    boxes: Sequence[Tensor],
    image_shapes: Sequence[tuple[int, int]],
    output_size: tuple[int, int],
    canonical_scale: int,
    canonical_level: int,
) -> Tensor:
    """:func:`multiscale_roi_pool` over the named maps of ``x``."""
    return multiscale_roi_pool(
        _levels(featmap_names, x), boxes, image_shapes, output_size, canonical_scale, canonical_level
    )


@fx_leaf
def _pool_one(
    features: Mapping[str, Tensor],
    boxes: Sequence[Tensor],
    name: str,
    stride: int,
    mode: str,
    size: int | tuple[int, ...],
    sampling_ratio: int,
) -> Tensor:
    """:class:`RoIPooler`'s pooling of ``features[name]``; ``size`` is SPP's levels for spp."""
    if name not in features:
        raise ValueError(f"feature map {name!r} not found; got {list(features)}")
    x, scale = features[name], 1.0 / stride
    if mode == "spp":
        assert isinstance(size, tuple)
        return spp(x, boxes, size, scale)
    assert isinstance(size, int)
    if mode == "roi_pool":
        return roi_pool(x, boxes, size, scale)
    return roi_align(x, boxes, size, scale, sampling_ratio)


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
        return _align_levels(
            self.featmap_names,
            x,
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
        return _pool_levels(
            self.featmap_names,
            x,
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


class RoIPooler(nn.Module):
    """Pool RoIs from one named feature map of a known stride (RoIHeads' pooler contract).

    Args:
        featmap_name: key of the feature dict to pool from.
        stride: the map's stride in input pixels (``spatial_scale = 1 / stride``).
        mode: ``"roi_pool"`` (Fast R-CNN's max pooling), ``"spp"`` (SPPnet pyramid, flat
            ``[S, C * sum(n^2)]``) or ``"roi_align"`` (bilinear, ``sampling_ratio`` taps per bin).
        output_size: T for roi_pool / roi_align; spp_levels: the SPP pyramid.
    """

    def __init__(
        self,
        featmap_name: str,
        stride: int,
        mode: str = "roi_pool",
        output_size: int = 7,
        spp_levels: Sequence[int] = (1, 2, 4),
        sampling_ratio: int = 2,
    ) -> None:
        super().__init__()
        if mode not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {mode!r}")
        self.featmap_name, self.stride, self.mode = featmap_name, int(stride), mode
        self.output_size, self.spp_levels = int(output_size), tuple(int(n) for n in spp_levels)
        self.sampling_ratio = sampling_ratio

    def out_features(self, channels: int) -> int:
        """Flattened features per RoI: ``C * T * T``, or ``C * sum(n^2)`` for spp."""
        cells = sum(n * n for n in self.spp_levels) if self.mode == "spp" else self.output_size**2
        return channels * cells

    def forward(
        self, features: dict[str, Tensor], boxes: list[Tensor], image_sizes: list[tuple[int, int]]
    ) -> Tensor:
        """``features[name] [B, C, Hf, Wf]``, per image ``[P_i, 4]`` boxes in (resized) input pixels
        -> ``[S, C, T, T]`` (``[S, C * sum(n^2)]`` for spp)."""
        size = self.spp_levels if self.mode == "spp" else self.output_size
        return _pool_one(
            features, boxes, self.featmap_name, self.stride, self.mode, size, self.sampling_ratio
        )

    def extra_repr(self) -> str:
        size = f"levels={self.spp_levels}" if self.mode == "spp" else f"output_size={self.output_size}"
        return f"{self.featmap_name!r}, mode={self.mode}, stride={self.stride}, {size}"
