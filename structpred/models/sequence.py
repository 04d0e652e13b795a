"""Recurrent models for sequence tasks: a character language model, sequence classifiers, regressors.

All run :mod:`structpred.layers.rnn`'s own RNN / LSTM (``batch_first``, ``lengths=``):

* :class:`CharLM` - embedding -> LSTM -> linear over the vocabulary (Karpathy's char-rnn);
  ``loss_lm`` is the mean next-character cross-entropy (nats); :meth:`CharLM.sample` writes text.
* :class:`SequenceClassifier` - RNN/LSTM over a variable-length sequence, the state at its last
  valid step -> the shared single-value classification head over K classes (``loss_cls``).
* :class:`SequenceRegressor` - the same encoder -> the shared regression head, O values (``loss_reg``).

Inputs are a list of ``[T_b, ...]`` tensors (what the engine's collate gives; lengths may differ and
are padded here, the lengths kept) or an already padded ``[B, T, ...]`` tensor with optional
``lengths=``. LSTMs start with forget-gate bias ``forget_bias`` (Gers et al. 2000: 1.0), or with
the *chrono* initialisation for dependencies up to ``chrono`` steps (Tallec & Ollivier 2018,
"Can recurrent neural networks warp time?"): per unit ``b_f = log(u)``, ``u ~ U[1, chrono - 1]``,
and input-gate bias ``b_i = -b_f`` - slow-forgetting units that write rarely.

Shape shorthand: B sequences, T steps (T_max of the batch), F input features, E embedding size,
H hidden size, L layers, V vocabulary size, K classes, O regression outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence

from ..heads.items import split_items
from ..heads.single_value import ClassificationHead, RegressionHead
from ..layers.rnn import LSTM, RNN
from .contract import check_request
from .registry import register_model

Targets = Sequence[dict[str, Tensor]]


def _batch(
    inputs: Sequence[Tensor] | Tensor, lengths: Tensor | None, name: str
) -> tuple[Tensor, Tensor | None]:
    """List of ``[T_b, *F]`` or ``[B, T, *F]`` -> ``([B, T, *F], lengths int64[B] or None = all T)``."""
    if isinstance(inputs, Tensor):
        if inputs.dim() < 2:
            raise ValueError(f"{name}: a batched input must be [B, T, ...], got {tuple(inputs.shape)}")
        return inputs, lengths
    if lengths is not None:
        raise ValueError(f"{name}: lengths= goes with a padded tensor; a list carries its own lengths")
    if len(inputs) == 0:
        raise ValueError(f"{name}: empty batch")
    for i, x in enumerate(inputs):
        if x.dim() < 1 or x.shape[0] == 0 or x.shape[1:] != inputs[0].shape[1:]:
            raise ValueError(f"{name}: inputs[{i}] has shape {tuple(x.shape)}, unlike inputs[0] "
                             f"{tuple(inputs[0].shape)} beyond the time axis (or it is empty)")
    lens = torch.tensor([x.shape[0] for x in inputs], dtype=torch.int64)
    padded = pad_sequence(list(inputs), batch_first=True)  # B x (T_b, *F) -> (B, T, *F)
    return padded, (None if bool((lens == lens[0]).all()) else lens)


def _recurrent(mode: str, input_size: int, hidden_size: int, num_layers: int, dropout: float,
               forget_bias: float, chrono: int = 0) -> RNN | LSTM:
    """Our ``LSTM`` (``mode="lstm"``) or ``RNN`` (``"tanh"`` / ``"relu"``), batch first.

    ``dropout`` acts between stacked layers only (as torch's), so it is passed on only if L > 1.
    """
    dropout = dropout if num_layers > 1 else 0.0
    if chrono and (mode != "lstm" or chrono < 3):
        raise ValueError(f"chrono initialisation needs an LSTM and chrono >= 3, got mode={mode!r}, {chrono}")
    if mode == "lstm":
        rnn: RNN | LSTM = LSTM(input_size, hidden_size, num_layers, batch_first=True, dropout=dropout)
        with torch.no_grad():
            H = hidden_size
            for layer in range(num_layers):  # gate blocks (i, f, g, o): i is [0, H), f is [H, 2H)
                b_ih, b_hh = getattr(rnn, f"bias_ih_l{layer}"), getattr(rnn, f"bias_hh_l{layer}")
                b_hh[: 2 * H] = 0.0
                if chrono:
                    b_ih[H : 2 * H] = torch.empty(H).uniform_(1.0, chrono - 1.0).log()
                    b_ih[:H] = -b_ih[H : 2 * H]
                else:
                    b_ih[H : 2 * H] = forget_bias
        return rnn
    if mode in ("tanh", "relu"):
        return RNN(input_size, hidden_size, num_layers, nonlinearity=mode, batch_first=True, dropout=dropout)
    raise ValueError(f"mode must be 'lstm', 'tanh' or 'relu', got {mode!r}")


def _last_state(h_n: Tensor) -> Tensor:
    """Final states ``(L, B, H)`` -> the last layer's ``(B, H)`` (at each sequence's last valid step)."""
    return h_n[-1]


# ------------------------------------------------------------------------------- char language model
@dataclass
class CharLMConfig:
    vocab: str = ""  # vocab[k] is the character of id k (the data set's ``vocab_chars``)
    embed_dim: int = 64
    hidden_size: int = 256
    num_layers: int = 1
    dropout: float = 0.0
    forget_bias: float = 1.0


class CharLM(nn.Module):
    """Character-level LSTM language model.

    ``forward(inputs, targets=None)``: ``inputs`` ids ``int64[T]`` per item (or ``[B, T]``); per item
    ``{"token_logits": [T, V]}`` for the character after each step; with targets (``{"labels": int64[T]}``)
    ``losses = {"loss_lm": mean cross-entropy in nats}``.
    """


    def __init__(self, config: CharLMConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or CharLMConfig()
        if len(c.vocab) < 2 or len(set(c.vocab)) != len(c.vocab):
            raise ValueError(f"CharLM needs a vocabulary of >= 2 distinct characters, got {c.vocab!r:.60}")
        V = len(c.vocab)
        self.embed = nn.Embedding(V, c.embed_dim)
        self.rnn = _recurrent("lstm", c.embed_dim, c.hidden_size, c.num_layers, c.dropout, c.forget_bias)
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(c.hidden_size, V)
        self._index = {ch: k for k, ch in enumerate(c.vocab)}

    @property
    def vocab_size(self) -> int:
        return len(self.config.vocab)

    def step(self, ids: Tensor, state: tuple[Tensor, Tensor] | None = None
             ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """``ids int64[B, T]``, ``state`` ``(h, c)`` each ``(L, B, H)`` -> ``(logits [B, T, V], state)``."""
        if ids.dtype != torch.int64 or ids.dim() != 2:
            raise ValueError(f"CharLM: ids must be int64 [B, T], got {ids.dtype} {tuple(ids.shape)}")
        # A data-dependent check: eager only (an exported program's Gather rejects bad ids itself).
        if not torch.compiler.is_exporting() and bool(((ids < 0) | (ids >= self.vocab_size)).any()):
            raise ValueError(f"CharLM: ids must lie in [0, {self.vocab_size})")
        out, state = self.rnn(self.embed(ids), state)  # (B, T, E) -> (B, T, H)
        assert isinstance(out, Tensor)
        return self.head(self.drop(out)), state  # (B, T, V)

    def forward(self, inputs: Sequence[Tensor] | Tensor, targets: Targets | None = None, *,
                predict: bool = True) -> tuple[list[dict[str, Tensor]] | None, dict[str, Tensor]]:
        check_request(targets is not None, predict, "CharLM")
        ids, lengths = _batch(inputs, None, "CharLM")
        if lengths is not None:
            raise ValueError("CharLM: all windows of a batch must have the same length")
        logits, _ = self.step(ids)  # (B, T, V)
        losses: dict[str, Tensor] = {}
        if targets is not None:
            if len(targets) != ids.shape[0]:
                raise ValueError(f"CharLM: {len(targets)} targets for {ids.shape[0]} windows")
            labels = torch.stack([t["labels"] for t in targets]).to(logits.device)  # (B, T)
            if labels.shape != ids.shape:
                raise ValueError(
                    f"CharLM: labels {tuple(labels.shape)} do not match inputs {tuple(ids.shape)}")
            losses["loss_lm"] = F.cross_entropy(logits.reshape(-1, self.vocab_size), labels.reshape(-1))
        return (split_items({"token_logits": logits}) if predict else None), losses

    @torch.no_grad()
    def sample(self, prefix: str, n: int, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> str:
        """The ``n`` characters that follow ``prefix``, each drawn from ``softmax(logits / temperature)``.

        ``temperature`` 0 picks the most likely character. Returns only the new text (``n`` chars).
        """
        if n < 0 or temperature < 0:
            raise ValueError(f"n and temperature must be >= 0, got {n}, {temperature}")
        unknown = sorted(set(prefix) - set(self._index))
        if unknown:
            raise ValueError(f"prefix has characters outside the vocabulary: {unknown}")
        was_training = self.training
        self.eval()
        device = self.head.weight.device
        # An empty prefix starts the text as a new line (or with the first character of the vocabulary).
        start = prefix or ("\n" if "\n" in self._index else self.config.vocab[0])
        ids = torch.tensor([[self._index[ch] for ch in start]], device=device)  # (1, P)
        logits, state = self.step(ids)
        out: list[str] = []
        for _ in range(n):
            last = logits[0, -1]  # (V,)
            if temperature == 0:
                nxt = int(last.argmax())
            else:
                probs = torch.softmax(last.float() / temperature, dim=-1)
                nxt = int(torch.multinomial(probs.cpu(), 1, generator=generator))
            out.append(self.config.vocab[nxt])
            logits, state = self.step(torch.tensor([[nxt]], device=device), state)  # (1, 1, V)
        self.train(was_training)
        return "".join(out)


# ------------------------------------------------------------------- sequence classification / regression
@dataclass
class SequenceConfig:
    input_size: int = 12
    num_classes: int = 9  # K for a classifier; O (outputs) for a regressor
    hidden_size: int = 64
    num_layers: int = 1
    mode: str = "lstm"  # "lstm", "tanh" or "relu"
    dropout: float = 0.0
    forget_bias: float = 1.0
    chrono: int = 0  # > 0: chrono initialisation for dependencies up to this many steps (LSTM only)


class _SequenceEncoder(nn.Module):
    """Recurrence over a (padded) batch -> the last layer's state at each sequence's last valid step."""

    def __init__(self, c: SequenceConfig, rnn: RNN | LSTM | None = None) -> None:
        super().__init__()
        if c.input_size < 1 or c.num_classes < 1:
            raise ValueError(f"input_size and num_classes must be >= 1, got {c.input_size}, {c.num_classes}")
        self.config = c
        self.rnn = rnn or _recurrent(c.mode, c.input_size, c.hidden_size, c.num_layers, c.dropout,
                                     c.forget_bias, c.chrono)

    def encode(self, inputs: Sequence[Tensor] | Tensor, lengths: Tensor | None) -> Tensor:
        """``inputs`` -> the state ``(B, H)`` after each sequence's last valid step."""
        name = type(self).__name__
        x, lengths = _batch(inputs, lengths, name)  # (B, T, F)
        if x.dim() != 3 or x.shape[2] != self.config.input_size:
            raise ValueError(f"{name}: inputs must have {self.config.input_size} features per step, "
                             f"got {tuple(x.shape)} (batched as [B, T, F])")
        _, h_n = self.rnn(x, lengths=lengths)
        return _last_state(h_n[0] if isinstance(h_n, tuple) else h_n)  # (L, B, H) -> (B, H)


class SequenceClassifier(_SequenceEncoder):
    """One class per sequence, by a :class:`~structpred.heads.single_value.ClassificationHead` on the
    last state: per item ``{"class_logits": [K], "scores", "labels"}``; targets
    ``{"labels": int64 in [0, K)}`` -> ``{"loss_cls": cross-entropy}``. ``rnn`` / ``head`` None:
    built from the config.
    """


    def __init__(self, config: SequenceConfig | None = None, rnn: RNN | LSTM | None = None,
                 head: ClassificationHead | None = None) -> None:
        c = config or SequenceConfig()
        super().__init__(c, rnn)
        self.head = head or ClassificationHead(c.hidden_size, c.num_classes, c.dropout)

    def forward(self, inputs: Sequence[Tensor] | Tensor, targets: Targets | None = None,
                lengths: Tensor | None = None, *, predict: bool = True
                ) -> tuple[list[dict[str, Tensor]] | None, dict[str, Tensor]]:
        check_request(targets is not None, predict, "SequenceClassifier")
        logits = self.head(self.encode(inputs, lengths))  # (B, H) -> (B, K)
        losses = self.head.losses(logits, targets) if targets is not None else {}
        return (ClassificationHead.predictions(logits) if predict else None), losses


class SequenceRegressor(_SequenceEncoder):
    """O values per sequence, by a :class:`~structpred.heads.single_value.RegressionHead` (MSE) on the
    last state: per item ``{"value": [O]}``; targets ``{"value": float[O]}`` -> ``{"loss_reg": MSE}``.
    """


    def __init__(self, config: SequenceConfig | None = None, rnn: RNN | LSTM | None = None,
                 head: RegressionHead | None = None) -> None:
        c = config or SequenceConfig(input_size=1, num_classes=1)
        super().__init__(c, rnn)
        self.drop = nn.Dropout(c.dropout)
        self.head = head or RegressionHead(c.hidden_size, c.num_classes, loss="mse")

    def forward(self, inputs: Sequence[Tensor] | Tensor, targets: Targets | None = None,
                lengths: Tensor | None = None, *, predict: bool = True
                ) -> tuple[list[dict[str, Tensor]] | None, dict[str, Tensor]]:
        check_request(targets is not None, predict, "SequenceRegressor")
        values = self.head(self.drop(self.encode(inputs, lengths)))  # (B, H) -> (B, O)
        losses: dict[str, Tensor] = {}
        if targets is not None:
            n_out = values.shape[1]  # O
            for i, t in enumerate(targets):
                if not isinstance(t.get("value"), Tensor) or t["value"].numel() != n_out:
                    raise ValueError(
                        f"SequenceRegressor: targets[{i}] needs 'value' with {n_out} target values")
            losses = self.head.losses(values, targets)
        return (split_items({"value": values}) if predict else None), losses


# ------------------------------------------------------------------------------------------ builders
@register_model(task="language_model")
def lstm_charlm(vocab: str = "", embed_dim: int = 64, hidden_size: int = 256, num_layers: int = 1,
                dropout: float = 0.0) -> CharLM:
    """Character LSTM language model over ``vocab`` (the data set's ``vocab_chars``)."""
    return CharLM(CharLMConfig(vocab, embed_dim, hidden_size, num_layers, dropout))


@register_model(task="classification")
def lstm_vowels(num_classes: int = 9, input_size: int = 12, hidden_size: int = 64, num_layers: int = 1,
                dropout: float = 0.0) -> SequenceClassifier:
    """LSTM speaker classifier for Japanese Vowels (12 features, 9 speakers)."""
    config = SequenceConfig(input_size, num_classes, hidden_size, num_layers, "lstm", dropout)
    return SequenceClassifier(config)


@register_model(task="classification")
def rnn_vowels(num_classes: int = 9, input_size: int = 12, hidden_size: int = 64, num_layers: int = 1,
               dropout: float = 0.0) -> SequenceClassifier:
    """Elman (tanh) RNN speaker classifier for Japanese Vowels."""
    config = SequenceConfig(input_size, num_classes, hidden_size, num_layers, "tanh", dropout)
    return SequenceClassifier(config)


@register_model(task="regression")
def lstm_sunspots(hidden_size: int = 32, num_layers: int = 1, dropout: float = 0.0) -> SequenceRegressor:
    """LSTM one-step-ahead forecaster of the yearly sunspot number (1 input, 1 output)."""
    return SequenceRegressor(SequenceConfig(1, 1, hidden_size, num_layers, "lstm", dropout))


@register_model(task="regression")
def lstm_adding(hidden_size: int = 64, num_layers: int = 1, chrono: int = 150) -> SequenceRegressor:
    """LSTM for the adding problem: 2 inputs (value, marker) -> the sum, read at the last step.

    Chrono-initialised for T = ``chrono`` steps (module doc); ``chrono=0`` gives the plain forget
    bias 1, which at T = 150 sits on the predict-the-mean plateau far longer (see experiments/).
    """
    return SequenceRegressor(SequenceConfig(2, 1, hidden_size, num_layers, "lstm", chrono=chrono))


@register_model(task="regression")
def rnn_adding(hidden_size: int = 64, num_layers: int = 1) -> SequenceRegressor:
    """Elman (tanh) RNN for the adding problem, same readout as :func:`lstm_adding`."""
    return SequenceRegressor(SequenceConfig(2, 1, hidden_size, num_layers, "tanh"))
