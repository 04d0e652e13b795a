"""Swin's eager paths (tokens moved by one gather each way, patch merging by one gather, the
attention bias cached without gradients) against the roll / view path kept for tracing and export:
the same outputs and gradients, bit for bit, at sizes on and off the window and patch grids, under
both window rules; the bias cache follows the table's in-place updates."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from structpred.backbones import swin_window
from structpred.backbones.swin import SwinConfig, SwinTransformer
from structpred.backbones.swin_window import (
    from_windows,
    gathered_windows,
    merge_order,
    to_windows,
    window_order,
    window_partition,
)

SIZES = [(24, 36), (36, 20), (8, 8)]  # maps 6x9 / 9x5 / 2x2: on and off the window grid, odd merges


def _model(rule: str, seed: int = 0) -> SwinTransformer:
    torch.manual_seed(seed)
    config = SwinConfig(embed_dim=8, depths=(2, 2, 2), num_heads=(1, 2, 2), window_size=3, mlp_ratio=2.0,
                        drop_path_rate=0.0, window_rule=rule)  # fmt: skip
    return SwinTransformer(config)


@pytest.mark.parametrize("rule", ["timm", "torchvision"])
@pytest.mark.parametrize("size", [(5, 7), (6, 6), (4, 9), (3, 3), (2, 5)])
@pytest.mark.parametrize("shift", [0, 1])
def test_window_order_equals_roll_pad_partition(rule: str, size: tuple[int, int], shift: int) -> None:
    H, W = size
    (wh, ww), (sh, sw) = swin_window.window_and_shift(size, 3, shift, rule)
    x = torch.randn(2, H, W, 4)
    gathered = to_windows(x, (wh, ww), (sh, sw), rule)
    back = from_windows(gathered * 2, 2, size, (wh, ww), (sh, sw), rule)
    with gathered_windows(False):  # the roll / view path (torch.export's)
        assert torch.equal(gathered, to_windows(x, (wh, ww), (sh, sw), rule))
        assert torch.equal(back, from_windows(gathered * 2, 2, size, (wh, ww), (sh, sw), rule))
    assert torch.equal(back, x * 2)  # the inverse: every token back in its place


def test_window_order_is_a_permutation_of_the_padded_map() -> None:
    gather, scatter = window_order((5, 7), (3, 3), (1, 1), "timm", torch.device("cpu"))
    assert sorted(gather.tolist()) == list(range(6 * 9))
    assert len(set(scatter.tolist())) == 5 * 7
    unshifted, _ = window_order((6, 6), (3, 3), (0, 0), "timm", torch.device("cpu"))
    expected = window_partition(torch.arange(36).view(1, 6, 6, 1), 3, 3).reshape(-1)
    assert torch.equal(unshifted, expected)


def test_merge_order_matches_the_2x2_concatenation() -> None:
    x = torch.randn(2, 6, 8, 3)
    B, H, W, C = x.shape
    reference = x.reshape(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5).flatten(3)
    ours = x.reshape(B, H * W, C).index_select(1, merge_order(H // 2, W // 2, x.device)).view(B, 3, 4, 4 * C)
    assert torch.equal(ours, reference)


def _outputs(model: SwinTransformer, x: Tensor) -> list[Tensor]:
    """Eval maps (twice: the second from the bias cache), then train-mode gradients of the input and
    every parameter the maps reach."""
    model.eval()
    with torch.no_grad():
        maps = [f.clone() for f in model.forward_features(x).values()]
        maps += list(model.forward_features(x).values())
    model.train()
    xg = x.clone().requires_grad_(True)
    loss = torch.stack([f.square().sum() for f in model.forward_features(xg).values()]).sum()
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [xg, *params], allow_unused=True)
    return maps + [g for g in grads if g is not None]


@pytest.mark.parametrize("rule", ["timm", "torchvision"])
def test_eager_paths_equal_the_traced_path_bit_for_bit(rule: str) -> None:
    model = _model(rule)
    for H, W in SIZES:
        x = torch.randn(2, 3, H, W)
        fast = _outputs(model, x)
        with gathered_windows(False):  # the roll / view path (torch.export's)
            slow = _outputs(model, x)
        assert len(fast) == len(slow) > 20
        assert all(torch.equal(a, b) for a, b in zip(fast, slow, strict=True)), (H, W)


def test_bias_cache_follows_in_place_updates_of_the_table() -> None:
    model = _model("timm").eval()
    x = torch.randn(1, 3, 24, 24)
    with torch.no_grad():
        before = model.forward_features(x)["c4"].clone()
        for block in model.layers[0].blocks:  # type: ignore[union-attr]
            block.attn.relative_position_bias_table.add_(
                torch.randn_like(block.attn.relative_position_bias_table)
            )
        after = model.forward_features(x)["c4"]
    fresh = _model("timm").eval()
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        reference = fresh.forward_features(x)["c4"]
    assert not torch.equal(before, after)
    assert torch.equal(after, reference)
    # load_state_dict (an in-place copy) invalidates it too
    model.load_state_dict(_model("timm", seed=1).state_dict())
    with torch.no_grad():
        loaded = model.forward_features(x)["c4"]
    with torch.no_grad():
        assert torch.equal(loaded, _model("timm", seed=1).eval().forward_features(x)["c4"])
