"""Multi-task loss weighting: each scheme against its formula written out by hand on 2-3 heads.

LibMTL 1.1.5 (the peer) does not import beside torch 2.14 / torchvision 0.29, so its UW / DWA /
GradNorm formulas are reproduced here by hand (docs/multitask_weighting.md cites the lines).
"""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes
from torch import Tensor, nn

from structpred.heads.loss_weighting import (
    DynamicWeightAverage,
    GradNormWeighting,
    LossWeighting,
    UncertaintyWeighting,
    build_weighting,
)

D64 = torch.float64


def _f(t: Tensor) -> float:
    return float(t.detach())


def _scalar(v: float, grad: bool = True) -> Tensor:
    return torch.tensor(v, dtype=D64, requires_grad=grad)


# ----------------------------------------------------------------------------------------- fixed


def test_fixed_defaults_to_one_and_follows_the_loss_dtype() -> None:
    wt = build_weighting("fixed", ["det", "seg"])
    weights, extra = wt({"seg": _scalar(3.0)})
    assert extra == {} and list(weights) == ["seg"]
    assert weights["seg"].dtype == D64 and _f(weights["seg"]) == 1.0
    assert list(wt.parameters()) == [] and wt.state_dict() == {}


def test_fixed_given_weights_and_missing_heads() -> None:
    wt = build_weighting("fixed", ["det", "seg", "depth"], weights={"det": 0.25, "depth": 0.0})
    weights, _ = wt({"det": _scalar(1.0), "seg": _scalar(2.0), "depth": _scalar(5.0)})
    assert {h: float(w) for h, w in weights.items()} == {"det": 0.25, "seg": 1.0, "depth": 0.0}


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        ({"det": -1.0}, "'det'.*>= 0"),
        ({"det": math.nan}, "'det'.*finite"),
        ({"part": 1.0}, "unknown head 'part'"),
    ],
)
def test_fixed_bad_weights(weights: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_weighting("fixed", ["det", "seg"], weights=weights)


# ----------------------------------------------------------------------------------- uncertainty


def test_uncertainty_weights_extra_and_gradients_match_the_formula() -> None:
    wt = build_weighting("uncertainty", ["a", "b", "c"]).double()
    assert isinstance(wt, UncertaintyWeighting)
    s = [0.3, -0.7, 1.1]
    with torch.no_grad():
        wt.log_var.copy_(torch.tensor(s, dtype=D64))
    L = {"a": 2.0, "c": 0.5}  # head b absent
    weights, extra = wt({h: _scalar(v) for h, v in L.items()})
    assert _f(weights["a"]) == pytest.approx(0.5 * math.exp(-0.3), rel=1e-12)
    assert _f(weights["c"]) == pytest.approx(0.5 * math.exp(-1.1), rel=1e-12)
    assert _f(extra["loss_uncertainty"]) == pytest.approx((0.3 + 1.1) / 2, rel=1e-12)
    total = weights["a"] * 2.0 + weights["c"] * 0.5 + extra["loss_uncertainty"]
    # LibMTL UW: sum_h L_h / (2 exp(s_h)) + s_h / 2 over the present heads
    libmtl = sum(L[h] / (2 * math.exp(s[i])) + s[i] / 2 for i, h in [(0, "a"), (2, "c")])
    assert _f(total) == pytest.approx(libmtl, rel=1e-12)
    total.backward()
    # d/ds_h = -L_h / (2 exp(s_h)) + 1/2 for a present head, 0 for an absent one
    expected = [-2.0 / (2 * math.exp(0.3)) + 0.5, 0.0, -0.5 / (2 * math.exp(1.1)) + 0.5]
    assert wt.log_var.grad is not None
    torch.testing.assert_close(wt.log_var.grad, torch.tensor(expected, dtype=D64))


def test_uncertainty_init_option_and_loss_grad() -> None:
    wt = build_weighting("uncertainty", ["a", "b"], log_var_init=-0.5)
    loss = torch.tensor(4.0, requires_grad=True)
    weights, _ = wt({"b": loss})
    (weights["b"] * loss).backward()
    assert loss.grad is not None and float(loss.grad) == pytest.approx(0.5 * math.exp(0.5))


# ------------------------------------------------------------------------------------------ DWA


def _dwa_reference(steps: list[dict[str, float]], heads: list[str], period: int, T: float) -> list[dict]:
    """The paper's DWA over windows of `period` steps, in plain Python."""
    K, means, out = len(heads), list[dict[str, float]](), list[dict[str, float]]()
    total, count, n = dict.fromkeys(heads, 0.0), dict.fromkeys(heads, 0), 0
    for losses in steps:
        if len(means) < 2:
            lam = dict.fromkeys(heads, 1.0)
        else:
            ratio = {}
            for h in heads:
                last, before = means[-1].get(h), means[-2].get(h)
                ratio[h] = last / before if last is not None and before else 1.0
            z = sum(math.exp(ratio[h] / T) for h in heads)
            lam = {h: K * math.exp(ratio[h] / T) / z for h in heads}
        out.append({h: lam[h] for h in losses})
        for h, v in losses.items():
            total[h] += v
            count[h] += 1
        n += 1
        if n == period:
            means.append({h: total[h] / count[h] for h in heads if count[h]})
            total, count, n = dict.fromkeys(heads, 0.0), dict.fromkeys(heads, 0), 0
    return out


def _script(seed: int) -> list[dict[str, float]]:
    """Windows 0-1 by hand (period 2), then random losses; head b absent from all of window 3."""
    steps = [
        {"a": 4.0, "b": 1.0, "c": 2.0},
        {"a": 4.0, "b": 1.0},
        {"a": 2.0, "b": 1.0, "c": 3.0},
        {"a": 2.0, "c": 1.0},
        {"a": 1.0, "b": 1.0, "c": 1.0},
    ]
    rng = random.Random(seed)
    for step in range(5, 14):
        present = [h for h in "abc" if rng.random() < 0.8 and not (h == "b" and step in (6, 7))] or ["a"]
        steps.append({h: rng.uniform(0.2, 3.0) for h in present})
    return steps


def _run(wt: LossWeighting, steps: list[dict[str, float]]) -> list[dict[str, float]]:
    got = []
    for losses in steps:
        weights, extra = wt({h: _scalar(v) for h, v in losses.items()})
        assert extra == {} and all(not w.requires_grad for w in weights.values())
        got.append({h: float(w) for h, w in weights.items()})
    return got


def test_dwa_follows_the_windowed_softmax_formula() -> None:
    steps = _script(0)
    got = _run(build_weighting("dwa", ["a", "b", "c"], period=2).double(), steps)
    # windows 0 and 1: lambda = 1
    assert all(w == 1.0 for step in got[:4] for w in step.values())
    # window 2 by hand: ratios a 2/4, b 1/1, c 2/2 (c's window means: 2 and (3 + 1) / 2)
    z = math.exp(0.25) + 2 * math.exp(0.5)
    assert got[4]["a"] == pytest.approx(3 * math.exp(0.25) / z, rel=1e-12)
    expected = _dwa_reference(steps, ["a", "b", "c"], period=2, T=2.0)
    for g, e in zip(got, expected, strict=True):
        assert g == pytest.approx(e, rel=1e-12)
    # the script covers b absent from all of window 3 (steps 6-7): its ratio counts as 1 in window 4
    assert "b" not in steps[6] and "b" not in steps[7] and "b" in steps[8]


def test_dwa_state_dict_round_trip_resumes_identically() -> None:
    steps = _script(1)
    a = build_weighting("dwa", ["a", "b", "c"], period=3, temperature=1.5)
    _run(a, steps[:7])  # stops inside a window (period 3)
    state = load_bytes(save_bytes({k: v.contiguous() for k, v in a.state_dict().items()}))
    assert set(state) == {"window_sum", "window_count", "window_step", "windows_done", "last_means"}
    b = build_weighting("dwa", ["a", "b", "c"], period=3, temperature=1.5)
    b.load_state_dict(state)
    resumed = _run(b, steps[7:])
    assert resumed == _run(a, steps[7:])
    uninterrupted = _run(build_weighting("dwa", ["a", "b", "c"], period=3, temperature=1.5), steps)
    assert resumed == uninterrupted[7:]
    assert any(w != 1.0 for step in resumed for w in step.values())  # the resumed part uses the state


def test_dwa_does_not_accumulate_in_eval_or_without_grad() -> None:
    wt = build_weighting("dwa", ["a", "b"], period=1)
    assert isinstance(wt, DynamicWeightAverage)
    wt.eval()
    for _ in range(3):
        wt({"a": _scalar(1.0), "b": _scalar(2.0)})
    wt.train()
    with torch.no_grad():
        wt({"a": _scalar(1.0), "b": _scalar(2.0)})
    assert int(wt.windows_done) == 0 and int(wt.window_step) == 0
    for v in (4.0, 2.0):
        wt({"a": _scalar(v), "b": _scalar(1.0)})
    assert int(wt.windows_done) == 2
    weights, _ = wt({"a": _scalar(1.0), "b": _scalar(1.0)})  # ratios a 0.5, b 1
    z = math.exp(0.25) + math.exp(0.5)
    assert _f(weights["a"]) == pytest.approx(2 * math.exp(0.25) / z, rel=1e-6)


# ------------------------------------------------------------------------------------- GradNorm


class _TwoHeads(nn.Module):
    """A shared linear layer (3 -> 4) and two linear heads (4 -> 1), float64."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.shared = nn.Linear(3, 4).double()
        self.heads = nn.ModuleDict({"a": nn.Linear(4, 1).double(), "b": nn.Linear(4, 1).double()})
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=D64))
        self.x = torch.randn(5, 3, generator=g, dtype=D64)  # (N, 3)
        self.y = {h: torch.randn(5, generator=g, dtype=D64) for h in "ab"}  # (N,)

    def losses(self, scale: dict[str, float]) -> dict[str, Tensor]:
        feat = self.shared(self.x)  # (N, 4)
        return {h: ((head(feat)[:, 0] - scale[h] * self.y[h]) ** 2).mean() for h, head in self.heads.items()}

    def hand_grad_norm(self, h: str, scale: float) -> float:
        """||dL_h / d(W, b)|| of the shared layer, from dL/dfeat_n = (2/N) e_n v."""
        with torch.no_grad():
            head = self.heads[h]
            assert isinstance(head, nn.Linear)
            v = head.weight[0]  # (4,)
            e = self.heads[h](self.shared(self.x))[:, 0] - scale * self.y[h]  # (N,)
            N = len(e)
            dW = (2 / N) * torch.einsum("n,j,nk->jk", e, v, self.x)  # (4, 3)
            db = (2 / N) * e.sum() * v  # (4,)
        return math.sqrt(float(dW.pow(2).sum() + db.pow(2).sum()))


def test_gradnorm_matches_the_formula_over_two_steps() -> None:
    net, alpha = _TwoHeads(), 1.5
    wt = build_weighting("gradnorm", ["a", "b"], alpha=alpha).double()
    assert isinstance(wt, GradNormWeighting)
    unused = nn.Parameter(torch.ones(2, dtype=D64))  # a shared tensor no loss reaches counts 0
    shared = [net.shared.weight, net.shared.bias, unused]
    L0: dict[str, float] = {}
    for step, scale in enumerate([{"a": 1.0, "b": 1.0}, {"a": 0.5, "b": 2.0}]):
        with torch.no_grad():
            wt.weight.copy_(torch.tensor([1.0, 3.0]) if step == 0 else wt.weight + torch.tensor([0.2, -0.1]))
        raw = wt.weight.detach().clone()
        net.zero_grad()
        wt.zero_grad()
        losses = net.losses(scale)
        weights, extra = wt(losses, shared)
        # renormalised in place: sum w = K
        w = raw * 2 / raw.sum()
        torch.testing.assert_close(wt.weight.detach(), w)
        assert _f(wt.weight.sum()) == pytest.approx(2.0)
        L = {h: _f(v) for h, v in losses.items()}
        L0 = L0 or dict(L)
        g = [net.hand_grad_norm(h, scale[h]) for h in "ab"]
        G = [float(w[i]) * g[i] for i in range(2)]
        rate = [L[h] / L0[h] for h in "ab"]
        r = [x / (sum(rate) / 2) for x in rate]
        target = [(sum(G) / 2) * ri**alpha for ri in r]
        assert _f(extra["loss_gradnorm"]) == pytest.approx(
            sum(abs(Gi - t) for Gi, t in zip(G, target, strict=True)), rel=1e-10
        )
        assert [_f(weights[h]) for h in "ab"] == pytest.approx(w.tolist(), rel=1e-12)
        assert all(not v.requires_grad for v in weights.values())

        total = sum(weights[h] * losses[h] for h in "ab") + extra["loss_gradnorm"]
        total.backward()
        # w gets grad(L_grad) only: sign(G - target) * g
        expected = [math.copysign(1.0, G[i] - target[i]) * g[i] for i in range(2)]
        assert wt.weight.grad is not None
        torch.testing.assert_close(wt.weight.grad, torch.tensor(expected, dtype=D64))
        # the network gets grad(sum w.detach() L) only
        ref = torch.stack([float(w[i]) * v for i, v in enumerate(net.losses(scale).values())]).sum()
        ref_grads = torch.autograd.grad(ref, list(net.parameters()))
        for p, rg in zip(net.parameters(), ref_grads, strict=True):
            assert p.grad is not None
            torch.testing.assert_close(p.grad, rg)
        assert unused.grad is None
        if step == 0:  # r = 1 on the first step: target = mean(G)
            assert target == pytest.approx([sum(G) / 2] * 2)
    assert wt.initial_loss.tolist() == pytest.approx([L0["a"], L0["b"]])


def test_gradnorm_eval_no_grad_or_no_shared_skip_the_extra_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    net = _TwoHeads()
    wt = build_weighting("gradnorm", ["a", "b"]).double()
    assert isinstance(wt, GradNormWeighting)
    with torch.no_grad():
        wt.weight.copy_(torch.tensor([1.0, 3.0]))

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("autograd.grad called")

    monkeypatch.setattr(torch.autograd, "grad", boom)
    shared = list(net.shared.parameters())
    for mode, ctx, sh in [
        ("eval", torch.enable_grad(), shared),
        ("train", torch.no_grad(), shared),
        ("train", torch.enable_grad(), []),
    ]:
        wt.train(mode == "train")
        with ctx:
            weights, extra = wt(net.losses({"a": 1.0, "b": 1.0}), sh)
        assert extra == {}
        assert [_f(weights[h]) for h in "ab"] == pytest.approx([0.5, 1.5])
        assert wt.weight.tolist() == [1.0, 3.0]  # untouched
        assert bool((wt.initial_loss == 0).all())  # 0: unseen


def test_gradnorm_two_forwards_then_one_backward() -> None:
    """Gradient accumulation: the second forward's in-place renormalisation must not break the first graph."""
    net = _TwoHeads()
    wt = build_weighting("gradnorm", ["a", "b"]).double()
    assert isinstance(wt, GradNormWeighting)
    shared = list(net.shared.parameters())
    total = torch.zeros((), dtype=D64)
    for scale in ({"a": 1.0, "b": 1.0}, {"a": 2.0, "b": 0.5}):
        losses = net.losses(scale)
        weights, extra = wt(losses, shared)
        total = total + sum(weights[h] * losses[h] for h in "ab") + extra["loss_gradnorm"]
        with torch.no_grad():
            wt.weight.add_(torch.tensor([0.3, 0.0], dtype=D64))  # as an optimiser step would
    total.backward()
    assert wt.weight.grad is not None and bool(torch.isfinite(wt.weight.grad).all())


def test_gradnorm_absent_head_and_single_head() -> None:
    net = _TwoHeads()
    wt = build_weighting("gradnorm", ["a", "b", "c"]).double()
    assert isinstance(wt, GradNormWeighting)
    shared = list(net.shared.parameters())
    weights, extra = wt({"a": net.losses({"a": 1.0, "b": 1.0})["a"]}, shared)
    # one head: r = 1, target = G, L_grad = 0; c and b unseen
    assert _f(extra["loss_gradnorm"]) == 0.0 and list(weights) == ["a"]
    assert float(wt.initial_loss[0]) > 0 and bool((wt.initial_loss[1:] == 0).all())  # 0: unseen
    assert _f(wt.weight.sum()) == pytest.approx(3.0)


# ------------------------------------------------------------------------------------ bad input


def test_unknown_scheme_and_option() -> None:
    with pytest.raises(
        ValueError, match="unknown loss weighting 'pcgrad'; known: dwa, fixed, gradnorm, uncertainty"
    ):
        build_weighting("pcgrad", ["a"])
    with pytest.raises(ValueError, match="'gradnorm': unknown option.*lr.*known: alpha"):
        build_weighting("gradnorm", ["a"], lr=0.1)


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("dwa", {"period": 0}, "period"),
        ("dwa", {"temperature": 0.0}, "temperature"),
        ("gradnorm", {"alpha": -1.0}, "alpha"),
        ("uncertainty", {"log_var_init": math.inf}, "log_var_init"),
    ],
)
def test_bad_option_values(name: str, options: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_weighting(name, ["a", "b"], **options)


@pytest.mark.parametrize("heads", [[], ["a", "a"], ["a", ""]])
def test_bad_heads(heads: list[str]) -> None:
    with pytest.raises(ValueError, match="head"):
        build_weighting("fixed", heads)


@pytest.mark.parametrize("name", ["fixed", "uncertainty", "dwa", "gradnorm"])
def test_bad_losses_and_empty_dict(name: str) -> None:
    wt = build_weighting(name, ["det", "seg"])
    with pytest.raises(ValueError, match="unknown head 'part'"):
        wt({"det": torch.tensor(1.0), "part": torch.tensor(1.0)})
    with pytest.raises(ValueError, match=r"head 'seg' must be a scalar, got \(2,\)"):
        wt({"seg": torch.ones(2)})
    assert wt({}) == ({}, {})
    assert wt({}, [torch.ones(1, requires_grad=True)]) == ({}, {})


# ----------------------------------------------------------------------------------- end to end


@pytest.mark.parametrize(
    ("name", "options"),
    [("fixed", {"weights": {"reg": 2.0}}), ("uncertainty", {}), ("dwa", {"period": 3}), ("gradnorm", {})],
)
def test_toy_two_head_training_is_finite(name: str, options: dict) -> None:
    torch.manual_seed(0)
    trunk, reg, cls = nn.Linear(4, 8), nn.Linear(8, 1), nn.Linear(8, 3)
    wt = build_weighting(name, ["reg", "cls"], **options)
    params = [*trunk.parameters(), *reg.parameters(), *cls.parameters(), *wt.parameters()]
    opt = torch.optim.SGD(params, lr=0.05)
    x, y_reg, y_cls = torch.randn(16, 4), torch.randn(16), torch.randint(0, 3, (16,))
    raw = []
    for step in range(12):
        feat = torch.relu(trunk(x))  # (16, 8)
        head_losses = {"reg": F.mse_loss(reg(feat)[:, 0], y_reg)}
        if step % 3:  # cls absent every third step
            head_losses["cls"] = F.cross_entropy(cls(feat), y_cls)
        weights, extra = wt(head_losses, list(trunk.parameters()))
        losses = {f"loss_{h}_main": weights[h] * v for h, v in head_losses.items()} | extra
        total = sum(losses.values())
        assert all(k.startswith("loss_") for k in losses) and math.isfinite(_f(total))
        opt.zero_grad()
        total.backward()
        opt.step()
        raw.append(sum(_f(v) for v in head_losses.values()))
    assert all(math.isfinite(v) for v in raw)
    if name == "gradnorm":
        assert isinstance(wt, GradNormWeighting)
        assert _f(wt.weight.sum()) == pytest.approx(2.0, abs=0.1)
    if name == "uncertainty":
        assert isinstance(wt, UncertaintyWeighting) and bool((wt.log_var != 0).all())
