"""FCOS (Tian et al. 2019): being written (issue 16)."""
