"""The weight EMA (:mod:`structpred.engine.ema`): the update against a naive reference (ramp,
buffers), the spec's parsing, the checkpoint record's validation, and which weights the
trainer's validation and ``load_model`` use."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from structpred.engine import TrainConfig
from structpred.engine import checkpoint as ckpt
from structpred.engine.ema import (
    ModelEMA,
    canonical_ema,
    choose_weights,
    ema_decay,
    ema_record_problem,
    ema_state,
    parse_ema,
)
from structpred.engine.run import evaluate, load_model, train
from structpred.models.weights.load import MODEL_PREFIX

DIGITS = {"width": 4, "input_size": 8}  # 1,746 parameters; 8 px digits: ~10 ms a step


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))


def _step(model: nn.Module, opt: torch.optim.Optimizer, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(4, 3, 6, 6, generator=g)
    loss = model(x).square().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_update_matches_a_naive_reference_with_the_ramp_and_buffers() -> None:
    model = _net()
    model(torch.rand(2, 3, 6, 6))  # materialise the lazy layer
    ema = ModelEMA(model, decay=0.9, tau=3.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    reference = {k: v.detach().double().clone() for k, v in model.state_dict().items()}
    for u in range(1, 6):
        model.train()
        _step(model, opt, u)
        d = 0.9 * (1 - math.exp(-u / 3.0))  # ultralytics' ramp, by hand
        assert ema.current_decay() == pytest.approx(d, rel=1e-12)
        ema.update(model)
        for k, v in model.state_dict().items():
            if v.is_floating_point():  # weights and running statistics: averaged
                reference[k] = d * reference[k] + (1 - d) * v.double()
            else:  # num_batches_tracked: copied
                reference[k] = v.double().clone()
    assert ema.updates == 5
    state = ema.module.state_dict()
    for k, v in reference.items():
        torch.testing.assert_close(state[k].double(), v, rtol=1e-6, atol=1e-7, msg=k)
    raw = model.state_dict()
    assert int(state["1.num_batches_tracked"]) == int(raw["1.num_batches_tracked"]) == 6  # copied
    assert not torch.equal(state["1.running_mean"], raw["1.running_mean"])  # averaged, not copied
    assert not torch.equal(state["0.weight"], raw["0.weight"])
    assert not ema.module.training and not any(p.requires_grad for p in ema.module.parameters())


def test_ramp_and_no_ramp() -> None:
    assert ema_decay(0.9999, 2000, 1) == pytest.approx(0.9999 * (1 - math.exp(-1 / 2000)))
    assert ema_decay(0.9999, 2000, 10**6) == pytest.approx(0.9999)
    assert ema_decay(0.99, 0, 1) == 0.99  # tau 0: the full decay from the first step


def test_tau_zero_keeps_the_start_and_tied_weights_move_once() -> None:
    first, second = nn.Linear(3, 3, bias=False), nn.Linear(3, 3, bias=False)
    second.weight = first.weight  # one tensor under two names
    ema = ModelEMA(nn.Sequential(first, second), decay=0.5, tau=0)
    start = first.weight.detach().clone()
    with torch.no_grad():
        first.weight.add_(1.0)
    ema.update(nn.Sequential(first, second))
    averaged = ema.module.state_dict()
    torch.testing.assert_close(averaged["0.weight"], start + 0.5)  # once, not twice (0.75)
    assert averaged["0.weight"].data_ptr() == averaged["1.weight"].data_ptr()


def test_the_ema_follows_the_models_dtype_and_device() -> None:
    model = nn.Linear(2, 2).to(torch.float64)
    ema = ModelEMA(model, decay=0.5, tau=0)
    ema.update(model)
    assert ema.module.weight.dtype == torch.float64


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ("1", "the decay must be in (0, 1), got 1"),
        ("0", "the decay must be in (0, 1), got 0"),
        ("fast", "the decay 'fast' is not a number"),
        ("0.99,tau=-3", "tau must be a finite number of steps >= 0, got -3"),
        ("0.99,tau=x", "tau='x' is not a number"),
        ("0.99,warmup=3", "unknown part 'warmup=3'"),
        ("", "expected DECAY[,tau=N]"),
    ],
)
def test_bad_specs_name_the_flag_and_the_part(spec: str, error: str) -> None:
    with pytest.raises(ValueError, match=r"^--ema ") as caught:
        parse_ema(spec)
    assert error in str(caught.value)


def test_canonical_spec_and_config() -> None:
    assert canonical_ema("0.999") == "0.999,tau=2000"
    assert canonical_ema(" 0.99 , tau=500 ") == "0.99,tau=500"
    assert canonical_ema("none") is None and canonical_ema(None) is None
    assert TrainConfig(ema="0.9990").ema == "0.999,tau=2000"
    with pytest.raises(ValueError, match="ema must be a weight EMA spec"):
        TrainConfig(ema="2")


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ([], "ema must be a JSON object"),
        ({"decay": 0.9, "tau": 1, "updates": -1}, "ema.updates must be an int >= 0"),
        ({"decay": 1.5, "tau": 1, "updates": 1}, "ema.decay must be a number in (0, 1)"),
        ({"decay": 0.9, "tau": float("nan"), "updates": 1}, "ema.tau must be a finite number"),
        ({"decay": 0.9, "tau": 10**400, "updates": 1}, "ema.tau must be a finite number"),
    ],
)
def test_a_bad_checkpoint_record_is_refused(record: object, problem: str) -> None:
    assert problem in str(ema_record_problem(record))
    assert ema_record_problem({"decay": 0.9, "tau": 0, "updates": 0}) is None


def _train(out: Path, ema: str | None = "0.9,tau=5", epochs: int = 2) -> None:
    config = TrainConfig(
        epochs=epochs, batch_size=400, lr=0.05, progress=False, keep_last=0, log_every=1000, seed=3,
        ema=ema, device="cpu",
    )  # fmt: skip
    train("digits_cnn", "digits", config, out, model_kwargs=DIGITS, data_kwargs={"size": 8})


def test_checkpoints_hold_both_and_eval_uses_the_ema(tmp_path: Path) -> None:
    _train(tmp_path)
    tensors, meta = ckpt.load_checkpoint(tmp_path)
    assert meta["ema"] == {"decay": 0.9, "tau": 5.0, "updates": 6}  # 3 steps an epoch, 2 epochs
    raw, averaged = ckpt.model_state(tensors), ema_state(tensors)
    assert raw.keys() == averaged.keys() and not torch.equal(raw["head.weight"], averaged["head.weight"])
    ema_model, _ = load_model(tmp_path)
    raw_model, _ = load_model(tmp_path, raw=True)
    assert torch.equal(ema_model.state_dict()["head.weight"], averaged["head.weight"])
    assert torch.equal(raw_model.state_dict()["head.weight"], raw["head.weight"])
    # the validation figures recorded during training are the EMA's: eval gives them again
    recorded = meta["metrics"]["loss"]
    assert evaluate(tmp_path)["loss"] == pytest.approx(recorded, rel=1e-6)
    assert evaluate(tmp_path, raw=True)["loss"] != pytest.approx(recorded, rel=1e-6)
    chosen, line = choose_weights(tensors, meta)
    assert line is not None and line.startswith("weights: the EMA (decay 0.9, tau 5.0, 6 updates)")
    assert torch.equal(chosen[f"{MODEL_PREFIX}head.weight"], averaged["head.weight"])


def test_without_ema_nothing_changes(tmp_path: Path) -> None:
    _train(tmp_path, ema=None, epochs=1)
    tensors, meta = ckpt.load_checkpoint(tmp_path)
    assert "ema" not in meta and not ema_state(tensors)
    assert choose_weights(tensors, meta) == (tensors, None)
