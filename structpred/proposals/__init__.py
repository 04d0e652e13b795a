"""External region proposals for two-stage detectors (Fast R-CNN): Selective Search.

``selective_search(image)`` gives ranked, deduplicated xyxy boxes for one image;
``proposal_recall`` measures how many ground-truth boxes the top-n proposals cover.
The building blocks (features, similarities, hierarchical grouping) are in :mod:`.grouping`;
proposals beside a dataset (:class:`WithProposals`, :func:`check_proposals`) in :mod:`.dataset`.
"""

from .dataset import ProposalFn, WithProposals, check_proposals, image_fingerprint
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
    "ProposalFn",
    "Strategy",
    "WithProposals",
    "check_proposals",
    "fill_similarity",
    "hierarchical_grouping",
    "histogram_intersection",
    "image_fingerprint",
    "proposal_recall",
    "selective_search",
    "size_similarity",
    "strategies",
]
