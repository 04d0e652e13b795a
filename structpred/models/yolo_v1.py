"""YOLO v1 (Redmon et al. 2016): being written (issue 16)."""
