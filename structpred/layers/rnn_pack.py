"""Variable-length input for :mod:`structpred.layers.rnn`: ``lengths=`` checks, PackedSequence unpacking.

Shape shorthand: T time steps, B batch, I input features, N packed rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence


def lengths_tensor(lengths: Tensor | Sequence[int], B: int, T: int) -> Tensor:
    """Validate ``lengths`` (any order) -> int64 CPU ``(B,)`` with 1 <= length <= T."""
    lens = torch.as_tensor(lengths).detach().cpu()
    if lens.dim() != 1 or lens.shape[0] != B:
        raise ValueError(f"lengths must hold one length per sequence ({B}), got shape {tuple(lens.shape)}")
    if lens.is_floating_point() or lens.is_complex() or lens.dtype == torch.bool:
        raise ValueError(f"lengths must be integers, got {lens.dtype}")
    if B > 0 and (int(lens.min()) < 1 or int(lens.max()) > T):
        raise ValueError(f"lengths must lie in [1, T={T}], got min {int(lens.min())} max {int(lens.max())}")
    return lens.long()


def unpack(seq: PackedSequence) -> tuple[Tensor, Tensor, Tensor]:
    """PackedSequence -> padded ``(T, B, F)`` in *sorted* order, sorted lengths ``(B,)``, flat index."""
    data, batch_sizes = seq.data, seq.batch_sizes
    if data.dim() != 2:
        raise ValueError(f"PackedSequence data must be (N, I), got {tuple(data.shape)}")
    if batch_sizes.dim() != 1 or batch_sizes.numel() == 0 or bool((batch_sizes[1:] > batch_sizes[:-1]).any()):
        raise ValueError("PackedSequence batch_sizes must be a non-empty, non-increasing 1-D tensor")
    if int(batch_sizes.sum()) != data.shape[0]:
        raise ValueError(
            f"PackedSequence batch_sizes sum to {int(batch_sizes.sum())}, data has {data.shape[0]} rows")
    T, B = batch_sizes.numel(), int(batch_sizes[0])
    lens = (batch_sizes.unsqueeze(1) > torch.arange(B)).sum(0)  # (T, B) -> (B,), non-increasing
    valid = torch.arange(T).unsqueeze(1) < lens  # (T, B); packed rows are its True cells, row-major
    index = valid.flatten().nonzero().squeeze(1).to(data.device)  # (N,)
    padded = data.new_zeros(T * B, data.shape[1]).index_copy(0, index, data)  # (T*B, I)
    return padded.view(T, B, -1), lens, index  # (T*B, I) -> (T, B, I)
