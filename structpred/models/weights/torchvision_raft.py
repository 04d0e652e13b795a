"""torchvision RAFT in: our :class:`~structpred.models.raft.RAFT` with the same tensors.

Supported: torchvision's ``raft_large`` and ``raft_small`` (any weights, or a ``RAFT`` built
from torchvision's own ``FeatureEncoder`` / ``CorrBlock`` / ``UpdateBlock`` / ``MaskPredictor``
with other widths), in its train / eval mode. Our module tree uses torchvision's names, so every
tensor maps to the tensor of the same name (one identity rule through the strict renamer: every
name, shape and count is still checked). Settings are read from the modules: encoder widths,
block kind (residual / bottleneck) and norm (instance without affine parameters, batch, none),
correlation levels and radius, motion encoder widths, GRU kernels, flow head width, the mask
predictor's width and multiplier. Refused with a ``ValueError`` naming the part: encoder strides
other than (2, 1, 2, 2), an affine or tracking instance norm, submodules that are not
torchvision's classes (a user's injected replacement). The torchvision model is only read;
nothing here imports torchvision.

Inputs: torchvision's ``RAFT.forward(image1, image2)`` takes frames in [-1, 1]; so does our
:meth:`~structpred.models.raft.RAFT.flow`, which returns the same list.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

from torch import nn

from ...heads.raft_update import MaskPredictor
from ..raft import RAFT, RaftConfig
from .renamer import Rule, copy_renamed

logger = logging.getLogger(__name__)

SUPPORTED = "RAFT (raft_large, raft_small)"
RULES: tuple[Rule, ...] = ((r"(.+)", r"\1"),)  # same names (the module doc)
_PARTS = ("feature_encoder", "context_encoder", "corr_block", "update_block", "mask_predictor")


def recognises(tv_model: nn.Module) -> bool:
    """A torchvision RAFT: ``feature_encoder``, ``context_encoder``, ``corr_block`` (with
    ``build_pyramid`` / ``index_pyramid``), ``update_block`` and ``mask_predictor`` (maybe None)."""
    m: Any = tv_model
    corr = getattr(m, "corr_block", None)
    return (
        not isinstance(tv_model, RAFT)
        and all(hasattr(m, name) for name in _PARTS)
        and hasattr(corr, "build_pyramid")
        and hasattr(corr, "index_pyramid")
    )


def _refuse(condition: bool, message: str) -> None:
    if condition:
        raise ValueError(f"torchvision RAFT: {message}; supported: {SUPPORTED}")


def _norm(module: nn.Module, where: str) -> str | None:
    """``"instance"`` / ``"batch"`` / None from a ``Conv2dNormActivation``'s second child."""
    second = module[1] if isinstance(module, nn.Sequential) and len(module) > 1 else None
    if isinstance(second, nn.InstanceNorm2d):
        _refuse(
            second.affine or second.track_running_stats,
            f"{where}: an InstanceNorm2d with affine parameters or running statistics",
        )
        return "instance"
    if isinstance(second, nn.BatchNorm2d):
        return "batch"
    _refuse(not isinstance(second, nn.ReLU), f"{where}: norm {type(second).__name__} is not supported")
    return None


def _encoder(enc: Any, where: str) -> tuple[tuple[int, ...], str, str | None]:
    """(layers, block, norm) of a torchvision ``FeatureEncoder``."""
    _refuse(type(enc).__name__ != "FeatureEncoder", f"{where} is {type(enc).__name__}, not FeatureEncoder")
    first = enc.layer1[0]
    kind = type(first).__name__
    _refuse(kind not in ("ResidualBlock", "BottleneckBlock"), f"{where}.layer1.0 is a {kind}")
    # The stride sits on a residual block's first 3 x 3 conv, on a bottleneck's middle one.
    strided, last = (
        ("convnormrelu2", "convnormrelu3")
        if kind == "BottleneckBlock"
        else ("convnormrelu1", "convnormrelu2")
    )
    strides = [int(enc.convnormrelu[0].stride[0])]
    widths = [int(enc.convnormrelu[0].out_channels)]
    for name in ("layer1", "layer2", "layer3"):
        stage = getattr(enc, name)
        _refuse(len(stage) != 2, f"{where}.{name} has {len(stage)} blocks, not 2")
        strides.append(int(getattr(stage[0], strided)[0].stride[0]))
        widths.append(int(getattr(stage[1], last)[0].out_channels))
    _refuse(strides != [2, 1, 2, 2], f"{where}: strides {strides}, not (2, 1, 2, 2)")
    widths.append(int(enc.conv.out_channels))
    block_name = "bottleneck" if kind == "BottleneckBlock" else "residual"
    return tuple(widths), block_name, _norm(enc.convnormrelu, f"{where}.convnormrelu")


def _config(m: Any) -> tuple[RaftConfig, MaskPredictor | None]:
    feature_layers, feature_block, feature_norm = _encoder(m.feature_encoder, "feature_encoder")
    context_layers, context_block, context_norm = _encoder(m.context_encoder, "context_encoder")
    ub = m.update_block
    _refuse(type(ub).__name__ != "UpdateBlock", f"update_block is {type(ub).__name__}")
    me, rb, fh = ub.motion_encoder, ub.recurrent_block, ub.flow_head
    corr_layers = [int(me.convcorr1[0].out_channels)]
    if not isinstance(me.convcorr2, nn.Identity):  # a second (3 x 3) correlation conv
        corr_layers.append(int(me.convcorr2[0].out_channels))
    grus = [rb.convgru1] + ([rb.convgru2] if isinstance(rb.convgru2, nn.Module) else [])
    kernels = tuple(tuple(int(k) for k in g.convz.kernel_size) for g in grus)
    paddings = tuple(tuple(int(p) for p in g.convz.padding) for g in grus)
    mp = m.mask_predictor
    config = RaftConfig(
        feature_layers=feature_layers,
        feature_block=feature_block,
        feature_norm=feature_norm,
        context_layers=context_layers,
        context_block=context_block,
        context_norm=context_norm,
        corr_levels=int(m.corr_block.num_levels),
        corr_radius=int(m.corr_block.radius),
        motion_corr_layers=tuple(corr_layers),
        motion_flow_layers=(int(me.convflow1[0].out_channels), int(me.convflow2[0].out_channels)),
        motion_out_channels=int(me.out_channels),
        hidden_size=int(rb.hidden_size),
        gru_kernels=kernels,
        gru_paddings=paddings,
        flow_head_hidden=int(fh.conv1.out_channels),
        convex_upsampling=mp is not None,
    )
    mask = None
    if mp is not None:
        _refuse(type(mp).__name__ != "MaskPredictor", f"mask_predictor is {type(mp).__name__}")
        mask = MaskPredictor(
            in_channels=config.hidden_size,
            hidden_size=int(mp.convrelu[0].out_channels),
            multiplier=float(mp.multiplier),
        )
    return config, mask


def convert(tv_model: nn.Module) -> RAFT:
    """Our RAFT with ``tv_model``'s weights and settings, in its train / eval mode.

    Raises:
        ValueError: a variant the module doc refuses, or tensors that do not map one to one.
    """
    config, mask = _config(tv_model)
    model = RAFT(config, mask_predictor=mask)
    copy_renamed(model, tv_model, RULES)
    model.train(tv_model.training)
    logger.info(
        "converted torchvision RAFT (features %s, radius %d, %s upsampling)",
        config.feature_layers,
        config.corr_radius,
        "convex" if mask is not None else "bilinear",
    )
    return model


# ----------------------------------------------------------------- from a state dict file


def recognises_state(names: Collection[str]) -> bool:
    """A torchvision RAFT ``state_dict``: the feature encoder's stem and the recurrent block."""
    return "feature_encoder.convnormrelu.0.weight" in names and any(
        n.startswith("update_block.recurrent_block.") for n in names
    )


def state_family(names: Collection[str]) -> str:
    """``"torchvision RAFT-large"`` (convex upsampling) or ``"torchvision RAFT-small"``."""
    return "torchvision RAFT-large" if "mask_predictor.conv.weight" in names else "torchvision RAFT-small"


def state_rules(model: nn.Module, names: Collection[str]) -> tuple[tuple[Rule, ...], tuple[str, ...]]:
    """``(rules, skip)`` to fill our RAFT ``model`` from a torchvision RAFT state dict.

    Raises:
        ValueError: ``model`` is not our RAFT (build ``raft_large`` for a large file,
            ``raft_small`` for a small one).
    """
    if not isinstance(model, RAFT):
        raise ValueError(
            f"torchvision RAFT weights need a RAFT model (raft_large / raft_small), "
            f"not {type(model).__name__}"
        )
    return RULES, ()
