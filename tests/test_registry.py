"""Registry-wide guard: every registered model keeps its task's contract.

For each name in ``list_models()``: build it (small settings for the big ones), run its task's
sample batch in train and eval mode, check the task's prediction contract both times and that
``predict=False`` gives losses only, round-trip the weights through a checkpoint (a model built
from another seed and restored predicts the same), and feed one bad input (a clear ValueError).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from structpred.engine import checkpoint as ckpt
from structpred.models import get_model, list_models, model_info
from structpred.tasks import get_task, list_tasks

# Smaller inputs / widths for the models whose defaults are sized for a GPU (same code paths).
_FEW = {"training": 50, "testing": 50}
# Fewer proposals / detections: a random detector keeps its maximum, and each one costs mask work.
_DETECTION = {"min_size": 64, "max_size": 96, "rpn_pre_nms_top_n": _FEW, "rpn_post_nms_top_n": _FEW,
              "box_detections_per_img": 10, "box_batch_size_per_image": 32}
SMALL: dict[str, dict[str, Any]] = {
    "multitask_narrow": {"input_size": 64},
    "multitask_fpn": {"input_size": 64, "fpn_channels": 32, "dense_channels": 32, "norm_groups": 8},
    "fasterrcnn_resnet50_fpn": _DETECTION,
    "fasterrcnn_mobilenet_v3_large_fpn": _DETECTION,
    "fasterrcnn_mobilenet_v3_large_320_fpn": _DETECTION,
    "fasterrcnn_fpn": {**_DETECTION, "fpn_channels": 32},
    "maskrcnn_resnet50_fpn": _DETECTION,
    "maskrcnn_fpn": {**_DETECTION, "fpn_channels": 32},
    "keypointrcnn_resnet50_fpn": {**_DETECTION, "keypoint_layers": (64, 64)},
    "keypointrcnn_fpn": {**_DETECTION, "fpn_channels": 32, "keypoint_layers": (32, 32)},
    "fast_rcnn_vgg16": {"min_size": 64, "max_size": 96, "representation_size": 64},
    "fcn32s_vgg16": {"fc_channels": 64, "width_div": 4},
    "fcn16s_vgg16": {"fc_channels": 64, "width_div": 4},
    "fcn8s_vgg16": {"fc_channels": 64, "width_div": 4},
    "deeplabv3": {"backbone": "resnet18"},
    "unet": {"base_channels": 16},  # the paper's valid convolutions and weighted loss, 1/4 as wide
    "lstm_charlm": {"vocab": "abcdefgh \n", "hidden_size": 16, "embed_dim": 8},
    "yolo_v1": {"input_size": 128, "grid_size": 4, "width_div": 16, "hidden": 64},  # the paper's layers, thin
    **{name: {"min_size": 64, "max_size": 64} for name in ("yolo_narrow", "yolov8", "yolo_fpn")},
    # A BatchNorm head at random init in eval gives near-tied scores (export parity would flip one).
    "yolo_lite": {"min_size": 64, "max_size": 64, "head_norm": "group"},
    "fcos_resnet50_fpn": {"min_size": 64, "max_size": 96},
    "fcos_fpn": {"fpn_channels": 32, "norm_groups": 8, "min_size": 64, "max_size": 96},
    **{n: {"min_size": 64, "max_size": 96, "detections_per_img": 20} for n in ("retinanet_resnet50_fpn", "retinanet_resnet50_fpn_v2")},  # noqa: E501
    "retinanet_fpn": {"fpn_channels": 32, "min_size": 64, "max_size": 96, "detections_per_img": 20},
    "retinanet_narrow_fpn": {"min_size": 64, "max_size": 64},
    # Transformer classifiers (issue 17): one block per stage at 64 px (same code paths).
    **{f"vit_{size}_patch16_224": {"depth": 1, "input_size": 64} for size in ("tiny", "small", "base")},
    **{f"swin_{size}_patch4_window7_224": {"depths": (1, 1, 1, 1), "input_size": 64}
       for size in ("tiny", "small", "base")},
    # RAFT (issue 18): 2 refinement updates instead of 12 (the same loop; export unrolls it). RAFT-large
    # 1: each of its modules runs once per update, and the state carried from one update to the next
    # (the same loop) is exported with RAFT-small's 2 (each update costs ~6 s of export).
    "raft_small": {"num_flow_updates": 2},
    "raft_large": {"num_flow_updates": 1},
    # PWC-Net (issue 18): the paper's six levels, thin estimators and context network.
    "pwcnet": {"estimator_channels": (16, 16, 16, 16, 16), "context_channels": (16, 16, 16, 16, 16, 16)},
    # Three of its five levels: the top level (the cost volume alone) and one warped level below it,
    # the body of the same level loop the others turn (each level costs ~3 s of export).
    "pwcnet_narrow": {"pyramid_channels": (16, 32, 48)},
    # Depth (issue 19): the paper-size models' code paths, thin (ResNet-18 encoder; a 16-plane volume).
    "monodepth": {"backbone": "resnet18", "decoder_widths": (32, 16, 16, 8, 8)},
    "stereo_net": {"max_disp": 64},
    # SINT (issue 20): fewer candidate circles and angles, fewer training candidates (same code).
    "sint_narrow": {"num_radii": 3, "num_angles": 6, "train_candidates": 8},
}


def _tensors(x: Any) -> list[Tensor]:
    """Every tensor in a nested prediction structure, in a fixed order."""
    if isinstance(x, Tensor):
        return [x]
    if isinstance(x, dict):
        return [t for k in sorted(x) for t in _tensors(x[k])]
    if isinstance(x, list | tuple):
        return [t for v in x for t in _tensors(v)]
    return []


def _build(name: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return get_model(name, **SMALL.get(name, {}))


def test_every_model_names_a_registered_task() -> None:
    names = list_models()
    assert len(names) >= 25
    for name in names:
        info = model_info(name)
        assert info.task in list_tasks(), f"{name}: task {info.task!r} is not registered"
        assert info.summary, f"{name}: the builder has no docstring"
        assert set(info.peer_weights) <= {"torchvision", "timm"}


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_model_keeps_its_task_contract(name: str, tmp_path: Any) -> None:
    task = get_task(model_info(name).task)
    model = _build(name, seed=0)
    inputs, targets = task.sample_batch(model, batch_size=2, seed=0)

    model.train()
    preds, losses = model(inputs, targets)
    task.check_predictions(preds, 2)
    assert losses and all(k.startswith("loss_") for k in losses), sorted(losses)
    assert all(bool(torch.isfinite(v)) for v in losses.values()), {k: float(v) for k, v in losses.items()}
    sum(losses.values()).backward()
    assert any(p.grad is not None for p in model.parameters())

    none, losses_only = model(inputs, targets, predict=False)
    assert none is None and set(losses_only) == set(losses)
    with pytest.raises(ValueError, match="asks for neither"):
        model(inputs, predict=False)

    model.eval()
    with torch.no_grad():
        preds, losses = model(inputs, targets)  # validation loss comes with the predictions
        task.check_predictions(preds, 2)
        assert set(losses) == set(losses_only)
        preds_only, no_losses = model(inputs)
    assert no_losses == {}
    task.check_predictions(preds_only, 2)

    # Weights through a checkpoint: another seed's model, restored, predicts the same.
    path = ckpt.save_checkpoint(tmp_path, 1, model, None, {"config": {"model_name": name}})
    other = _build(name, seed=1).eval()
    tensors, meta = ckpt.load_checkpoint(path)
    ckpt.restore(tensors, meta, other, rng=False)
    with torch.no_grad():
        again, _ = other(inputs)
    ours, theirs = _tensors(preds_only), _tensors(again)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b)

    # One bad input: one target too few is a clear ValueError, not an IndexError or a crash.
    with pytest.raises(ValueError):
        model(inputs, targets[:1])


# ------------------------------------------------------------------------------------ export
# Every registered model exports (torch.export and ONNX through onnxruntime) or is listed in
# NOT_EXPORTABLE with its reason. An export takes 5-60 s (tracing and the ONNX translation
# dominate, not the model's size), so every case is marked slow; CI runs them.
# At random weights some detectors output nothing: with 90 or 20 classes every class scores
# ~1/(K+1), under the box threshold 0.05. The export test lowers that threshold so non-empty
# outputs are exercised too (empty ones are checked for every detector below). Not for the
# MobileNet detectors: at random weights their scores tie (README, from_torchvision), and tied
# boxes may leave NMS / top-k in another order in onnxruntime; they are checked empty (their RPN
# drops every proposal under 0.05) and with no detections.
EXPORT_EXTRA: dict[str, dict[str, Any]] = {
    "fasterrcnn_resnet50_fpn": {"box_score_thresh": 0.001},
    "maskrcnn_resnet50_fpn": {"box_score_thresh": 0.001},
    "fast_rcnn_vgg16": {"score_thresh": 0.001},
    **{name: {"score_thresh": 0.01} for name in ("fcos_resnet50_fpn", "fcos_fpn", "fcos_narrow_fpn")},  # ~.07
    **{name: {"score_thresh": 0.005} for name in list_models() if name.startswith("retinanet")},  # prior 0.01
    "retinanet_fpn": {"prior_probability": 0.5, "detections_per_img": 50},  # scores 25x farther apart
    # at random weights the multi-task detection heads' scores tie from the 7th box on (~0.088)
    **{name: {"detection": {"detections_per_img": 5}} for name in ("multitask_narrow", "multitask_fpn")},
}
TIED_AT_RANDOM = {m for m in list_models() if "mobilenet" in m}


def _background_row(p: Tensor) -> None:
    p[0] = 1e4  # a softmax box classifier: the background row wins on any non-negative input


def _never_fire(p: Tensor) -> None:
    p.fill_(-1e4)  # a sigmoid classification / confidence bias: every score ~0


# How to make a detector output nothing, by the name ending of the one parameter to edit (the
# first match in the model's named_parameters wins). Two-stage: every RoI background. One-stage
# detectors add their classification (or confidence) bias here.
NO_DETECTIONS: dict[str, Any] = {
    "box_predictor.cls_score.weight": _background_row,
    "head.cell_predictor.bias": _never_fire,  # YOLO v1: its last FC; -1e4 clamps every confidence to 0
    "head.cls_bias": _never_fire,  # the modern YOLO: every level's class biases, [L, K]
    "head.classification_head.cls_logits.bias": _never_fire,  # FCOS, RetinaNet
}


def _no_detections(model: torch.nn.Module) -> str:
    """Make every detection fail the score threshold on any image (:data:`NO_DETECTIONS`), so a
    detector's output is empty. Returns the parameter's name, to edit the exported copies the
    same way (ONNX keeps this tensor as an initializer of that name; the export test does not
    run the optimiser, which may fold a bias away)."""
    for name, p in model.named_parameters():
        for suffix, edit in NO_DETECTIONS.items():
            if name.endswith(suffix):
                with torch.no_grad():
                    edit(p)
                return name
    raise AssertionError(f"{type(model).__name__}: no parameter named in NO_DETECTIONS")


def _onnx_with(path: Any, param: str, value: Tensor) -> Any:
    """An onnxruntime session for ``path`` with initializer ``param`` replaced by ``value``."""
    import onnx
    from onnx import numpy_helper

    from structpred.engine.export import onnx_session

    proto = onnx.load(str(path))
    found = [t for t in proto.graph.initializer if t.name.endswith(param)]
    assert len(found) == 1, (param, [t.name for t in proto.graph.initializer][:20])
    array = value.detach().numpy()
    if tuple(found[0].dims) != array.shape:  # stored transposed for a MatMul
        array = array.T
    assert tuple(found[0].dims) == array.shape, (tuple(found[0].dims), array.shape)
    found[0].CopyFrom(numpy_helper.from_array(array, found[0].name))
    edited = path.with_name("edited.onnx")
    onnx.save(proto, str(edited))
    return onnx_session(edited)


def _assert_same(eager: tuple[Tensor, ...], got: tuple[Tensor, ...], where: str) -> None:
    assert len(eager) == len(got), where
    for k, (a, b) in enumerate(zip(eager, got, strict=True)):
        assert a.shape == b.shape, f"{where}: output {k} {tuple(a.shape)} vs {tuple(b.shape)}"
        assert a.dtype == b.dtype, f"{where}: output {k} {a.dtype} vs {b.dtype}"
        torch.testing.assert_close(b, a, atol=2e-4, rtol=1e-4, msg=f"{where}: output {k}")


# The models whose torch.export program the parity test saves to a file and loads back: one per
# family and code path (two-stage with RoIAlign and masks, RoIPool, FCN, DeepLab, U-Net, CNN, STN,
# RNN, LSTM); the others are checked on the same program in memory.
FILE_ROUND_TRIP = {
    "fast_rcnn_narrow", "maskrcnn_narrow_fpn", "fcn8s_narrow", "deeplab_narrow",
    "unet_narrow", "digits_cnn", "stn_digits", "rnn_adding", "lstm_charlm",
}  # fmt: skip

# Registered variants whose exported graph is the code of other export cases with other widths,
# depths or class counts: each export costs 5-60 s of tracing and ONNX translation, so these are
# not exported again. Each is still built, run and checked by test_model_keeps_its_task_contract,
# and test_export_is_covered_by_the_named_cases checks that its export wrapper, names and axes are
# those of its first covering case (one of its task) and that every module class it holds is in a
# covering case.
EXPORT_COVERED_BY: dict[str, tuple[str, ...]] = {
    # The same model: the 320 px variant's only other settings (sizes, RPN top-n) are SMALL's here.
    "fasterrcnn_mobilenet_v3_large_320_fpn": ("fasterrcnn_mobilenet_v3_large_fpn",),
    # The R-CNN family: backbone x head. The frozen-BN ResNet-50 + FPN, the any-backbone ResNet-18
    # + FPN and MobileNet are exported under Faster R-CNN; the narrow backbone with NARROW_SETTINGS
    # (one sample per RoIAlign bin) under Mask R-CNN and Keypoint R-CNN, whose graphs hold Faster
    # R-CNN's (RPN, box head) plus the mask head and paste, the keypoint head and heatmap decoding.
    "fasterrcnn_narrow_fpn": ("fasterrcnn_fpn", "maskrcnn_narrow_fpn"),
    "maskrcnn_resnet50_fpn": ("maskrcnn_narrow_fpn", "fasterrcnn_resnet50_fpn"),
    "maskrcnn_fpn": ("maskrcnn_narrow_fpn", "fasterrcnn_fpn"),
    "keypointrcnn_resnet50_fpn": ("keypointrcnn_narrow_fpn", "fasterrcnn_resnet50_fpn"),
    "keypointrcnn_fpn": ("keypointrcnn_narrow_fpn", "fasterrcnn_fpn"),
    # One-stage: RetinaNet's head with the background channel and the ResNet-50 C3-C5 trunk (v2),
    # the frozen-BN ResNet-50 + P6P7-from-P5 pyramid (FCOS-R50), towers without norm (retinanet_fpn).
    "retinanet_resnet50_fpn": ("retinanet_resnet50_fpn_v2", "fcos_resnet50_fpn", "retinanet_fpn"),
    # FCOS's head with GroupNorm(8) towers (narrow); the ResNet-18 C3-C5 + P6P7 pyramid (the same
    # p6p7_pyramid under RetinaNet).
    "fcos_fpn": ("fcos_narrow_fpn", "retinanet_fpn"),
    # The same dilated (output stride 8) batch-norm ResNet-50 under the FCN head; the ASPP head
    # (deeplab_narrow: the same head on a dilated narrow trunk).
    "deeplabv3_resnet50": ("fcn_resnet50", "deeplab_narrow"),
    # The ASPP head (deeplab_narrow) on ResNet-18's blocks (monodepth's encoder; batch norm: narrow).
    "deeplabv3": ("deeplab_narrow", "monodepth"),
    # FCN: FCN-8s's two skip fusions hold FCN-16s's one; the narrow trunk (batch norm, pad 1) under
    # fcn8s_narrow, the paper's trunk (no norm, pad 100 and its crops) and the single 32x upsampling
    # under fcn32s_vgg16.
    "fcn32s_narrow": ("fcn8s_narrow", "fcn32s_vgg16"),
    "fcn16s_narrow": ("fcn8s_narrow", "fcn32s_vgg16"),
    "fcn16s_vgg16": ("fcn32s_vgg16", "fcn8s_narrow"),
    "fcn8s_vgg16": ("fcn32s_vgg16", "fcn8s_narrow"),
    # The same blocks at other widths and head counts (SMALL: one block per stage).
    "swin_small_patch4_window7_224": ("swin_tiny_patch4_window7_224",),
    "swin_base_patch4_window7_224": ("swin_tiny_patch4_window7_224",),
    "vit_small_patch16_224": ("vit_tiny_patch16_224",),
    "vit_base_patch16_224": ("vit_tiny_patch16_224",),
    # The same CSP-Darknet, neck and head at other widths (and reg_max).
    "yolov8": ("yolo_narrow",),
    # The same neck and head (yolo_narrow) on ResNet-18's stride 8-32 maps (under RetinaNet's pyramid).
    "yolo_fpn": ("yolo_narrow", "retinanet_fpn"),
    # Sequence models: one cell type per wrapper is enough (the same SequenceRegressor / Classifier).
    "lstm_adding": ("lstm_sunspots",),  # the same LSTM regressor, 2 inputs and another width
    "rnn_vowels": ("lstm_vowels", "rnn_adding"),  # the classifier's readout; the tanh RNN cell
    # stn_digits's classifier with the transformer switched off (its graph less the localisation net).
    "cnn_digits": ("stn_digits",),
    # The same cost volume, 3-D hourglass and soft argmin, wider and over 48 planes.
    "stereo_net": ("stereo_net_narrow",),
    # pwcnet_narrow's cosine cost is the paper's dot cost (local_correlation) on normalised features;
    # the paper's sixth level is one more turn of the same level loop.
    "pwcnet": ("pwcnet_narrow",),
}
EXPORT_CASES = [name for name in list_models() if name not in EXPORT_COVERED_BY]
#: Covered variants whose model under SMALL is their first covering case's, setting for setting.
SAME_UNDER_SMALL = {"fasterrcnn_mobilenet_v3_large_320_fpn"}


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPORT_CASES)
def test_model_exports_with_parity(name: str, tmp_path: Any) -> None:
    from structpred.engine import export as ex

    if name in ex.NOT_EXPORTABLE:
        reason = ex.NOT_EXPORTABLE[name]
        assert len(reason) > 20, f"{name}: NOT_EXPORTABLE needs the precise reason"
        pytest.skip(f"not exportable: {reason}")
    torch.manual_seed(0)
    model = get_model(name, **{**SMALL.get(name, {}), **EXPORT_EXTRA.get(name, {})}).eval()
    spec = ex.export_spec(name, model)
    program = ex.export_program(spec)
    # Without the exporter's graph clean-up (half the export time; the same translation, and
    # onnxruntime optimises on load): the CLI's optimised files are checked in test_cli_export.py.
    path = ex.export_onnx(spec, tmp_path / f"{name}.onnx", program=program, optimize=False)
    session = ex.onnx_session(path)
    if name in FILE_ROUND_TRIP:  # one model per code path goes through a .pt2 file and back
        saved = tmp_path / f"{name}.pt2"
        torch.export.save(program, str(saved))
        loaded = torch.export.load(str(saved)).module()
    else:  # the same program, in memory (saving and loading a large graph costs seconds)
        loaded = program.module()
    inputs = ex.check_inputs(spec)
    dynamic = [axes for axes in spec.dynamic if axes]
    assert len(inputs) == (2 if dynamic else 1)
    if dynamic:  # the second input really differs along the dynamic axes
        assert [x.shape for x in inputs[0]] != [x.shape for x in inputs[1]]
    for x in inputs:
        eager = ex.run_eager(spec, x)
        where = f"{name} on {[tuple(t.shape) for t in x]}"
        _assert_same(eager, ex.run_onnx(session, x), f"{where} (onnxruntime)")
        _assert_same(eager, tuple(loaded(*x)), f"{where} (torch.export)")
    if spec.task in ("detection", "instance_segmentation"):
        if name not in TIED_AT_RANDOM:
            assert ex.run_eager(spec, inputs[0])[0].shape[0] > 0, "the detector should detect something"
        param = _no_detections(model)
        value = dict(model.named_parameters())[param]
        blank = tuple(torch.zeros_like(t) if t.dim() == 4 else t for t in inputs[0])  # a blank image
        edited = _onnx_with(path, param, value)
        [p for n, p in loaded.named_parameters() if n.endswith(param)][0].data.copy_(value)
        for x in (inputs[0], blank):
            eager = ex.run_eager(spec, x)
            assert eager[0].shape[0] == 0, "background everywhere: no detections"
            _assert_same(eager, ex.run_onnx(edited, x), f"{name}: none (onnxruntime)")
            _assert_same(eager, tuple(loaded(*x)), f"{name}: none (torch.export)")


def test_file_round_trip_names_registered_models() -> None:
    assert FILE_ROUND_TRIP <= set(list_models())


def _settings(x: Any) -> Any:
    """Every setting of a module tree (each submodule's public attributes, tensors by shape and
    dtype, helper objects by their attributes, functions by name), comparable with ``==``."""
    if isinstance(x, torch.nn.Module):
        return [(n, type(m).__name__, _settings({k: v for k, v in vars(m).items() if not k.startswith("_")}))
                for n, m in x.named_modules()]  # fmt: skip
    if isinstance(x, Tensor):
        return ("tensor", tuple(x.shape), x.dtype)
    if isinstance(x, dict):
        return {k: _settings(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_settings(v) for v in x]
    if isinstance(x, type) or getattr(x, "__qualname__", None):  # a class or a function
        return getattr(x, "__qualname__", repr(x))
    if hasattr(x, "__dict__"):  # a helper object (box coder, matcher): its attributes
        return (type(x).__name__, _settings(vars(x)))
    return x


def _export_build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return get_model(name, **{**SMALL.get(name, {}), **EXPORT_EXTRA.get(name, {})}).eval()


@pytest.mark.parametrize("name", sorted(EXPORT_COVERED_BY))
def test_export_is_covered_by_the_named_cases(name: str) -> None:
    from structpred.engine import export as ex

    covering = EXPORT_COVERED_BY[name]
    assert name in list_models() and name not in ex.NOT_EXPORTABLE
    for other in covering:
        assert other in EXPORT_CASES and other not in ex.NOT_EXPORTABLE, f"{name}: {other} is not exported"
    model, first = _export_build(name), _export_build(covering[0])
    spec, theirs = ex.export_spec(name, model), ex.export_spec(covering[0], first)
    assert type(spec.wrapper) is type(theirs.wrapper), (name, covering[0])
    assert (spec.task, spec.input_names, spec.output_names, spec.dynamic) == (
        theirs.task, theirs.input_names, theirs.output_names, theirs.dynamic,
    ), f"{name} exports other inputs / outputs than {covering[0]}"  # fmt: skip
    exported = {type(m) for other in covering for m in _export_build(other).modules()}
    missing = sorted(t.__qualname__ for t in {type(m) for m in model.modules()} - exported)
    assert not missing, f"{name}: {missing} exported by none of {covering}; export {name} in the test"
    if name in SAME_UNDER_SMALL:
        assert _settings(model) == _settings(first), f"{name} and {covering[0]} differ under SMALL"
