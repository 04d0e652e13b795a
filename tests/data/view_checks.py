"""Reference checks of pair / clip geometry, written out pixel by pixel (shared by the data tests).

Each check follows every valid pixel to its match by integer indexing, independent of the code
under test; ``atol=0`` means bit-exact.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def grid(height: int, width: int) -> tuple[Tensor, Tensor]:
    """Row and column index maps ``int64[H, W]``."""
    return torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")


def check_match(src: Tensor, dst: Tensor, dx: Tensor, dy: Tensor, valid: Tensor, atol: float = 0.0) -> int:
    """``dst[:, y + dy, x + dx] == src[:, y, x]`` wherever ``valid``; displacements must be whole
    pixels landing inside the image there. Returns the number of pixels checked."""
    _, height, width = src.shape
    ys, xs = grid(height, width)
    tx, ty = xs + dx.round().long(), ys + dy.round().long()
    assert torch.equal((xs + dx)[valid], tx[valid].to(dx.dtype)), "displacement is not whole pixels"
    assert torch.equal((ys + dy)[valid], ty[valid].to(dy.dtype))
    inside = (tx >= 0) & (tx < width) & (ty >= 0) & (ty < height)
    assert bool(inside[valid].all()), "a valid pixel's match is outside the image"
    matched = dst[:, ty[valid], tx[valid]]  # (3, P)
    if atol == 0.0:
        assert torch.equal(matched, src[:, valid])
    else:
        assert torch.allclose(matched, src[:, valid], atol=atol, rtol=0.0)
    return int(valid.sum())


def check_flow_pair(views: Tensor, target: dict[str, Tensor], atol: float = 0.0) -> int:
    """Flow pair: ``views[1][p + flow[p]] == views[0][p]`` at valid pixels."""
    flow = target["flow"]
    return check_match(views[0], views[1], flow[0], flow[1], target["valid"], atol)


def check_stereo_pair(views: Tensor, target: dict[str, Tensor], atol: float = 0.0) -> int:
    """Stereo pair: ``right[y, x - d] == left[y, x]`` (valid), ``left[y, x + d_r] == right[y, x]``
    (valid_right), and ``depth == focal * baseline / disparity``."""
    left, right = views
    zero = torch.zeros_like(target["disparity"][0])
    n = check_match(left, right, -target["disparity"][0], zero, target["valid"], atol)
    n += check_match(right, left, target["disparity_right"][0], zero, target["valid_right"], atol)
    expected = target["focal"] * target["baseline"] / target["disparity"]
    assert torch.allclose(target["depth"], expected, rtol=1e-5)
    return n


def tight_box(mask: Tensor) -> list[float]:
    ys, xs = mask.nonzero(as_tuple=True)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def check_clip_tracks(target: dict[str, Tensor]) -> None:
    """Every visible track box is the tight box of ``instances == track_id`` in its frame; the
    rest are NaN."""
    tracks, visible, inst = target["tracks"], target["visible"], target["instances"]
    assert torch.equal(torch.isnan(tracks).any(-1), ~visible)
    assert torch.equal(torch.isnan(tracks).all(-1), ~visible)
    for k, track_id in enumerate(target["track_ids"].tolist()):
        for t in range(tracks.shape[1]):
            if visible[k, t]:
                assert tracks[k, t].tolist() == tight_box(inst[t] == track_id), (k, t)


def check_single_item(image: Tensor, target: dict[str, Tensor], atol: float = 0.0) -> None:
    """Single image: boxes tight around masks (within ``atol`` pixels), masks labelled in
    ``semantic``, ``area`` the mask pixel count."""
    _, height, width = image.shape
    masks = target["masks"]
    assert masks.shape[1:] == (height, width) and target["semantic"].shape == (height, width)
    n = masks.shape[0]
    assert target["boxes"].shape == (n, 4) and target["labels"].shape == (n,) and target["area"].shape == (n,)
    for box, mask, label in zip(target["boxes"], masks.bool(), target["labels"], strict=True):
        if not mask.any():  # a resize may lose a tiny object's every pixel; boxes are then kept
            assert atol > 0
            continue
        assert torch.allclose(box, torch.tensor(tight_box(mask)), atol=atol, rtol=0), (box, tight_box(mask))
        assert bool((target["semantic"][mask] == label).all())


def interior(valid: Tensor, field: Tensor) -> Tensor:
    """``valid`` pixels whose 3 x 3 neighbourhood is all valid and shares ``field`` (``[C, H, W]``):
    where a bilinear 2x upsampling of a whole-pixel shift stays exact."""
    height, width = valid.shape
    pad_valid = F.pad(valid[None, None].float(), (1, 1, 1, 1))[0, 0]  # (H + 2, W + 2), outside = 0
    pad_field = F.pad(field[None], (1, 1, 1, 1), value=float("nan"))[0]  # (C, H + 2, W + 2)
    ok = valid.clone()
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            ok &= pad_valid[dy : dy + height, dx : dx + width] > 0
            ok &= (pad_field[:, dy : dy + height, dx : dx + width] == field).all(0)
    return ok
