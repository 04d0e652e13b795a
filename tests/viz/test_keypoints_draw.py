"""draw_keypoints: dots where the points are, lines between them, hidden points left out, clear errors."""

from __future__ import annotations

import pytest
import torch

from structpred.viz import draw_keypoints


def _painted(out: torch.Tensor, blank: torch.Tensor) -> torch.Tensor:
    return (out != blank).any(0)  # (H, W) pixels that changed


def test_dots_at_the_points_and_hidden_points_not_drawn() -> None:
    image = torch.zeros(3, 20, 30)
    kp = torch.tensor([[[5.5, 4.5, 2.0], [20.5, 10.5, 0.0], [25.5, 15.5, 1.0]]])  # pixel centres
    out = draw_keypoints(image, kp, colors="red", radius=0)
    assert out.dtype == torch.uint8 and out.shape == (3, 20, 30)
    painted = _painted(out, torch.zeros_like(out))
    assert painted[4, 5] and painted[15, 25] and not painted[10, 20]  # visibility 0: not drawn
    assert painted.sum() <= 2 * 2  # one pixel per dot (PIL may touch a neighbour)
    assert out[:, 4, 5].tolist() == [255, 0, 0]
    assert image.abs().sum() == 0  # the input is untouched


def test_skeleton_lines_join_shown_points_only() -> None:
    image = torch.zeros(3, 20, 40, dtype=torch.uint8)
    kp = torch.tensor([[[4.5, 10.5, 2.0], [34.5, 10.5, 2.0], [20.5, 2.5, 0.0]]])
    out = draw_keypoints(image, kp, skeleton=[(0, 1), (1, 2)], radius=1)
    painted = _painted(out, image)
    assert painted[10, 5:34].all()  # the line 0-1
    assert not painted[3:8, 20].any()  # the line to the hidden point 2 is not drawn
    # Per-label skeletons: label 2 has none.
    out2 = draw_keypoints(image, kp, labels=torch.tensor([2]), skeleton={1: [(0, 1)]}, radius=1)
    assert not _painted(out2, image)[10, 12:28].any()


def test_two_column_points_and_colours_per_object() -> None:
    image = torch.zeros(3, 10, 10)
    kp = torch.tensor([[[2.5, 2.5]], [[7.5, 7.5]]])
    out = draw_keypoints(image, kp, colors=["red", "blue"], radius=0)
    assert out[:, 2, 2].tolist() == [255, 0, 0] and out[:, 7, 7].tolist() == [0, 0, 255]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"keypoints": torch.zeros(2, 3)}, r"keypoints must be a Tensor\[N, K, 2 or 3\]"),
        ({"keypoints": torch.full((1, 2, 3), float("nan"))}, "finite"),
        ({"skeleton": [(0, 5)]}, "outside the keypoints"),
        ({"skeleton": {1: [(0, 1)]}}, "needs labels"),
        ({"labels": torch.tensor([1, 2])}, r"labels must be a Tensor\[1\]"),
        ({"radius": -1}, "radius"),
    ],
)
def test_bad_input_is_a_clear_value_error(kwargs: dict, message: str) -> None:
    args = {"keypoints": torch.ones(1, 2, 3), **kwargs}
    with pytest.raises(ValueError, match=message):
        draw_keypoints(torch.zeros(3, 8, 8), **args)
