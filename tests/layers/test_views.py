"""batch_views: both input forms batch to [B, V, 3, H, W]; every bad input names where and what."""

from __future__ import annotations

import pytest
import torch

from structpred.layers.views import batch_views


def test_list_and_tensor_forms():
    items = [torch.rand(2, 3, 8, 10) for _ in range(3)]
    out = batch_views(items, 2, "Flow")
    assert out.shape == (3, 2, 3, 8, 10)
    assert all(torch.equal(out[i], items[i]) for i in range(3))
    stacked = torch.stack(items)
    assert batch_views(stacked, 2, "Flow") is stacked
    assert batch_views(tuple(items), None, "Flow").shape == (3, 2, 3, 8, 10)
    clip = [torch.rand(5, 3, 4, 4, dtype=torch.float64)]
    assert batch_views(clip, None, "Tracker").shape == (1, 5, 3, 4, 4)


@pytest.mark.parametrize(
    "images, num_views, match",
    [
        (torch.rand(2, 3, 8, 8), 2, r"Model: images as a Tensor must be \[B, V, 3, H, W\]"),
        ([], 2, "Model: images is empty"),
        ("frames", 2, "Model: images must be a list"),
        (
            [torch.rand(2, 3, 8, 8), torch.rand(3, 8, 8)],
            2,
            r"Model: images\[1\] must be a Tensor\[V, 3, H, W\]",
        ),
        ([torch.rand(2, 3, 8, 8), "x"], 2, r"Model: images\[1\] must be a Tensor"),
        ([torch.rand(2, 1, 8, 8)], 2, r"Model: images\[0\] must have 3 channels"),
        ([torch.zeros(2, 3, 8, 8, dtype=torch.uint8)], 2, r"Model: images\[0\] must be float"),
        ([torch.rand(2, 3, 8, 8), torch.rand(3, 3, 8, 8)], 2, r"Model: images\[1\] must have 2 views, got 3"),
        ([torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 9)], 2, r"Model: images\[1\] is \(2, 3, 8, 9\)"),
        ([torch.rand(2, 3, 8, 8), torch.rand(3, 3, 8, 8)], None, r"Model: images\[1\] is \(3, 3, 8, 8\)"),
        ([torch.rand(2, 3, 0, 8)], 2, r"Model: images\[0\] is empty"),
        (torch.rand(2, 3, 3, 8, 8), 2, r"Model: images\[0\] must have 2 views, got 3"),
        (torch.rand(2, 2, 4, 8, 8), 2, r"Model: images\[0\] must have 3 channels"),
        ([torch.rand(2, 3, 8, 8)], 0, "Model: num_views must be a positive int"),
    ],
)
def test_bad_inputs(images, num_views, match):
    with pytest.raises(ValueError, match=match) as info:
        batch_views(images, num_views, "Model")
    assert "\n" not in str(info.value)
