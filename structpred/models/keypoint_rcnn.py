"""Keypoint R-CNN (He et al. 2017, Mask R-CNN's keypoint head): being written (issue 16)."""
