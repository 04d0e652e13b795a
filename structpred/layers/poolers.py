"""``MultiScaleRoIAlign`` module: the FPN pooler as a drop-in for torchvision's."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from ..ops._checks import pair
from ..ops.poolers import multiscale_roi_align


class MultiScaleRoIAlign(nn.Module):
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
        super().__init__()
        if len(featmap_names) == 0:
            raise ValueError("featmap_names must name at least one feature map")
        self.featmap_names = list(featmap_names)
        self.output_size = pair(output_size, "output_size")
        self.sampling_ratio = sampling_ratio
        self.canonical_scale = canonical_scale
        self.canonical_level = canonical_level

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
        # Trailing names the backbone does not produce are skipped, as in torchvision (mobilenet
        # FPNs give "0", "1" of the default "0".."3"); a gap would shift every level's scale.
        present = [n for n in self.featmap_names if n in x]
        if not present:
            raise ValueError(f"none of the feature maps {self.featmap_names} found; got {list(x)}")
        if present != self.featmap_names[: len(present)]:
            gap = next(n for n in self.featmap_names if n not in x)
            raise ValueError(
                f"feature map {gap!r} is missing but finer and coarser ones are there; got {list(x)}"
            )
        # The dict's order decides the level order, as in torchvision.
        features = [v for k, v in x.items() if k in self.featmap_names]
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
