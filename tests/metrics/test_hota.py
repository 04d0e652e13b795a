"""HOTA against trackeval's ``HOTA.eval_sequence``: the TUD sequences, hand-made and random cases."""

from __future__ import annotations

import numpy as np
import pytest

from structpred.data.formats.mot import read_mot
from structpred.metrics.hota import HOTA_ALPHAS, hota_metrics, similarity_xywh
from structpred.metrics.mot import mot_metrics
from tests.metrics.test_mot import HANDMADE, MM_DATA, _crowded, trackeval_hota

from trackeval.datasets._base_dataset import _BaseDataset  # type: ignore[import-untyped]  # isort: skip

KEYS = ["hota", "deta", "assa", "loca", "detre", "detpr", "assre", "asspr"]


def _same(gt: object, hyp: object) -> dict[str, float]:
    ours = mot_metrics(gt, hyp)  # type: ignore[arg-type]
    ref = trackeval_hota(gt, hyp)
    for key in KEYS:
        assert ours[key] == pytest.approx(ref[key], abs=1e-6), key
    return ours


@pytest.mark.parametrize("seq", ["TUD-Campus", "TUD-Stadtmitte"])
def test_tud_equals_trackeval(seq: str) -> None:
    gt, hyp = MM_DATA / seq / "gt.txt", MM_DATA / seq / "test.txt"
    ours = _same(gt, hyp)
    assert 0.3 < ours["hota"] < 0.5  # TUD-Campus 0.3914, TUD-Stadtmitte 0.3978
    alone = hota_metrics(read_mot(gt), read_mot(hyp))  # its own IoU pass, not mot_metrics' shared one
    assert alone == {k: ours[k] for k in alone}


@pytest.mark.parametrize("case", sorted(HANDMADE))
def test_handmade_equals_trackeval(case: str) -> None:
    _same(*HANDMADE[case])


@pytest.mark.parametrize("seed", range(6))
def test_random_sequences_equal_trackeval(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    _same(*_crowded(rng, frames=25, objects=int(rng.integers(2, 12)), grid=seed % 2 == 1))


def test_perfect_tracker_and_alphas() -> None:
    gt = read_mot(MM_DATA / "TUD-Campus" / "gt.txt")
    relabelled = np.c_[gt.frames, gt.ids + 50, gt.boxes]  # other ids, same boxes: still perfect
    ours = hota_metrics(gt, read_mot(relabelled))
    assert ours["hota"] == ours["deta"] == ours["assa"] == ours["loca"] == pytest.approx(1.0)
    assert (
        len(HOTA_ALPHAS) == 19
        and HOTA_ALPHAS[0] == pytest.approx(0.05)
        and HOTA_ALPHAS[-1] == pytest.approx(0.95)
    )


def test_one_identity_split_in_two_halves() -> None:
    """One object over 10 frames, tracked perfectly by id 1 then id 2: DetA 1, AssA 1/2 (each
    true positive's identities share 5 of 10 + 5 - 5 detections)."""
    box = (0.0, 0.0, 10.0, 10.0)
    gt = np.array([(f, 1, *box) for f in range(10)])
    hyp = np.array([(f, 1 + (f >= 5), *box) for f in range(10)])
    ours = _same(gt, hyp)
    assert (ours["deta"], ours["assa"]) == (pytest.approx(1.0), pytest.approx(0.5))
    assert ours["hota"] == pytest.approx(np.sqrt(0.5))


def test_similarity_equals_trackeval_ious() -> None:
    rng = np.random.default_rng(3)
    a = np.c_[rng.uniform(0, 50, (6, 2)), rng.uniform(0, 30, (6, 2))]
    b = np.c_[rng.uniform(0, 50, (4, 2)), rng.uniform(0, 30, (4, 2))]
    a[1, 3] = 0.0  # an empty box
    ref = _BaseDataset._calculate_box_ious(a.copy(), b.copy(), box_format="xywh")
    np.testing.assert_allclose(similarity_xywh(a, b), ref, rtol=0, atol=1e-15)
