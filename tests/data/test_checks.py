# ruff: noqa: E501  (the case table reads one case per line)
"""structpred.data.checks: the image contract (float32 in [0, 1], finite) where images enter."""

from __future__ import annotations

import re

import pytest
import torch

from structpred.data.checks import check_images

GOOD = torch.rand(3, 8, 8)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        ([GOOD.double()], r"batch 0 item 0: image dtype is torch\.float64, expected float32 in \[0, 1\] \(use \.float\(\)\)"),
        ([GOOD * 255], r"batch 0 item 0: image values reach 2\d\d\.?\d*, expected \[0, 1\] \(0\.\.255 values: divide by 255\)"),
        ([(GOOD * 255).to(torch.uint8)], r"image dtype is torch\.uint8, expected float32 in \[0, 1\] \(use \.float\(\) / 255\)"),
        ([GOOD, GOOD.clone().index_put_((torch.tensor(1), torch.tensor(2), torch.tensor(3)), torch.tensor(float("nan")))], r"batch 0 item 1: image has 1 NaN or infinite pixel value\(s\), the first at index \[1, 2, 3\]"),
        ([GOOD.clone().fill_(float("inf"))], r"item 0: image has 192 NaN or infinite"),
        ([GOOD - 0.5], r"image values reach -0\.\d+, expected \[0, 1\] \(models normalise internally"),
        ([GOOD * 1.5 + 0.01], r"image values reach 1\.\d+, expected \[0, 1\]$"),
        ([torch.zeros(3, 0, 4)], r"empty image of shape \(3, 0, 4\)"),
        (["a.png"], r"batch 0 item 0: expected a Tensor\[3, H, W\] image, got str"),
        (GOOD.double().unsqueeze(0), r"batch 0: image dtype is torch\.float64"),
        ("not images", r"batch 0: expected a list of images or a batched tensor, got str"),
    ],
    ids=["float64", "0-255 floats", "uint8", "nan pixel", "inf image", "normalised", "1.5 range", "empty", "a path", "batched float64", "a string"],
)  # fmt: skip
def test_bad_images_are_refused_naming_batch_and_item(images: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        check_images(images, "batch 0")  # type: ignore[arg-type]
    assert re.search(message, str(caught.value)), str(caught.value)


@pytest.mark.parametrize(
    "images",
    [
        [GOOD, torch.rand(3, 5, 7)],  # sizes may differ
        torch.rand(2, 3, 4, 4),  # a batch
        torch.rand(2, 2, 3, 4, 4),  # pairs
        [GOOD.half(), GOOD.bfloat16()],  # AMP dtypes
        [torch.ones(3, 4, 4) + 1e-4],  # resize overshoot within the slack
        [torch.randn(20, 4, 1).double()],  # a sequence, not an image: left alone
        [torch.randint(0, 50, (30,))],  # token ids
    ],
    ids=["list", "batch", "pairs", "amp", "slack", "sequence", "tokens"],
)
def test_valid_inputs_pass(images: object) -> None:
    check_images(images, "batch 0")  # type: ignore[arg-type]
