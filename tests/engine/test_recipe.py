"""The ablation scripts' shared training recipe."""

from __future__ import annotations

import math

import pytest

from structpred.engine.recipe import ABLATION_DEFAULTS, RULES, TrainConfig, ablation_config, config_problem


def test_ablation_config_has_the_shared_defaults_and_takes_overrides() -> None:
    config = ablation_config(epochs=3, lr=2e-3, log_every=50)
    for key, value in ABLATION_DEFAULTS.items():
        assert getattr(config, key) == (50 if key == "log_every" else value)
    assert (config.epochs, config.lr) == (3, 2e-3)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("lr", math.inf),
        ("lr", math.nan),
        ("lr", -0.01),
        ("lr", 0),
        ("clip_grad_norm", -1.0),
        ("clip_grad_norm", math.nan),
        ("epochs", 0),
        ("epochs", -2),
        ("epochs", True),  # a bool is not a count
        ("batch_size", 0),
        ("num_workers", -1),
        ("warmup_steps", -1),
        ("momentum", 1.5),
        ("weight_decay", math.inf),
        ("gamma", 0.0),
        ("milestones", (0.5, 2.0)),
        ("seed", -1),
        ("seed", 2**32),
        ("log_every", 0),
        ("keep_last", -1),
        ("image_size", 8),
        ("num_classes", 0),
        ("schedule", "linear"),
    ],
)
def test_a_bad_setting_is_refused_in_one_line(setting: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"^{setting} must be .*, got ") as err:
        TrainConfig(**{setting: value})  # type: ignore[arg-type]
    assert "\n" not in str(err.value)
    assert config_problem(setting, value) == str(err.value)[len(setting) + 1 :]


def test_every_field_has_a_rule_and_the_defaults_pass() -> None:
    assert set(RULES) == set(TrainConfig.__dataclass_fields__)
    TrainConfig()
    assert config_problem("a_field_of_the_future", object()) is None  # old or new checkpoints
