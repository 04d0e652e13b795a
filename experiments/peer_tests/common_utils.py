"""The few helpers torchvision's ``test_ops.py`` imports from its ``test/common_utils.py``,
written for structpred's CPU-only runs (not a copy of torchvision's file)."""

from __future__ import annotations

import functools
from typing import Any

import pytest
import torch

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
needs_mps = pytest.mark.skipif(not torch.backends.mps.is_available(), reason="MPS not available")


def cpu_and_cuda() -> tuple[Any, ...]:
    """Device parameters: ``"cpu"``, and ``"cuda"`` (skipped without a GPU)."""
    return ("cpu", pytest.param("cuda", marks=needs_cuda))


def cpu_and_cuda_and_mps() -> tuple[Any, ...]:
    """Device parameters: as :func:`cpu_and_cuda`, plus ``"mps"`` (skipped without one)."""
    return (*cpu_and_cuda(), pytest.param("mps", marks=needs_mps))


# Exact equality, as torchvision's helper: assert_close with zero tolerances.
assert_equal = functools.partial(torch.testing.assert_close, rtol=0, atol=0)
