"""Swin weights saved at one input size, loaded into a model built for another: Swin has no absolute
positions, so the file loads unchanged and our logits equal timm's model built at the new size from
the same file (timm's ``checkpoint_filter_fn``), within 1e-5 (float32, eval). A file whose relative
position tables are for another *window* is refused with both windows named (resampling them, as
timm does, is not supported). Random weights only."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
import timm
import torch
from timm.models.swin_transformer import checkpoint_filter_fn
from torch import Tensor, nn
from torchvision.models.swin_transformer import SwinTransformer as TvSwin

from structpred.models import from_timm, get_model
from structpred.models.weights import copy_renamed, timm_swin, torchvision_swin

ATOL = 1e-5
DEPTHS = (1, 1, 1, 1)
NARROW = {"embed_dim": 32, "num_heads": (1, 2, 4, 8)}  # for the logit comparisons (speed)


def timm_at(img_size: int, seed: int = 0, **kwargs: object) -> nn.Module:
    torch.manual_seed(seed)
    model = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=img_size,
                              depths=DEPTHS, num_classes=10, **kwargs)  # fmt: skip
    return model.eval()


def load_like_load_weights(family: object, ours: nn.Module, state: Mapping[str, Tensor]) -> None:
    """What ``load_weights`` does with a family's state file: adapt, then the family's rules."""
    adapted = family.adapt_state(ours, state)  # type: ignore[attr-defined]
    rules, skip = family.state_rules(ours, adapted)  # type: ignore[attr-defined]
    copy_renamed(ours, adapted, rules, skip=skip)


# Sizes whose last map is at least the window (224 / 32 = 7). Below that (e.g. 160: a 5 x 5 last map)
# timm *built* at the size shrinks the window and resamples that stage's table at load time, while
# ours keeps the file's window and clips it per map (timm's dynamic rule): ~1e-5 apart on random weights.
@pytest.mark.parametrize(("saved", "built"), [(224, 384), (224, 256)])
def test_a_timm_file_at_another_size_matches_timm_built_at_that_size(saved: int, built: int) -> None:
    state = timm_at(saved, **NARROW).state_dict()
    theirs = timm_at(built, seed=5, **NARROW)
    theirs.load_state_dict(checkpoint_filter_fn(state, theirs))
    ours = from_timm(timm_at(built, seed=9, **NARROW))  # ours built at the new size, other values
    load_like_load_weights(timm_swin, ours, state)
    x = torch.randn(2, 3, built, built, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours.logits(x), theirs(x), atol=ATOL, rtol=0)


def test_a_timm_file_of_another_window_names_both_windows() -> None:
    state = timm_at(384, window_size=12).state_dict()
    ours = get_model("swin_tiny_patch4_window7_224", num_classes=10, depths=DEPTHS)
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    table = r"layers\.0\.blocks\.0\.attn\.relative_position_bias_table"
    message = (rf"timm Swin: {table} \(529, 3\) is the table of a 12 x 12 window, ours \(backbone\.{table}\) "
               r"of a 7 x 7 window \(169, 3\): resampling .* not supported")  # fmt: skip
    with pytest.raises(ValueError, match=message):
        load_like_load_weights(timm_swin, ours, state)
    assert all(torch.equal(before[k], v) for k, v in ours.state_dict().items())


def test_a_torchvision_file_of_another_window_names_both_windows() -> None:
    torch.manual_seed(0)
    theirs = TvSwin(patch_size=[4, 4], embed_dim=96, depths=list(DEPTHS), num_heads=[3, 6, 12, 24],
                    window_size=[8, 8], num_classes=10)  # fmt: skip
    ours = get_model("swin_tiny_patch4_window7_224", num_classes=10, depths=DEPTHS)
    table = r"features\.1\.0\.attn\.relative_position_bias_table"
    with pytest.raises(ValueError, match=rf"torchvision Swin: {table} \(225, 3\) is the table of a 8 x 8"):
        load_like_load_weights(torchvision_swin, ours, theirs.state_dict())


def test_the_same_window_passes_unchanged() -> None:
    state = timm_at(224).state_dict()
    ours = get_model("swin_tiny_patch4_window7_224", num_classes=10, depths=DEPTHS)
    adapted = timm_swin.adapt_state(ours, state)
    assert adapted.keys() == state.keys() and all(adapted[k] is state[k] for k in state)


def test_a_window_12_file_loads_into_our_model_built_with_window_12() -> None:
    state = timm_at(384, window_size=12, **NARROW).state_dict()
    theirs = timm_at(384, seed=5, window_size=12, **NARROW)
    theirs.load_state_dict(state)
    ours = get_model("swin_tiny_patch4_window7_224", num_classes=10, depths=DEPTHS, input_size=384,
                     window_size=12).eval()  # fmt: skip
    assert ours.backbone.config.window_size == 12
    ours = from_timm(timm_at(384, seed=9, window_size=12, **NARROW))  # the same model, narrower
    load_like_load_weights(timm_swin, ours, state)
    x = torch.randn(1, 3, 384, 384, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours.logits(x), theirs(x), atol=ATOL, rtol=0)
