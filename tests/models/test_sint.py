"""SINT: embeddings, radial candidates, tracking, the forward contract, a seeded overfit."""

from __future__ import annotations

import pytest
import torch

from structpred.models.registry import get_model, model_info
from structpred.models.sint import SINT, SintConfig, radial_candidates
from structpred.tasks.tracking import SingleObjectTrackingTask

TASK = SingleObjectTrackingTask()
TINY = {"num_radii": 3, "num_angles": 6, "train_candidates": 8}


def _model(**kw: object) -> SINT:
    torch.manual_seed(0)
    return get_model("sint_narrow", **{**TINY, **kw})  # type: ignore[return-value]


def test_registered_for_the_tracking_task() -> None:
    assert model_info("sint_narrow").task == "single_object_tracking"


def test_embeddings_are_unit_and_independent_of_the_candidate_order() -> None:
    model = _model().eval()
    frames = torch.rand(2, 3, 32, 64)
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(7, 2, generator=g) * torch.tensor([40.0, 16.0])
    boxes = torch.cat([xy, xy + 4 + 10 * torch.rand(7, 2, generator=g)], 1)  # (7, 4)
    rois = torch.cat([torch.tensor([0, 1, 0, 1, 1, 0, 1.0])[:, None], boxes], 1)  # (7, 5)
    with torch.no_grad():
        feats = model.features(frames)
        emb = model.embed(feats, rois)
        perm = torch.randperm(7, generator=g)
        emb_perm = model.embed(feats, rois[perm])
        alone = torch.cat([model.embed(feats, rois[i : i + 1]) for i in range(7)])
    assert emb.shape == (7, (16 + 32) * 9)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(7))
    torch.testing.assert_close(emb_perm, emb[perm])
    torch.testing.assert_close(alone, emb)  # one box at a time = all at once


def test_shared_weights_query_and_search_are_one_branch() -> None:
    model = _model().eval()
    frame = torch.rand(3, 32, 64)
    box = torch.tensor([10.0, 8.0, 30.0, 24.0])
    with torch.no_grad():
        q = model.start(frame, box)
        s = model.embed(model.features(frame[None]), torch.cat([torch.zeros(1), box])[None])
    torch.testing.assert_close(q, s)


def test_radial_candidates_match_a_loop() -> None:
    box = torch.tensor([40.0, 30.0, 60.0, 40.0])  # w 20, h 10, centre (50, 35)
    got = radial_candidates(box, (100, 200), 2, 4, 1.0, (0.5, 1.0))
    want = []
    for s in (0.5, 1.0):
        for dx, dy in [(0, 0)] + [
            (r * c, r * n) for r in (10.0, 20.0) for c, n in ((1, 0), (0, 1), (-1, 0), (0, -1))
        ]:
            want.append([50 + dx - 10 * s, 35 + dy - 5 * s, 50 + dx + 10 * s, 35 + dy + 5 * s])
    torch.testing.assert_close(got, torch.tensor(want), atol=1e-4, rtol=0)
    edge = radial_candidates(torch.tensor([0.0, 0.0, 4.0, 4.0]), (8, 8), 2, 4, 2.0, (1.0,))
    assert bool((edge[:, :2] >= 0).all() & (edge[:, 2:] <= 8).all() & (edge[:, 2:] - edge[:, :2] >= 1).all())


def test_track_with_a_matching_oracle_follows_a_square() -> None:
    """With raw pixels as features (an injected backbone), tracking finds a moving white square."""

    class Pixels(torch.nn.Module):
        strides = {"c1": 1}

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"c1": x}

    model = SINT(SintConfig(layers=("c1",), pool_size=4, num_radii=6, num_angles=8, scales=(1.0,)), Pixels())
    T, H, W = 5, 40, 60
    frames = torch.zeros(T, 3, H, W)
    truth = []
    for t in range(T):
        x, y = 10 + 3 * t, 12 + t
        frames[t, :, y : y + 8, x : x + 8] = 1.0
        frames[t, 0, y : y + 4, x : x + 8] = 0.2  # not symmetric: one best alignment
        truth.append([x, y, x + 8, y + 8])
    boxes = model.track(frames, torch.tensor(truth[0], dtype=torch.float32))
    from structpred.ops.boxes import box_iou

    iou = box_iou(boxes, torch.tensor(truth, dtype=torch.float32)).diagonal()
    assert boxes.shape == (T, 4) and bool((iou > 0.6).all()), iou


def test_forward_contract_train_and_eval() -> None:
    model = _model()
    clips, targets = TASK.sample_batch(model, 2, seed=0)
    model.train()
    preds, losses = model(clips, targets)
    TASK.check_predictions(preds, 2)
    assert set(losses) == {"loss_contrastive"} and torch.isfinite(losses["loss_contrastive"])
    losses["loss_contrastive"].backward()
    model.eval()
    with torch.no_grad():
        preds, l1 = model(clips, targets)
        _, l2 = model(clips, targets, predict=False)
        only, none = model(torch.stack(clips))  # [B, T, 3, H, W] works too, no targets: centre box
    assert float(l1["loss_contrastive"]) == float(l2["loss_contrastive"])  # seeded in eval
    assert none == {} and only["boxes"].shape == (2, 4, 4)
    torch.testing.assert_close(preds["boxes"][:, 0], torch.stack([t["boxes"][0] for t in targets]))
    init = torch.tensor([[1.0, 2, 11, 12], [5, 5, 20, 20]])
    got, _ = model(clips, init_boxes=init)
    torch.testing.assert_close(got["boxes"][:, 0], init)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m, c, t: m(c, t[:1]), "1 targets for 2 clips"),
        (lambda m, c, t: m([c[0], c[1][:3]], t), r"clips\[1\].*differs"),
        (lambda m, c, t: m([c[0][0]]), r"clips\[0\] must be a float Tensor\[T, 3, H, W\]"),
        (lambda m, c, t: m([c[0] * float("nan")]), "NaN"),
        (lambda m, c, t: m(c, [{"boxes": torch.zeros(3, 4)}] * 2), r"targets\[0\]"),
        (lambda m, c, t: m(c, init_boxes=torch.zeros(3, 4)), "init_boxes"),
        (lambda m, c, t: m(c, predict=False), "asks for neither"),
        (lambda m, c, t: m.track(c[0], torch.tensor([70.0, 40, 90, 50])), "outside"),
        (lambda m, c, t: m.track(c[0], torch.tensor([5.0, 5, 5, 9])), "empty"),
        (lambda m, c, t: m.track(c[0], torch.tensor([5.0, 5, 9])), r"Tensor\[4\]"),
    ],
)
def test_bad_input_is_a_clear_value_error(call: object, match: str) -> None:
    model = _model().eval()
    clips, targets = TASK.sample_batch(model, 2, seed=0)
    with pytest.raises(ValueError, match=match):
        call(model, clips, targets)  # type: ignore[operator]


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="no layers"):
        get_model("sint_narrow", layers=("c9",))
    with pytest.raises(ValueError, match="margin"):
        get_model("sint_narrow", margin=0.0)


@pytest.mark.slow
def test_seeded_overfit_loss_falls() -> None:
    model = _model(train_candidates=6)
    clips, targets = TASK.sample_batch(model, 1, seed=3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    torch.manual_seed(0)
    first = None
    for _ in range(15):
        _, losses = model(clips, targets, predict=False)
        loss = losses["loss_contrastive"]
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        _, final = model(clips, targets, predict=False)
    assert float(final["loss_contrastive"]) < 0.65 * first, (first, float(final["loss_contrastive"]))
