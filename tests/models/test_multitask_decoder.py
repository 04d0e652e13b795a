"""The multi-task network's shared dense decoder (issue 21): layout, partial targets, gradients from
every dense head, GradNorm's shared layer, checkpoints of the per-head layout, the one resample to
the input's pixels (against a naive bilinear reference), the label map (bit-equal to ``argmax``)
and export. The rest of the model: tests/models/test_multitask.py."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from structpred.backbones.fpn import narrow_fpn
from structpred.data.shapes import ShapesWorld
from structpred.heads.dense_fpn import DensePredictor, FPNDenseDecoder, FPNDenseHead, to_input_pixels
from structpred.layers.transform import DetectionTransform
from structpred.models import get_model
from structpred.models.multitask import MultiTaskNet
from structpred.models.multitask_heads import SegmentationHead, SharedFeatures, label_map

# the layout under test is the shared decoder (the builder's default is per_head)
TINY: dict[str, Any] = {"width": 4, "fpn_channels": 8, "dense_channels": 8, "norm_groups": 4}
TINY |= {"input_size": 64, "dense_decoder": "shared"}
DENSE = ("semantic", "parts", "depth")


def tiny(seed: int = 0, **kwargs: Any) -> MultiTaskNet:
    torch.manual_seed(seed)
    return cast(MultiTaskNet, get_model("multitask_narrow", **{**TINY, **kwargs}))


def shapes(n: int = 2, size: int = 64) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    world = ShapesWorld("train", size=size, num_images=n)
    items = [world[i] for i in range(n)]
    return [im for im, _ in items], [dict(t) for _, t in items]


def only(target: dict[str, Tensor], *keys: str) -> dict[str, Tensor]:
    return {k: v for k, v in target.items() if k in keys}


# ------------------------------------------------------------------------------------- layout


def test_shared_layout_one_decoder_and_a_predictor_per_dense_head() -> None:
    model = tiny()
    assert isinstance(model.decoder, FPNDenseDecoder) and not isinstance(model.decoder, FPNDenseHead)
    for name in DENSE:
        head = model.heads[name]
        assert isinstance(head.branch, DensePredictor) and head.reads_dense
        assert len(head.branch.convs) == 0  # the default: a 1x1 conv on the shared map
    assert not model.heads["detection"].reads_dense
    for convs in (1, 2):
        other = tiny(dense_head_convs=convs)
        assert all(len(cast(DensePredictor, other.heads[n].branch).convs) == convs for n in DENSE)
    per_head = tiny(dense_decoder="per_head")
    assert per_head.decoder is None
    assert all(isinstance(per_head.heads[n].branch, FPNDenseHead) for n in DENSE)
    # one decoder instead of three: fewer weights
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(model) < count(per_head)
    assert tiny(heads=("detection",)).decoder is None  # no dense head: no decoder


def test_a_single_dense_head_model_is_trunk_decoder_predictor_of_the_unified_one() -> None:
    unified = tiny().eval()
    state = unified.state_dict()
    images, _ = shapes(2)
    with torch.no_grad():
        full = unified(images)[0]
    for name in DENSE:
        single = tiny(seed=1, heads=(name,)).eval()
        keys = set(single.state_dict())
        assert {k.split(".")[0] for k in keys} == {"backbone", "decoder", "heads"}
        assert keys <= set(state)
        single.load_state_dict({k: state[k] for k in keys})
        with torch.no_grad():
            mine = single(images)[0][name]
        for key, value in mine.items():
            torch.testing.assert_close(value, full[name][key], rtol=0, atol=1e-5)


def test_per_head_layout_keeps_the_old_state_dict_keys() -> None:
    # the layout before the shared decoder: heads.<h>.branch.{branches.*, predictor.*}
    keys = tiny(dense_decoder="per_head", heads=("semantic",)).state_dict().keys()
    dense = {k for k in keys if k.startswith("heads.")}
    assert dense and all(k.startswith(("heads.semantic.branch.branches.", "heads.semantic.branch.predictor."))
                         for k in dense)  # fmt: skip
    assert "heads.semantic.branch.predictor.weight" in dense


def test_the_decoder_runs_once_per_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny().eval()
    assert model.decoder is not None
    calls: list[int] = []
    model.decoder.register_forward_hook(lambda *_: calls.append(1))
    images, targets = shapes(2)
    with torch.no_grad():
        model(images, targets)
    assert len(calls) == 1


# ------------------------------------------------------------------------ partial targets, grads


def test_partial_targets_with_the_shared_decoder() -> None:
    model = tiny().eval()
    images, targets = shapes(3)
    partial = [only(targets[0], "semantic"), only(targets[1], "depth"), only(targets[2], "semantic", "parts")]
    with torch.no_grad():
        preds, losses = model(images, partial)
        alone, alone_losses = model([images[0], images[2]], [partial[0], partial[2]])
    assert set(losses) == {"loss_semantic/ce", "loss_parts/ce", "loss_depth/log_l1"}
    assert set(preds) == {"detection", "semantic", "parts", "depth"}
    # GroupNorm is per item: the semantic loss over items 0 and 2 of the batch is that of those two alone
    torch.testing.assert_close(losses["loss_semantic/ce"], alone_losses["loss_semantic/ce"])
    torch.testing.assert_close(
        preds["semantic"]["logits"][[0, 2]], alone["semantic"]["logits"], atol=1e-5, rtol=0
    )
    with torch.no_grad():
        _, none = model(images, [{}, {}, {}])
    assert none == {}


@pytest.mark.parametrize("head", DENSE)
def test_every_dense_head_trains_the_shared_decoder(head: str) -> None:
    model = tiny(heads=("detection", *DENSE)).train()
    images, targets = shapes(2)
    keys = {"semantic": ("semantic",), "parts": ("parts",), "depth": ("depth",)}[head]
    _, losses = model(images, [only(t, *keys) for t in targets], predict=False)
    assert {k.split("/")[0] for k in losses} == {f"loss_{head}"}
    sum(losses.values()).backward()
    assert model.decoder is not None
    for name, p in model.decoder.named_parameters():
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), name
    for other in DENSE:
        grads = [p.grad for p in model.heads[other].parameters()]
        reached = any(g is not None and bool(g.abs().sum() > 0) for g in grads)
        assert reached == (other == head), other
    assert all(p.grad is None for p in model.heads["detection"].parameters())


def test_gradnorm_shared_layer() -> None:
    def ids(params: Sequence[Tensor]) -> set[int]:
        return {id(p) for p in params}

    for kwargs in ({}, {"dense_decoder": "per_head"}, {"heads": ("detection", "depth")}):
        model = tiny(weighting="gradnorm", **kwargs)
        fpn = cast(nn.Module, model.backbone.fpn.layer_blocks)  # type: ignore[union-attr]
        assert ids(model.shared_parameters()) == ids(list(fpn.parameters())), kwargs
    dense_only = tiny(weighting="gradnorm", heads=("semantic", "depth"))
    assert dense_only.decoder is not None
    last = [p for m in dense_only.decoder.last_layer() for p in m.parameters()]
    assert ids(dense_only.shared_parameters()) == ids(last) and len(last) == 3 * 4  # conv, GN (w, b) x 4
    images, targets = shapes(2)
    _, losses = dense_only.train()(images, targets, predict=False)
    assert "loss_gradnorm" in losses and torch.isfinite(losses["loss_gradnorm"])


# --------------------------------------------------------------------------------- checkpoints


def test_an_old_layout_checkpoint_is_named_in_the_mismatch() -> None:
    from structpred.engine import checkpoint as ckpt

    old, new = tiny(dense_decoder="per_head"), tiny()
    old_keys, new_keys = set(old.state_dict()), set(new.state_dict())
    hint = new.checkpoint_hint(sorted(new_keys - old_keys), sorted(old_keys - new_keys))
    assert "rebuild with dense_decoder='per_head'" in hint
    back = old.checkpoint_hint(sorted(old_keys - new_keys), sorted(new_keys - old_keys))
    assert "rebuild with dense_decoder='shared'" in back
    deeper = set(tiny(dense_head_convs=1).state_dict())
    assert "dense_head_convs" in new.checkpoint_hint(sorted(new_keys - deeper), sorted(deeper - new_keys))
    assert new.checkpoint_hint([], []) == ""
    # the engine refuses the old layout, strictly, naming the keys
    tensors = {f"{ckpt.MODEL_PREFIX}{k}": v for k, v in old.state_dict().items()}
    with pytest.raises(ValueError, match=r"does not fit MultiTaskNet: missing \['decoder\.") as err:
        ckpt.restore(tensors, {}, new, rng=False)
    assert "rebuild with dense_decoder='per_head'" in str(err.value)  # the engine names the cause
    per_head = tiny(seed=3, dense_decoder="per_head")
    ckpt.restore(tensors, {}, per_head, rng=False)  # the old layout loads with dense_decoder="per_head"


# ------------------------------------------------------------------------------------ bad input


def test_bad_decoder_settings_are_clear_value_errors() -> None:
    with pytest.raises(ValueError, match="dense_decoder must be 'shared' or 'per_head', got 'both'"):
        tiny(dense_decoder="both")
    with pytest.raises(ValueError, match="dense_head_convs must be >= 0, got -1"):
        tiny(dense_head_convs=-1)
    with pytest.raises(ValueError, match="DensePredictor: channels, out_channels must be >= 1"):
        DensePredictor(8, 0)
    with pytest.raises(ValueError, match="DensePredictor: norm_groups 3 must divide channels 8"):
        DensePredictor(8, 2, convs=1, norm_groups=3)
    with pytest.raises(ValueError, match="must be an FPNDenseHead or a DensePredictor, got Conv2d"):
        SegmentationHead(nn.Conv2d(8, 3, 1))  # type: ignore[arg-type]
    transform, backbone = DetectionTransform(64, 256), narrow_fpn(out_channels=8, widths=(4, 8, 16, 32))
    head = SegmentationHead(DensePredictor(8, 3, 0))
    with pytest.raises(ValueError, match=r"heads \['semantic'\] predict on the shared dense decoder's map"):
        MultiTaskNet(transform, backbone, {"semantic": head})
    own = SegmentationHead(FPNDenseHead(8, 3, 4, 8, 4))
    with pytest.raises(ValueError, match="a dense decoder but no head reads it"):
        MultiTaskNet(transform, backbone, {"semantic": own}, decoder=FPNDenseDecoder(8, 4, 8, 4))
    maps = [torch.zeros(1, 8, 16 // 2**i, 16 // 2**i) for i in range(4)]
    with pytest.raises(ValueError, match="head 'semantic' predicts on the shared dense decoder's map; the "):
        head(SharedFeatures(maps, (64, 64), (64, 64), (64, 64)), None, True)


# ------------------------------------------------------------------------ resample, label map


def _naive_bilinear(x: Tensor, Hr: int, Wr: int, H: int, W: int) -> Tensor:
    """Output pixel (y, x) reads the stride-4 map at ((y + 0.5) Hr / (4 H) - 0.5, ...), clamped to
    the cells the resized image touches, bilinear; a loop over pixels, float64."""
    h4, w4 = math.ceil(Hr / 4), math.ceil(Wr / 4)
    out = torch.zeros(x.shape[0], x.shape[1], H, W, dtype=torch.float64)

    def taps(o: int, n_in: int, scale: float) -> tuple[int, int, float]:
        s = max((o + 0.5) * scale - 0.5, 0.0)
        i0 = min(int(math.floor(s)), n_in - 1)
        return i0, min(i0 + 1, n_in - 1), s - i0

    for y in range(H):
        y0, y1, fy = taps(y, h4, Hr / (4 * H))
        for xx in range(W):
            x0, x1, fx = taps(xx, w4, Wr / (4 * W))
            top = (1 - fx) * x[:, :, y0, x0] + fx * x[:, :, y0, x1]
            bottom = (1 - fx) * x[:, :, y1, x0] + fx * x[:, :, y1, x1]
            out[:, :, y, xx] = (1 - fy) * top + fy * bottom
    return out


@pytest.mark.parametrize(
    ("padded", "resized", "original"),
    [((32, 32), (32, 32), (32, 32)), ((64, 32), (64, 32), (30, 17)), ((32, 64), (22, 62), (11, 31)),
     ((32, 32), (30, 25), (45, 40)), ((64, 64), (64, 50), (64, 50))],
)  # fmt: skip
def test_one_resample_maps_pixel_centres_exactly(
    padded: tuple[int, int], resized: tuple[int, int], original: tuple[int, int]
) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, padded[0] // 4, padded[1] // 4, dtype=torch.float64)
    out = to_input_pixels(x, resized, original)
    assert out.shape == (2, 3, *original)
    torch.testing.assert_close(out, _naive_bilinear(x, *resized, *original), rtol=0, atol=1e-7)


def test_one_resample_of_an_unresized_image_is_the_4x_upsampling() -> None:
    x = torch.randn(1, 2, 8, 16)
    expected = F.interpolate(x, scale_factor=4.0, mode="bilinear", align_corners=False)
    torch.testing.assert_close(to_input_pixels(x, (32, 64), (32, 64)), expected)


def test_label_map_is_argmax_bit_for_bit() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 13, 16, 16)
    logits[0, :, :4] = 0.5  # all classes tied: the first (0)
    logits[1, :, 0, :] = torch.randint(0, 3, (13, 16)).float()  # partial ties
    logits[0, 3, 5, 5] = logits[0, 9, 5, 5] = float("nan")  # the first NaN wins
    logits[1, :, 6, 6] = float("-inf")  # all -inf
    logits[1, 2, 7, 7] = float("inf")
    got = label_map(logits)
    assert got.dtype == torch.int64 and got.shape == (2, 16, 16)
    assert torch.equal(got, logits.argmax(1))
    assert int(got[0, 0, 0]) == 0 and int(got[0, 5, 5]) == 3 and int(got[1, 7, 7]) == 2
    wide = torch.randn(1, 7, 9, 11).to(memory_format=torch.channels_last)
    assert torch.equal(label_map(wide), wide.argmax(1))


# ---------------------------------------------------------------------------------------- export


@pytest.mark.slow  # an ONNX export checked in onnxruntime (~10 s)
def test_the_shared_decoder_exports(tmp_path: Any) -> None:
    from structpred.engine import export as ex

    model = tiny(heads=("semantic", "depth"), input_size=32).eval()
    spec = ex.export_spec("multitask_narrow", model)
    path = ex.export_onnx(spec, tmp_path / "mt.onnx")
    assert ex.check_file(spec, path, "onnx", ex.check_inputs(spec)) < 1e-4
    assert tuple(spec.output_names) == ("semantic_logits", "semantic_label_map", "depth_disparity")
