"""Heads: RPN, RoI heads, mask head, FCN / DeepLab heads, single-value heads (each with its loss)."""
