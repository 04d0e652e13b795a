"""External region proposals for two-stage detectors (Fast R-CNN): Selective Search.

``selective_search(image)`` gives ranked, deduplicated xyxy boxes for one image;
``proposal_recall`` measures how many ground-truth boxes the top-n proposals cover.
The building blocks (features, similarities, hierarchical grouping) are in :mod:`.grouping`.
"""

from .grouping import (
    Hierarchy,
    fill_similarity,
    hierarchical_grouping,
    histogram_intersection,
    size_similarity,
)
from .selective_search import Strategy, proposal_recall, selective_search, strategies

__all__ = [
    "Hierarchy",
    "Strategy",
    "fill_similarity",
    "hierarchical_grouping",
    "histogram_intersection",
    "proposal_recall",
    "selective_search",
    "size_similarity",
    "strategies",
]
