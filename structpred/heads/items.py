"""Per-item prediction dicts from batched tensors, exportable with a symbolic batch.

The forward contract returns one dict per item (``[{"class_logits": [K], ...}, ...]``). Splitting
a ``[B, ...]`` tensor into B items fixes B, so under ``torch.export`` (the export wrappers of
:mod:`structpred.engine.export`) :func:`split_items` returns a :class:`BatchedItems` instead: an
empty list that carries the batched tensors, which the wrapper reads. In eager mode it is the
plain list of dicts.
"""

from __future__ import annotations

import torch
from torch import Tensor


class BatchedItems(list[dict[str, Tensor]]):
    """Under ``torch.export`` only: the batched predictions ``{key: [B, ...]}`` in ``.batched``."""

    def __init__(self, batched: dict[str, Tensor]) -> None:
        super().__init__()
        self.batched = batched


def split_items(batched: dict[str, Tensor]) -> list[dict[str, Tensor]]:
    """``{key: [B, ...]}`` -> ``[{key: [...]}, ...]``, one dict per item (see the module docstring)."""
    if torch.compiler.is_exporting():
        return BatchedItems(batched)
    keys = list(batched)
    return [dict(zip(keys, values, strict=True)) for values in zip(*batched.values(), strict=True)]
