"""Pure tensor operations for structured prediction, drop-in for ``torchvision.ops``.

``from structpred.ops import nms, roi_align`` gives torchvision's results, computed by
structpred's own PyTorch code (no C++ extension, no call into torchvision).
"""

from .anchors import anchors_for_image, cell_anchors, grid_anchors, num_anchors_per_location
from .box_coder import BoxCoder, decode_boxes, encode_boxes
from .boxes import (
    box_area,
    box_convert,
    box_iou,
    clip_boxes_to_image,
    complete_box_iou,
    distance_box_iou,
    generalized_box_iou,
    remove_small_boxes,
)
from .correlation import all_pairs_correlation, correlation_pyramid, local_correlation, pyramid_lookup
from .crf import dense_crf
from .focal_loss import sigmoid_focal_loss
from .iou_loss import complete_box_iou_loss, distance_box_iou_loss, generalized_box_iou_loss
from .linking import OnlineLinker, Tube, link_online, tubes_to_mot_rows
from .masks import masks_to_boxes, paste_masks_in_image
from .matcher import BackgroundFloorMatcher, BalancedPositiveNegativeSampler, Matcher
from .nms import batched_nms, nms
from .poolers import assign_fpn_levels, infer_scale, multiscale_roi_align, multiscale_roi_pool
from .roi_align import roi_align
from .roi_pool import roi_pool, spp
from .ssim import ssim
from .tube_dp import link_tubes_dp
from .warp import affine_grid, flow_warp, grid_sample

__all__ = [
    "BackgroundFloorMatcher",
    "BalancedPositiveNegativeSampler",
    "BoxCoder",
    "Matcher",
    "OnlineLinker",
    "Tube",
    "affine_grid",
    "all_pairs_correlation",
    "anchors_for_image",
    "assign_fpn_levels",
    "batched_nms",
    "box_area",
    "box_convert",
    "box_iou",
    "cell_anchors",
    "clip_boxes_to_image",
    "complete_box_iou",
    "complete_box_iou_loss",
    "correlation_pyramid",
    "decode_boxes",
    "dense_crf",
    "distance_box_iou",
    "distance_box_iou_loss",
    "encode_boxes",
    "flow_warp",
    "generalized_box_iou",
    "generalized_box_iou_loss",
    "grid_anchors",
    "grid_sample",
    "infer_scale",
    "link_online",
    "link_tubes_dp",
    "local_correlation",
    "masks_to_boxes",
    "multiscale_roi_align",
    "multiscale_roi_pool",
    "nms",
    "num_anchors_per_location",
    "paste_masks_in_image",
    "pyramid_lookup",
    "remove_small_boxes",
    "roi_align",
    "roi_pool",
    "sigmoid_focal_loss",
    "spp",
    "ssim",
    "tubes_to_mot_rows",
]
