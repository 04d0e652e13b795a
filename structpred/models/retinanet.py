"""RetinaNet (Lin et al. 2017): being written (issue 16)."""
