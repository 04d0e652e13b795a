"""layers.conv.Conv3d: oneDNN's kernel where PyTorch would take slow_conv3d — same outputs and
gradients as nn.Conv3d, and nn.Conv3d itself wherever the fast path does not apply."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from structpred.layers.conv import Conv3d

CASES = [  # (in, out, input D x H x W, stride, groups, bias): the small-volume cases slow_conv3d takes
    (16, 1, (6, 10, 12), 1, 1, True),
    (16, 32, (5, 9, 11), 2, 1, True),
    (8, 8, (4, 6, 8), 1, 2, False),
    (3, 5, (1, 1, 1), 1, 1, True),
]


def _pair(cin: int, cout: int, stride: int, groups: int, bias: bool) -> tuple[nn.Conv3d, Conv3d]:
    torch.manual_seed(0)
    ref = nn.Conv3d(cin, cout, 3, stride=stride, padding=1, groups=groups, bias=bias)
    ours = Conv3d(cin, cout, 3, stride=stride, padding=1, groups=groups, bias=bias)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


@pytest.mark.parametrize(("cin", "cout", "size", "stride", "groups", "bias"), CASES)
def test_same_outputs_and_gradients_as_nn_conv3d(cin, cout, size, stride, groups, bias) -> None:
    ref, ours = _pair(cin, cout, stride, groups, bias)
    x = torch.rand(2, cin, *size)
    xr, xo = x.clone().requires_grad_(), x.clone().requires_grad_()
    yr, yo = ref(xr), ours(xo)
    assert yr.shape == yo.shape
    torch.testing.assert_close(yo, yr, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(yr)
    yr.backward(g)
    yo.backward(g)
    torch.testing.assert_close(xo.grad, xr.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-4)


def test_fast_path_on_cpu_float32_and_plain_conv_elsewhere() -> None:
    ref, ours = _pair(16, 16, 1, 1, True)
    x = torch.rand(1, 16, 8, 16, 32)  # N*C*D*H = 2048 <= 20480: PyTorch's own choice is slow_conv3d

    def kernels(module: nn.Module, inp: torch.Tensor) -> set[str]:
        with torch.no_grad(), torch.profiler.profile() as prof:
            module(inp)
        return {e.key for e in prof.key_averages() if "slow_conv" in e.key or "mkldnn_conv" in e.key}

    assert "aten::mkldnn_convolution" in kernels(ours, x)
    assert "aten::slow_conv3d_forward" in kernels(ref, x)  # why this layer exists
    ours64 = Conv3d(16, 16, 3, padding=1).double()
    ours64.load_state_dict(ref.double().state_dict())
    torch.testing.assert_close(ours64(x.double()), ref(x.double()))
    unbatched = x[0]  # (C, D, H, W): nn.Conv3d's unbatched form
    torch.testing.assert_close(ours.float()(unbatched), ref.float()(unbatched))


def test_exports_through_the_standard_conv() -> None:
    _, ours = _pair(4, 2, 1, 1, True)
    x = torch.rand(1, 4, 3, 5, 6)
    program = torch.export.export(ours.eval(), (x,), strict=False)
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert not any("mkldnn" in t for t in targets), targets
    torch.testing.assert_close(program.module()(x), ours(x))
