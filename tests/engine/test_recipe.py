"""The ablation scripts' shared training recipe."""

from __future__ import annotations

from structpred.engine.recipe import ABLATION_DEFAULTS, ablation_config


def test_ablation_config_has_the_shared_defaults_and_takes_overrides() -> None:
    config = ablation_config(epochs=3, lr=2e-3, log_every=50)
    for key, value in ABLATION_DEFAULTS.items():
        assert getattr(config, key) == (50 if key == "log_every" else value)
    assert (config.epochs, config.lr) == (3, 2e-3)
