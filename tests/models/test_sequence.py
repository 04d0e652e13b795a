"""Sequence models: every builder from the registry, forward/backward, shapes, lengths, overfitting.

Tiny configs and synthetic inputs only (no data files), so nothing here skips.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import Tensor

import structpred.models.sequence  # noqa: F401  (registers the builders)
from structpred.engine.trainer import TrainConfig, Trainer
from structpred.metrics.sequence import BitsPerCharacter, RegressionError
from structpred.models import get_model, list_models, model_info
from structpred.models.sequence import CharLM, SequenceClassifier, SequenceRegressor

VOCAB = "\n !',.?abcdefghijklmnopqrstuvwxyz"
BUILDERS = ["lstm_charlm", "lstm_vowels", "rnn_vowels", "lstm_sunspots", "lstm_adding", "rnn_adding"]
TASKS = {"lstm_charlm": "language_model", "lstm_vowels": "classification", "rnn_vowels": "classification",
         "lstm_sunspots": "regression", "lstm_adding": "regression", "rnn_adding": "regression"}


def tiny(name: str) -> torch.nn.Module:
    kwargs: dict[str, object] = {"hidden_size": 16}
    if name == "lstm_charlm":
        kwargs.update(vocab=VOCAB, embed_dim=8)
    return get_model(name, **kwargs)


def batch_for(name: str, B: int = 4, seed: int = 0) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    """Synthetic items in each model's data format (variable lengths for the sequence models)."""
    g = torch.Generator().manual_seed(seed)
    if name == "lstm_charlm":
        ids = torch.randint(0, len(VOCAB), (B, 13), generator=g)
        return [w[:-1] for w in ids], [{"labels": w[1:]} for w in ids]
    F = {"lstm_vowels": 12, "rnn_vowels": 12, "lstm_sunspots": 1}.get(name, 2)
    lengths = torch.randint(5, 12, (B,), generator=g).tolist()
    inputs = [torch.randn(T, F, generator=g) for T in lengths]
    if name.endswith("vowels"):
        return inputs, [{"labels": torch.tensor(b % 9)} for b in range(B)]
    return inputs, [{"value": torch.randn(1, generator=g)} for _ in range(B)]


def test_builders_are_registered_with_their_task() -> None:
    assert set(BUILDERS) <= set(list_models())
    classes = {
        "language_model": CharLM, "classification": SequenceClassifier, "regression": SequenceRegressor
    }
    for name in BUILDERS:
        assert model_info(name).task == TASKS[name] and name in list_models(task=TASKS[name])
        assert isinstance(tiny(name), classes[TASKS[name]])


@pytest.mark.parametrize("name", BUILDERS)
def test_forward_backward_keys_shapes(name: str) -> None:
    torch.manual_seed(0)
    model = tiny(name).train()
    inputs, targets = batch_for(name)
    preds, losses = model(inputs, targets)
    assert losses and all(k.startswith("loss_") for k in losses)
    loss = sum(losses.values())
    assert isinstance(loss, Tensor) and loss.dim() == 0 and bool(torch.isfinite(loss))
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), pname
    assert len(preds) == len(inputs)
    if name == "lstm_charlm":
        assert set(preds[0]) == {"token_logits"} and preds[0]["token_logits"].shape == (12, len(VOCAB))
    elif name.endswith("vowels"):
        assert set(preds[0]) == {"class_logits", "scores", "labels"}
        assert preds[0]["class_logits"].shape == (9,) and preds[0]["labels"].dtype == torch.int64
        assert 0 <= float(preds[0]["scores"].detach()) <= 1
    else:
        assert preds[0]["value"].shape == (1,)
    model.eval()
    with torch.no_grad():
        preds_eval, losses_eval = model(inputs, targets)  # eval with targets: both
        assert losses_eval and len(preds_eval) == len(inputs)
        assert model(inputs)[1] == {}


@pytest.mark.parametrize("name", ["lstm_vowels", "rnn_adding"])
def test_list_input_equals_padded_input_with_lengths(name: str) -> None:
    torch.manual_seed(0)
    model = tiny(name).eval()
    inputs, _ = batch_for(name)
    lengths = torch.tensor([x.shape[0] for x in inputs])
    padded = torch.full((len(inputs), int(lengths.max()), inputs[0].shape[1]), 7.0)  # junk past the ends
    for b, x in enumerate(inputs):
        padded[b, : x.shape[0]] = x
    key = "class_logits" if name.endswith("vowels") else "value"
    with torch.no_grad():
        from_list = torch.stack([p[key] for p in model(inputs)[0]])
        from_padded = torch.stack([p[key] for p in model(padded, lengths=lengths)[0]])
        one_by_one = torch.stack([model([x])[0][0][key] for x in inputs])
    torch.testing.assert_close(from_list, from_padded)
    torch.testing.assert_close(from_list, one_by_one)


def test_lstm_gate_bias_initialisation() -> None:
    plain = get_model("lstm_adding", hidden_size=8, num_layers=2, chrono=0)
    chrono = get_model("lstm_adding", hidden_size=8, num_layers=2)  # chrono=150 by default
    vowels = get_model("lstm_vowels", hidden_size=8)
    assert isinstance(plain, SequenceRegressor) and isinstance(chrono, SequenceRegressor)
    for layer in range(2):
        b_ih, b_hh = getattr(plain.rnn, f"bias_ih_l{layer}"), getattr(plain.rnn, f"bias_hh_l{layer}")
        assert bool((b_ih[8:16] == 1).all()) and bool((b_hh[:16] == 0).all())  # forget bias 1 in total
        b_ih, b_hh = getattr(chrono.rnn, f"bias_ih_l{layer}"), getattr(chrono.rnn, f"bias_hh_l{layer}")
        b_f = b_ih[8:16]
        assert bool((b_f >= 0).all() and (b_f <= math.log(149)).all()) and b_f.std() > 0
        assert torch.equal(b_ih[:8], -b_f) and bool((b_hh[:16] == 0).all())
    assert bool((vowels.rnn.bias_ih_l0[8:16] == 1).all())
    with pytest.raises(ValueError, match="chrono"):
        SequenceRegressor(structpred.models.sequence.SequenceConfig(mode="tanh", chrono=10))


@pytest.mark.parametrize("name", BUILDERS)
def test_seeded_overfit_on_a_tiny_batch(name: str) -> None:
    torch.manual_seed(0)
    model = tiny(name).train()
    inputs, targets = batch_for(name, B=6, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    first = None
    for _ in range(80):
        loss = sum(model(inputs, targets)[1].values())
        assert isinstance(loss, Tensor)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.2 * first, (first, float(loss.detach()))


def test_sample_length_vocab_and_determinism() -> None:
    torch.manual_seed(0)
    model = tiny("lstm_charlm")
    assert isinstance(model, CharLM)
    text = model.sample("to be", 37, generator=torch.Generator().manual_seed(1))
    assert isinstance(text, str) and len(text) == 37 and set(text) <= set(VOCAB)
    assert text == model.sample("to be", 37, generator=torch.Generator().manual_seed(1))
    assert model.sample("to be", 20, temperature=0) == model.sample("to be", 20, temperature=0)
    assert len(model.sample("", 5)) == 5 and model.sample("a", 0) == ""
    assert model.training  # sample() restores the mode
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.sample("TO BE", 5)
    with pytest.raises(ValueError):
        model.sample("a", -1)


def test_bad_input_errors() -> None:
    with pytest.raises(ValueError, match="vocabulary"):
        get_model("lstm_charlm")  # no vocab
    lm = tiny("lstm_charlm")
    with pytest.raises(ValueError, match="ids must lie"):
        lm([torch.tensor([0, len(VOCAB)])])
    with pytest.raises(ValueError, match="same length"):
        lm([torch.zeros(3, dtype=torch.int64), torch.zeros(4, dtype=torch.int64)])
    with pytest.raises(ValueError, match="targets"):
        lm([torch.zeros(3, dtype=torch.int64)], [])
    clf = tiny("lstm_vowels")
    assert isinstance(clf, SequenceClassifier)
    x = [torch.randn(5, 12)]
    with pytest.raises(ValueError, match="labels must be in"):
        clf(x, [{"labels": torch.tensor(9)}])
    with pytest.raises(ValueError, match="12 features"):
        clf([torch.randn(5, 3)])
    with pytest.raises(ValueError, match="unlike inputs"):
        clf([torch.randn(5, 12), torch.randn(5, 11)])
    with pytest.raises(ValueError, match="lengths="):
        clf(x, lengths=torch.tensor([5]))
    reg = tiny("lstm_sunspots")
    with pytest.raises(ValueError, match="target values"):
        reg([torch.randn(5, 1)], [{"value": torch.zeros(2)}])
    with pytest.raises(ValueError, match="mode"):
        SequenceClassifier(structpred.models.sequence.SequenceConfig(mode="gru"))


def test_trains_through_the_engine(tmp_path: Path) -> None:
    """Trainer + list collate + metrics: a char LM and a regressor each run an epoch and evaluate."""
    torch.manual_seed(0)
    ids = torch.randint(0, len(VOCAB), (16, 17))
    lm_data = [(w[:-1], {"labels": w[1:]}) for w in ids]
    config = TrainConfig(epochs=1, batch_size=4, lr=0.01, optimizer="adamw", progress=False, log_every=100)
    trainer = Trainer(tiny("lstm_charlm"), lm_data, lm_data, config, tmp_path / "lm", metric=BitsPerCharacter)
    metrics = trainer.fit()
    assert metrics["bpc"] == pytest.approx(metrics["loss_lm"] / math.log(2), rel=1e-4)
    inputs, targets = batch_for("lstm_adding", B=8)
    reg_data = list(zip(inputs, targets, strict=True))
    trainer = Trainer(tiny("lstm_adding"), reg_data, reg_data, config, tmp_path / "reg",
                      metric=lambda: RegressionError(2.0))
    metrics = trainer.fit()
    assert metrics["rmse"] == pytest.approx(2.0 * math.sqrt(metrics["loss_reg"]), rel=1e-4)
