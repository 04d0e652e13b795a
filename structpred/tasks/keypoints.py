"""Keypoint detection task: being written (issue 16)."""
