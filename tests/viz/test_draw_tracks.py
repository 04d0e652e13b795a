"""viz.trajectories.draw_tracks: tracks drawn where they are, only living ones, bad input."""

from __future__ import annotations

import pytest
import torch

from structpred.viz.colors import distinct_color
from structpred.viz.trajectories import draw_tracks

NAN = float("nan")


def test_draws_the_living_tracks_where_they_are():
    image = torch.zeros(3, 20, 30)
    points = torch.full((2, 3, 2), NAN)
    points[0, :, 0] = torch.tensor([5.0, 10.0, 15.0])  # a track moving right along row 4
    points[0, :, 1] = 4.0
    points[1, 0] = torch.tensor([25.0, 15.0])  # dead after frame 0
    out = draw_tracks(image, points, frame=2, tail=5, radius=0)
    assert out.dtype == torch.uint8 and out.shape == (3, 20, 30)
    drawn = out.sum(0) > 0
    assert drawn[4, 5:16].all()  # the tail from frame 0 to 2
    assert not drawn[15, 25]  # the dead track is not drawn
    assert not drawn[:3].any() and not drawn[6:].any()
    assert tuple(out[:, 4, 15].tolist()) == distinct_color(0)
    # tail 0: the dot alone
    dot = draw_tracks(image, points, frame=2, tail=0, radius=0).sum(0) > 0
    assert dot.sum() == 1 and dot[4, 15]
    # frame 0: both tracks alive
    assert (draw_tracks(image, points, frame=0, radius=0).sum(0) > 0).sum() == 2


def test_motion_colours_follow_direction():
    points = torch.tensor([[[2.0, 2.0], [6.0, 2.0]], [[6.0, 8.0], [2.0, 8.0]]])  # right, left
    out = draw_tracks(torch.zeros(3, 12, 12), points, frame=1, color_by="motion", radius=0)
    assert not torch.equal(out[:, 2, 6], out[:, 8, 2])


def test_bad_inputs():
    with pytest.raises(ValueError, match="points must be"):
        draw_tracks(torch.zeros(3, 4, 4), torch.zeros(2, 3), frame=0)
    with pytest.raises(ValueError, match="frame must be"):
        draw_tracks(torch.zeros(3, 4, 4), torch.zeros(1, 3, 2), frame=3)
    with pytest.raises(ValueError, match="color_by"):
        draw_tracks(torch.zeros(3, 4, 4), torch.zeros(1, 3, 2), frame=0, color_by="speed")
    with pytest.raises(ValueError, match="image"):
        draw_tracks(torch.zeros(4, 4), torch.zeros(1, 3, 2), frame=0)
