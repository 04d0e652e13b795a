"""A modern anchor-free YOLO-style detector: being written (issue 16)."""
