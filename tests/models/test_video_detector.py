"""The video detector: a registered detector + a linker; the contract, linking through the
wrapper with an exact (thresholding) detector, chunking, the clip targets, overfitting, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from structpred.data.shapes_views import ShapesVideo
from structpred.models.contract import check_request
from structpred.models.video_detector import (
    VideoDetector,
    frame_targets,
    make_linker,
    tube_rows,
    video_detector,
)
from structpred.ops.linking import link_online

KEYS = {"frames", "track_ids", "boxes", "scores", "labels"}
LOSSES = {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}


class BrightBoxes(nn.Module):
    """A test detector: the bounding box of each bright connected column band (pixels > 0.5),
    label 1, score 0.9; a parameter so losses can flow (loss = its square)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, images: Tensor, targets=None, *, predict: bool = True):  # type: ignore[no-untyped-def]
        check_request(targets is not None, predict, "BrightBoxes")
        out = []
        for image in images:
            mask = image.mean(0) > 0.5  # (H, W)
            cols = mask.any(0).nonzero().flatten().tolist()
            groups: list[list[int]] = []
            for c in cols:  # split the bright columns into runs: one object per run
                if groups and c == groups[-1][-1] + 1:
                    groups[-1].append(c)
                else:
                    groups.append([c])
            boxes = []
            for g in groups:
                rows = mask[:, g[0] : g[-1] + 1].any(1).nonzero().flatten()
                boxes.append([g[0], int(rows[0]), g[-1] + 1, int(rows[-1]) + 1])
            b = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
            out.append(
                {
                    "boxes": b,
                    "scores": torch.full((len(b),), 0.9),
                    "labels": torch.ones(len(b), dtype=torch.int64),
                }
            )
        losses = {} if targets is None else {"loss_w": self.w**2}  # a per-batch mean
        return (out if predict else None), losses


def moving_squares(num_frames: int = 6) -> tuple[Tensor, list[list[float]], list[list[float]]]:
    """Two white 8 x 8 squares on black moving right and left by 2 px per frame."""
    clip = torch.zeros(num_frames, 3, 32, 64)
    a, b = [], []
    for t in range(num_frames):
        xa, xb = 4 + 2 * t, 50 - 2 * t
        clip[t, :, 4:12, xa : xa + 8] = 1.0
        clip[t, :, 20:28, xb : xb + 8] = 1.0
        a.append([xa, 4, xa + 8, 12])
        b.append([xb, 20, xb + 8, 28])
    return clip, a, b


@pytest.mark.parametrize("linker", ["dp", "online"])
def test_links_an_exact_detector_into_one_tube_per_object(linker: str) -> None:
    clip, a, b = moving_squares()
    model = VideoDetector(BrightBoxes(), make_linker(linker))
    tubes = model.tubes(clip)
    assert len(tubes) == 2
    got = sorted(t.boxes.tolist() for t in tubes)
    assert got == sorted([a, b])
    assert all(t.frames.tolist() == list(range(6)) and t.label == 1 for t in tubes)
    (preds,), losses = model([clip])
    assert set(preds) == KEYS and losses == {}
    assert preds["frames"].tolist() == [t for t in range(6) for _ in range(2)]
    assert preds["track_ids"].tolist() == [1, 2] * 6
    assert preds["boxes"].shape == (12, 4) and preds["labels"].dtype == torch.int64


def test_chunks_and_min_score() -> None:
    clip, _, _ = moving_squares(5)
    whole = VideoDetector(BrightBoxes(), batch_size=8)([clip])[0][0]
    chunked = VideoDetector(BrightBoxes(), batch_size=2)([clip])[0][0]
    assert all(torch.equal(whole[k], chunked[k]) for k in KEYS)
    assert VideoDetector(BrightBoxes(), min_score=0.95)([clip])[0][0]["frames"].numel() == 0
    # A batch [B, T, 3, H, W] and a list of clips: one prediction per clip.
    flipped = clip.flip(-1)
    batch, _ = VideoDetector(BrightBoxes())(torch.stack([clip, flipped]))
    listed, _ = VideoDetector(BrightBoxes())([clip, flipped])
    assert len(batch) == len(listed) == 2
    assert all(torch.equal(batch[i][k], listed[i][k]) for i in range(2) for k in KEYS)
    assert torch.equal(batch[0]["boxes"], whole["boxes"]) and not torch.equal(
        batch[1]["boxes"], whole["boxes"]
    )
    # Losses: weighted by the chunk's frames, the same for any batch size.
    target = {"tracks": torch.full((1, 5, 4), math.nan), "labels": torch.ones(1, dtype=torch.int64)}
    for size in (1, 2, 8):
        _, losses = VideoDetector(BrightBoxes(), batch_size=size)([clip, clip], [target, target])
        assert float(losses["loss_w"].detach()) == pytest.approx(1.0)  # a mean over chunks and clips


def test_frame_targets_follow_visibility() -> None:
    _, target = ShapesVideo("train", size=(32, 64), num_images=1, length=3)[0]
    per_frame = frame_targets(target, 3)
    for t, ft in enumerate(per_frame):
        vis = target["visible"][:, t]
        assert torch.equal(ft["boxes"], target["tracks"][vis, t]) and torch.equal(
            ft["labels"], target["labels"][vis]
        )
    no_visible = {k: v for k, v in target.items() if k != "visible"}
    assert all(
        torch.equal(x["boxes"], y["boxes"])
        for x, y in zip(frame_targets(no_visible, 3), per_frame, strict=True)
    )


def test_registered_detector_contract_train_and_eval() -> None:
    torch.manual_seed(0)
    clip, target = ShapesVideo("train", size=(32, 64), num_images=1, length=2)[0]
    model = video_detector(
        "fasterrcnn_narrow_fpn", "online", min_score=0.0, min_size=64, max_size=128, width=8
    )
    model.eval()
    (preds,), losses = model([clip], [target])
    assert set(preds) == KEYS and set(losses) == LOSSES
    num = preds["frames"].numel()
    assert preds["boxes"].shape == (num, 4) and preds["scores"].shape == (num,)
    assert bool((preds["frames"][1:] >= preds["frames"][:-1]).all()) and bool((preds["track_ids"] >= 1).all())
    # The rows are the linker's tubes of the detector's own per-frame output.
    detections, _ = model.detect_frames(clip)
    expected = tube_rows(link_online([d["boxes"] for d in detections], [d["scores"] for d in detections],
                                     [d["labels"] for d in detections]))  # fmt: skip
    assert all(torch.allclose(preds[k].float(), expected[k].float()) for k in KEYS)
    one = VideoDetector(model.detector, model.linker, min_score=0.0, batch_size=1)([clip])[0][0]
    assert all(torch.allclose(one[k].float(), preds[k].float(), atol=1e-4) for k in KEYS)
    model.train()
    preds, losses = model([clip], [target], predict=False)
    assert preds is None
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in model.parameters())


@pytest.mark.slow
def test_overfits_one_clip() -> None:
    torch.manual_seed(0)
    clip, target = ShapesVideo("train", size=64, num_images=1, length=2)[0]
    model = video_detector(
        "fasterrcnn_narrow_fpn",
        width=8,
        min_size=64,
        max_size=64,
        representation_size=128,
        box_batch_size_per_image=64,
    )
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    first = None
    for _ in range(30):
        _, losses = model([clip], [target], predict=False)
        loss = sum(losses.values())
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.35 * first, (first, float(loss.detach()))


def test_bad_input() -> None:
    model = VideoDetector(BrightBoxes())
    clip, _, _ = moving_squares(2)
    for bad, match in [
        ([clip[0]], r"clip must be a Tensor\[T, 3, H, W\]"),
        ([clip[:0]], "with T >= 1"),
        ([clip[:, :1]], r"clip must be a Tensor\[T, 3, H, W\]"),
        ([(clip * 255).to(torch.uint8)], "clip must be float"),
        (clip, r"clips must be a list of Tensor\[T, 3, H, W\] or a Tensor\[B, T, 3, H, W\], got shape"),
    ]:
        with pytest.raises(ValueError, match=match):
            model(bad)
    with pytest.raises(ValueError, match="predict=False without targets"):
        model([clip], predict=False)
    with pytest.raises(ValueError, match="targets must be a list of one dict per clip"):
        model([clip], {"tracks": torch.zeros(1, 2, 4), "labels": torch.ones(1, dtype=torch.int64)})
    labels = torch.ones(1, dtype=torch.int64)
    for target, match in [
        ({"tracks": torch.zeros(1, 2, 4)}, "a dict with 'tracks'"),
        ({"tracks": torch.zeros(1, 3, 4), "labels": labels}, r"Tensor\[M, 2, 4\]"),
        ({"tracks": torch.zeros(1, 2, 4, dtype=torch.int64), "labels": labels}, "floating point"),
        ({"tracks": torch.zeros(1, 2, 4), "labels": torch.ones(2, dtype=torch.int64)}, r"int Tensor\[1\]"),
        ({"tracks": torch.zeros(1, 2, 4), "labels": labels, "visible": torch.ones(1, 2)}, "bool Tensor"),
        (
            {
                "tracks": torch.full((1, 2, 4), math.nan),
                "labels": labels,
                "visible": torch.ones(1, 2, dtype=torch.bool),
            },
            "NaN boxes where 'visible'",
        ),
    ]:
        with pytest.raises(ValueError, match=match):
            model([clip], [target])
    with pytest.raises(ValueError, match="unknown linker 'hungarian'"):
        make_linker("hungarian")
    with pytest.raises(ValueError, match="is a classification model, not a detector"):
        video_detector("cnn_digits")
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        VideoDetector(BrightBoxes(), batch_size=0)
    with pytest.raises(ValueError, match="linker must be a callable"):
        VideoDetector(BrightBoxes(), "dp")  # type: ignore[arg-type]
