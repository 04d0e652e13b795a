"""Pictures of structured predictions and targets, and training/evaluation plots.

Tensors in, ``uint8`` ``Tensor[3, H, W]`` out: ``draw_boxes``, ``draw_masks``,
``draw_label_map``, ``draw_keypoints``, ``overlay_label_map``, ``flow_to_color`` (+ ``flow_legend``),
``depth_to_color``, ``disparity_to_color`` (+ ``disparity_legend``), ``draw_tracks`` (point
trajectories), ``make_grid``; ``save_png`` writes one to disk. ``structpred.viz.scores``: the AP of a PR
curve (the metric's definition), the per-image scores and box confusion of the HTML report.
``plot_loss_curves`` and ``plot_pr_curves``
(in ``structpred.viz.plots``, imported lazily because matplotlib is slow to import) write PNGs.
"""

from __future__ import annotations

from typing import Any

from .colors import (
    apply_colormap,
    colormap_lut,
    depth_to_color,
    distinct_color,
    flow_color_wheel,
    parse_color,
    voc_palette,
)
from .depth import disparity_legend, disparity_to_color
from .draw import (
    caption_font_size,
    caption_position,
    draw_boxes,
    draw_label_map,
    draw_masks,
    make_grid,
    overlay_label_map,
    save_png,
    to_uint8_image,
)
from .flow import flow_legend, flow_to_color
from .keypoints import draw_keypoints
from .scores import average_precision, box_image_ap50, detection_confusion, image_ap50, image_miou
from .trajectories import draw_tracks

_PLOTS = ("loss_curves_figure", "plot_loss_curves", "plot_pr_curves", "pr_curves_figure")


def __getattr__(name: str) -> Any:
    if name in _PLOTS:
        from . import plots

        return getattr(plots, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "apply_colormap",
    "average_precision",
    "box_image_ap50",
    "caption_font_size",
    "caption_position",
    "colormap_lut",
    "depth_to_color",
    "disparity_legend",
    "disparity_to_color",
    "detection_confusion",
    "distinct_color",
    "draw_boxes",
    "draw_keypoints",
    "draw_label_map",
    "draw_masks",
    "draw_tracks",
    "flow_color_wheel",
    "flow_legend",
    "flow_to_color",
    "image_ap50",
    "image_miou",
    "loss_curves_figure",
    "make_grid",
    "overlay_label_map",
    "parse_color",
    "plot_loss_curves",
    "plot_pr_curves",
    "pr_curves_figure",
    "save_png",
    "to_uint8_image",
    "voc_palette",
]
