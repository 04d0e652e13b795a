"""Proposals beside a detection dataset: validation, image fingerprints (cache keys), and a
dataset wrapper whose targets carry each image's proposals, computed once.

Convention: proposals are class-agnostic xyxy boxes ``Tensor[P, 4]`` in original-image pixels.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..ops import clip_boxes_to_image
from .selective_search import selective_search

logger = logging.getLogger(__name__)

ProposalFn = Callable[[Tensor], Tensor]  # image [3, H, W] in [0, 1] -> boxes [P, 4] xyxy pixels


def check_proposals(boxes: Any, size: tuple[int, int], name: str = "proposals") -> Tensor:
    """Validated proposals ``Tensor[P, 4]`` (xyxy pixels of an ``(H, W)`` image), clipped to it.

    Raises ``ValueError`` naming ``name`` and the box for: not a float ``Tensor[P, 4]``,
    non-finite values, degenerate boxes (``x2 <= x1`` or ``y2 <= y1``). Boxes wholly outside
    the image are dropped; ``P = 0`` is allowed.
    """
    if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4:
        got = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
        raise ValueError(f"{name} must be a Tensor[P, 4] of xyxy boxes, got {got}")
    if not boxes.is_floating_point():
        raise ValueError(f"{name} must be float, got {boxes.dtype}")
    if not bool(torch.isfinite(boxes).all()):
        j = int((~torch.isfinite(boxes).all(1)).nonzero()[0])
        raise ValueError(f"{name}[{j}] = {boxes[j].tolist()} is not finite")
    bad = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    if bool(bad.any()):
        j = int(bad.nonzero()[0])
        raise ValueError(f"{name}[{j}] = {boxes[j].tolist()} is degenerate (need x2 > x1, y2 > y1)")
    clipped = clip_boxes_to_image(boxes, size)
    keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    return clipped[keep]


def image_fingerprint(image: Tensor) -> str:
    """A digest of an image's values: cache keys stay right when ids repeat (train vs val)."""
    data = image.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class WithProposals(Dataset):
    """A detection dataset whose targets also carry ``proposals`` ``Tensor[P, 4]`` (xyxy pixels),
    computed once per item and kept in memory.

    Wrap a dataset without random augmentation (an item whose image changed between reads gets
    its proposals recomputed). DataLoader workers each hold a copy: call :meth:`precompute` first.
    Other attributes (``categories`` ...) are the wrapped dataset's.
    """

    def __init__(
        self,
        dataset: Dataset,
        mode: str = "fast",
        max_proposals: int | None = 2000,
        proposal_fn: ProposalFn | None = None,
    ) -> None:
        self.dataset = dataset
        self.proposal_fn = proposal_fn or partial(selective_search, mode=mode, max_proposals=max_proposals)
        self.cache: dict[int, tuple[str, Tensor]] = {}
        self._warned = False

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        image, target = self.dataset[index]
        key, fingerprint = int(index) % len(self), image_fingerprint(image)
        hit = self.cache.get(key)
        if hit is None or hit[0] != fingerprint:
            if hit is not None and not self._warned:
                logger.warning("WithProposals: item %d changed between reads (random augmentation?); "
                               "its proposals are recomputed", key)  # fmt: skip
                self._warned = True
            hit = (fingerprint, self.proposal_fn(image).cpu())
            self.cache[key] = hit
        return image, {**target, "proposals": hit[1]}

    def precompute(self) -> None:
        """Compute every item's proposals now, in this process (logs the time per image)."""
        tic = time.perf_counter()
        for i in range(len(self)):
            self[i]
        per_image = (time.perf_counter() - tic) / max(len(self), 1)
        logger.info("proposals of %d images: %.2f s per image", len(self), per_image)

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not set yet (unpickling): do not recurse
            raise AttributeError(name)
        return getattr(self.dataset, name)
