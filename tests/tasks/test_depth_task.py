"""The two depth tasks' contracts: calibration parsing, prediction checks, sample batches, --calib."""

from __future__ import annotations

import math

import pytest
import torch

from structpred.cli import main
from structpred.tasks import get_task
from structpred.tasks.base import check_input
from structpred.tasks.depth import check_calibration

TASKS = ("stereo_disparity", "monocular_depth")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ((994.978, 0.193001, 31.086), (994.978, 0.193001, 31.086)),
        ([64, 0.1, 0], (64.0, 0.1, 0.0)),
        ("994.978,0.193001,31.086", (994.978, 0.193001, 31.086)),
        ("64, 0.1", (64.0, 0.1, 0.0)),  # doffs defaults to 0
    ],
)
def test_calibration_is_parsed_and_checked(given: object, expected: tuple[float, float, float]) -> None:
    got = check_calibration(given)
    assert all(math.isclose(a, b) for a, b in zip(got, expected, strict=True))
    assert all(isinstance(v, float) for v in got)


@pytest.mark.parametrize(
    ("given", "match"),
    [
        ("a,b", "FOCAL,BASELINE"),
        ("64", "expected"),
        ("1,2,3,4", "expected"),
        ((0.0, 0.1, 0.0), "focal > 0"),
        ((64.0, -0.1, 0.0), "baseline > 0"),
        ((64.0, 0.1, -1.0), "doffs >= 0"),
        ("nan,0.1", "finite"),
        ((64.0, float("inf"), 0.0), "finite"),
        ((64.0, "x", 0.0), "numbers"),
        (64.0, "expected"),
    ],
)
def test_bad_calibration_is_one_valueerror(given: object, match: str) -> None:
    with pytest.raises(ValueError, match=match) as err:
        check_calibration(given, where="--calib")
    assert "\n" not in str(err.value) and str(err.value).startswith("--calib")


@pytest.mark.parametrize("name", TASKS)
def test_prediction_contract_accepts_one_disparity_map_and_refuses_the_rest(name: str) -> None:
    task = get_task(name)
    task.check_predictions({"disparity": torch.zeros(2, 1, 8, 16)}, 2)
    bad = [
        [{"disparity": torch.zeros(1, 8, 16)}] * 2,  # a list of per-item dicts
        {"disparity": torch.zeros(2, 2, 8, 16)},  # two channels
        {"disparity": torch.zeros(3, 1, 8, 16)},  # wrong batch
        {"disparity": torch.zeros(2, 1, 8, 16, dtype=torch.int64)},
        {"disparity": torch.zeros(2, 1, 8, 16), "depth": torch.zeros(2, 1, 8, 16)},  # one key only
    ]
    for predictions in bad:
        with pytest.raises(AssertionError):
            task.check_predictions(predictions, 2)


@pytest.mark.parametrize("name", TASKS)
def test_sample_batch_is_pairs_with_evaluable_targets(name: str) -> None:
    task = get_task(name)
    assert task.inputs == "pair" and task.headline.higher_is_better is False
    pairs, targets = task.sample_batch(torch.nn.Identity(), batch_size=3, seed=1)
    assert len(pairs) == len(targets) == 3
    for i, (pair, target) in enumerate(zip(pairs, targets, strict=True)):
        check_input(pair, "pair", f"item {i}")
        H, W = pair.shape[-2:]
        assert target["disparity"].shape == (1, H, W) and target["valid"].shape == (H, W)
        assert float(target["focal"]) > 0 and float(target["baseline"]) > 0
    again, _ = task.sample_batch(torch.nn.Identity(), batch_size=3, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(pairs, again, strict=True))


def test_self_supervised_task_needs_no_target_key_but_stereo_needs_disparity() -> None:
    assert get_task("monocular_depth").required_target_keys({}) == []
    assert get_task("stereo_disparity").required_target_keys({}) == ["disparity"]


def test_cli_bad_calib_is_one_line_exit_2_before_anything_loads(tmp_path, capsys) -> None:
    image = tmp_path / "left.png"
    image.write_bytes(b"not read")
    code = main(["predict", "--checkpoint", str(tmp_path / "missing"), str(image), "--calib", "994,abc"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "--calib" in err and "FOCAL,BASELINE" in err
