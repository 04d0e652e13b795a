"""SINT+'s box refinement in the model: it reduces the error of jittered boxes on a clean frame,
it is deterministic, ``track`` uses it only with ``config.refine``, and bad input is refused."""

from __future__ import annotations

import pytest
import torch

from structpred.heads.sint_refine import refine_samples
from structpred.models.registry import get_model
from structpred.models.sint import SINT, radial_candidates

H, W = 72, 96
BOX = torch.tensor([30.0, 20.0, 54.0, 38.0])  # 24 x 18 px


def _model(**kw: object) -> SINT:
    torch.manual_seed(0)
    kw = {"num_radii": 3, "num_angles": 6, "refine_samples": 96, **kw}
    return get_model("sint_narrow", **kw).eval()  # type: ignore[return-value]


def _frame(shift: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """A grey frame with a textured target under ``BOX`` moved by ``shift`` (dx, dy) px."""
    frame = torch.full((3, H, W), 0.25)
    tex = torch.rand(3, 18, 24, generator=torch.Generator().manual_seed(1))
    x, y = 30 + shift[0], 20 + shift[1]
    frame[:, y : y + 18, x : x + 24] = tex
    return frame


def test_refinement_reduces_the_error_of_jittered_boxes_on_a_clean_frame() -> None:
    model = _model(refine_lambda=0.1)
    frame = _frame()
    reg = model.fit_refiner(frame, BOX)
    test = refine_samples(BOX, 120, (H, W), torch.Generator().manual_seed(7))[1:]  # other draws
    with torch.no_grad():
        emb = model.embed(model.features(frame[None]), torch.cat([torch.zeros(len(test), 1), test], 1))
    refined = reg.apply(emb, test)
    before, after = (test - BOX).abs().mean(), (refined - BOX).abs().mean()
    assert float(after) < 0.5 * float(before), (float(before), float(after))


def test_fit_and_track_are_deterministic_and_refine_only_when_asked() -> None:
    frames = torch.stack([_frame((2 * t, t)) for t in range(3)])  # (3, 3, H, W)
    plain, refined = _model(), _model(refine=True)
    r1, r2 = refined.fit_refiner(frames[0], BOX), refined.fit_refiner(frames[0], BOX)
    assert torch.equal(r1.weight, r2.weight) and torch.equal(r1.bias, r2.bias)
    a, b = refined.track(frames, BOX), refined.track(frames, BOX)
    assert torch.equal(a, b) and a.shape == (3, 4) and torch.equal(a[0], BOX)
    base = plain.track(frames, BOX)
    # each refined box is the refiner applied to that frame's best candidate (after its own history)
    with torch.no_grad():
        query = refined.start(frames[0], BOX)
        feats = refined.features(frames[1:2])
        stepped = refined.step(feats, 0, BOX, query, (H, W), r1)
        assert torch.equal(refined.step(feats, 0, BOX, query, (H, W)), base[1])
        c = refined.config
        cands = radial_candidates(BOX, (H, W), c.num_radii, c.num_angles, c.search_radius, c.scales)
        emb = refined.embed(feats, torch.cat([torch.zeros(len(cands), 1), cands], 1))
        best = int((emb @ query[0]).argmax())
        want = r1.apply(emb[best : best + 1], cands[best : best + 1])[0]
    torch.testing.assert_close(stepped, want)
    torch.testing.assert_close(a[1], stepped)
    assert not torch.equal(a, base)  # the regressors moved something


def test_refined_boxes_stay_in_the_frame() -> None:
    model = _model(refine=True)
    corner = torch.tensor([0.0, 0.0, 20.0, 16.0])
    frames = torch.rand(3, 3, 40, 48, generator=torch.Generator().manual_seed(4))
    boxes = model.track(frames, corner)
    assert bool((boxes[:, :2] >= 0).all() & (boxes[:, 2] <= 48).all() & (boxes[:, 3] <= 40).all())
    assert bool(((boxes[:, 2:] - boxes[:, :2]) >= 1).all())


def test_bad_first_box_and_config_are_refused() -> None:
    model = _model(refine=True)
    frames = torch.stack([_frame(), _frame((1, 1))])
    with pytest.raises(ValueError, match="degenerate"):
        model.track(frames, torch.tensor([30.0, 20.0, 30.5, 38.0]))  # 0.5 px wide
    with pytest.raises(ValueError, match="outside"):
        model.fit_refiner(frames[0], torch.tensor([200.0, 20.0, 230.0, 38.0]))
    with pytest.raises(ValueError, match="refine_lambda"):
        get_model("sint_narrow", refine_lambda=0.0)
    with pytest.raises(ValueError, match="refine_samples"):
        get_model("sint_narrow", refine_samples=2)
