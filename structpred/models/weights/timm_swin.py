"""timm Swin Transformer (v1) in: our :func:`~structpred.models.swin.swin_classifier` with the same
tensors.

Supported: timm 1.0's ``SwinTransformer`` (``swin_{tiny,small,base}_patch4_window7_224`` and any
other v1 sizes / windows), random or loaded weights, any ``num_classes >= 1``: its patch size,
width, depths, heads, per-stage windows (timm clips a window to a smaller map when it is built:
ours is built with the clipped window), MLP ratio, qkv bias, drop path rate, head dropout, input
size and mean / std (``pretrained_cfg``), and train / eval mode. Refused with a ``ValueError``
naming the attribute: Swin v2 (``logit_scale`` / ``cpb_mlp`` in the attention), a non-square
window, ``always_partition``, another pooling than ``avg``, a headless model (``num_classes=0``),
another norm than LayerNorm(eps 1e-5). The timm model is only read; nothing here imports timm.

timm name                                   ->  ours
    patch_embed.{proj,norm}.*               ->  backbone.patch_embed.*
    layers.i.downsample.{norm,reduction}.*  ->  backbone.layers.i.downsample.*
    layers.i.blocks.j.{norm1, attn.{qkv, proj, relative_position_bias_table}, norm2, mlp.{fc1, fc2}}
                                            ->  backbone.layers.i.blocks.j.* (the same)
    norm.*                                  ->  backbone.norm.*
    head.fc.*                               ->  head.*
    *.relative_position_index, *.attn_mask  ->  skipped (buffers rebuilt here; old files hold them)

A state dict file (``load_weights``) is recognised by ``layers.0.blocks.0.attn.relative_position_bias_table``
next to ``patch_embed.proj.weight``; v2 files (``logit_scale``) and the original Microsoft layout
(``layers.0.downsample``: merging at the end of a stage) are refused by name.

Another input size needs nothing (Swin has no absolute positions; windows are padded or clipped per
map). Another *window* (e.g. ``swin_base_patch4_window12_384`` weights into our window-7 model) would
need the relative position tables resampled, as timm's ``checkpoint_filter_fn`` does; that is not
supported: :func:`adapt_state` refuses it with a ``ValueError`` naming both windows (build ours with
the file's ``window_size``: the classifier builders take it).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from ...backbones.swin import SwinConfig, SwinTransformer
from ...backbones.swin_window import window_and_shift
from ..image_classifier import ImageClassifier
from ..swin import swin_classifier
from .renamer import Rule, copy_renamed, rename_all

logger = logging.getLogger(__name__)

SUPPORTED = "Swin (swin_tiny_patch4_window7_224, swin_small_patch4_window7_224, swin_base_patch4_window7_224)"

_BLOCK = r"layers\.(\d+)\.blocks\.(\d+)\."
RULES: tuple[Rule, ...] = (
    (r"patch_embed\.(proj|norm)\.(weight|bias)", r"backbone.patch_embed.\1.\2"),
    (
        r"layers\.(\d+)\.downsample\.(norm\.weight|norm\.bias|reduction\.weight)",
        r"backbone.layers.\1.downsample.\2",
    ),
    (
        _BLOCK + r"(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)",
        r"backbone.layers.\1.blocks.\2.\3.\4",
    ),
    (
        _BLOCK + r"attn\.relative_position_bias_table",
        r"backbone.layers.\1.blocks.\2.attn.relative_position_bias_table",
    ),
    (r"norm\.(weight|bias)", r"backbone.norm.\1"),
    (r"head\.fc\.(weight|bias)", r"head.\1"),
)
SKIP: tuple[str, ...] = (r".*\.relative_position_index", r".*\.attn_mask")
_STATE_MARKER = "layers.0.blocks.0.attn.relative_position_bias_table"
_V2_ATTRIBUTES = ("logit_scale", "cpb_mlp")


def recognises(timm_model: nn.Module) -> bool:
    """A timm Swin: ``patch_embed``, ``norm``, ``head`` and ``layers`` of stages with ``blocks``
    whose attention has a relative position table (v1) or a ``logit_scale`` (v2, refused by convert)."""
    m: Any = timm_model
    layers = getattr(m, "layers", None)
    if not all(hasattr(m, name) for name in ("patch_embed", "norm", "head")) or not isinstance(
        layers, nn.Sequential
    ):
        return False
    blocks = getattr(layers[0], "blocks", None) if len(layers) else None
    attn = (
        getattr(blocks[0], "attn", None)
        if isinstance(blocks, (nn.Sequential, nn.ModuleList)) and len(blocks)
        else None
    )
    return attn is not None and any(
        hasattr(attn, name) for name in ("relative_position_bias_table", *_V2_ATTRIBUTES)
    )


def _refuse(condition: bool, message: str) -> None:
    if condition:
        raise ValueError(f"timm Swin: {message}; supported: {SUPPORTED} (v1)")


def _square(value: Any, where: str) -> int:
    pair = tuple(int(v) for v in (value if isinstance(value, (tuple, list)) else (value, value)))
    _refuse(pair[0] != pair[1], f"{where} is {pair}: only square windows are supported")
    return pair[0]


def _config(m: Any) -> SwinConfig:
    """Our :class:`SwinConfig` from the timm model's modules (validated block by block)."""
    proj = m.patch_embed.proj
    _refuse(int(proj.in_channels) != 3, f"patch_embed.proj takes {proj.in_channels} channels, not 3")
    patch = _square(proj.kernel_size, "patch_embed.proj.kernel_size")
    _refuse(_square(proj.stride, "patch_embed.proj.stride") != patch, "patch stride differs from patch size")
    _refuse(bool(getattr(m, "global_pool", "avg") != "avg"), f"global_pool {m.global_pool!r} (only 'avg')")
    norms = [mod for mod in m.modules() if isinstance(mod, nn.LayerNorm)]
    _refuse(any(abs(n.eps - 1e-5) > 1e-12 for n in norms), "a LayerNorm with eps != 1e-5")
    depths, heads, windows, rates = [], [], [], []
    dim = int(proj.out_channels)
    mlp_ratio, qkv_bias = None, None
    for i, stage in enumerate(m.layers):
        stage_windows = set()
        for j, block in enumerate(stage.blocks):
            where = f"layers.{i}.blocks.{j}"
            attn = block.attn
            for name in _V2_ATTRIBUTES:
                _refuse(hasattr(attn, name), f"{where}.attn.{name}: Swin v2 is not supported")
            _refuse(bool(getattr(block, "always_partition", False)), f"{where}.always_partition=True")
            width = int(block.norm1.normalized_shape[0])
            _refuse(
                int(attn.qkv.out_features) != 3 * width or int(attn.proj.in_features) != width,
                f"{where}.attn: head_dim x num_heads != dim",
            )
            window = _square(attn.window_size, f"{where}.attn.window_size")
            stage_windows.add(window)
            # timm set window / shift from its input_resolution: ours, from the map in hand, must agree there.
            target = int(block.target_shift_size[0]) and window // 2
            expected = window_and_shift(tuple(block.input_resolution), window, target, "timm")
            actual = (tuple(block.window_size), tuple(block.shift_size))
            _refuse(expected != actual, f"{where}: window / shift {actual} is not timm's rule {expected}")
            ratio = block.mlp.fc1.out_features / width
            _refuse(
                mlp_ratio is not None and ratio != mlp_ratio, f"{where}.mlp: MLP ratio differs between blocks"
            )
            mlp_ratio, qkv_bias = ratio, attn.qkv.bias is not None
            rates.append(float(getattr(block.drop_path1, "drop_prob", 0.0) or 0.0))
        _refuse(len(stage_windows) != 1, f"layers.{i}: blocks with different windows {sorted(stage_windows)}")
        depths.append(len(stage.blocks))
        heads.append(int(stage.blocks[0].attn.num_heads))
        windows.append(stage_windows.pop())
        _refuse(
            int(stage.blocks[0].norm1.normalized_shape[0]) != dim * 2**i,
            f"layers.{i}: width is not C * 2**{i}",
        )
    return SwinConfig(
        patch_size=patch,
        embed_dim=dim,
        depths=tuple(depths),
        num_heads=tuple(heads),
        window_size=windows[0] if len(set(windows)) == 1 else tuple(windows),
        mlp_ratio=float(mlp_ratio or 4.0),
        qkv_bias=bool(qkv_bias),
        drop_path_rate=rates[-1],
        window_rule="timm",
    )


def convert(timm_model: nn.Module) -> ImageClassifier:
    """Our Swin classifier with ``timm_model``'s weights and settings, in its train / eval mode.

    Raises:
        ValueError: a variant named in the module doc as refused, or tensors that do not map one to one.
    """
    m: Any = timm_model
    fc: Any = getattr(m.head, "fc", None)
    _refuse(not isinstance(fc, nn.Linear), "head.fc is not a Linear (num_classes=0, a headless model)")
    config = _config(m)
    cfg = dict(getattr(m, "pretrained_cfg", None) or {})
    size = tuple(
        int(s) for s in getattr(m.patch_embed, "img_size", None) or cfg.get("input_size", (3, 224, 224))[1:]
    )
    if size[0] != size[1]:
        logger.warning("timm Swin built for %s: our classifier resizes to %d squared", size, size[0])
    drop = getattr(getattr(m.head, "drop", None), "p", 0.0)
    model = swin_classifier(
        SwinTransformer(config),
        int(fc.out_features),
        size[0],
        float(drop),
        tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
        tuple(cfg.get("std", (0.229, 0.224, 0.225))),
    )
    copy_renamed(model, timm_model, RULES, skip=SKIP)
    model.train(timm_model.training)
    logger.info(
        "converted timm Swin (C %d, depths %s, %d classes)",
        config.embed_dim,
        config.depths,
        int(fc.out_features),
    )
    return model


# ----------------------------------------------------------------- from a state dict file


def recognises_state(names: Collection[str]) -> bool:
    """A timm Swin ``state_dict`` (v1, v2 or Microsoft's layout; the latter two refused by
    :func:`state_rules`): ``layers.0.blocks.0.attn.*`` and ``patch_embed.proj.weight``."""
    return "patch_embed.proj.weight" in names and any(
        name.startswith("layers.0.blocks.0.attn.") for name in names
    )


def state_family(names: Collection[str]) -> str:
    """``"timm Swin"`` (``v2`` when the attention has a ``logit_scale``)."""
    return "timm Swin v2" if any(name.endswith("attn.logit_scale") for name in names) else "timm Swin"


def state_rules(model: nn.Module, names: Collection[str]) -> tuple[tuple[Rule, ...], tuple[str, ...]]:
    """``(rules, skip)`` to fill our Swin classifier ``model`` from a timm Swin state dict.

    Raises:
        ValueError: ``model`` is not our Swin classifier; a v2 file; Microsoft's original layout.
    """
    if not isinstance(model, ImageClassifier) or not isinstance(model.backbone, SwinTransformer):
        raise ValueError(f"timm Swin weights need a Swin classifier (swin_*), not {type(model).__name__}")
    v2 = sorted(n for n in names if n.endswith(("attn.logit_scale", "cpb_mlp.0.weight")))
    if v2:
        raise ValueError(f"Swin v2 weights ({v2[0]}) are not supported: only v1 ({SUPPORTED})")
    if "layers.0.downsample.reduction.weight" in names:
        raise ValueError(
            "layers.0.downsample.reduction.weight: the original (Microsoft) layout merges at the end of a "
            "stage; load the file into timm's SwinTransformer (its checkpoint_filter_fn), save its state_dict"
        )
    return RULES, SKIP


def check_window_tables(
    model: nn.Module, state: Mapping[str, Tensor], rules: Sequence[Rule], skip: Sequence[str], family: str
) -> dict[str, Tensor]:
    """``state`` unchanged, after checking that every relative position bias table in it is for the
    window of the block of ours it fills (shared with the torchvision family).

    Raises:
        ValueError: a table of another window (both windows and shapes named): resampling relative
            position tables to another window is not supported.
    """
    mine = model.state_dict()
    for src, dst in rename_all(state, rules, skip).items():
        if not dst.endswith("relative_position_bias_table") or dst not in mine:
            continue
        theirs, ours = tuple(state[src].shape), tuple(mine[dst].shape)
        if len(theirs) != 2 or theirs == ours:
            continue  # equal, or not a table at all: the renamer names any other mismatch
        window, side = (math.isqrt(ours[0]) + 1) // 2, math.isqrt(theirs[0])  # a table is (2w - 1)^2 rows
        w = (side + 1) // 2
        square = side * side == theirs[0]
        raise ValueError(
            f"{family}: {src} {theirs} is the table of {f'a {w} x {w}' if square else 'another'} window, "
            f"ours ({dst}) of a {window} x {window} window {ours}: resampling relative position tables to "
            "another window size is not supported; build the model with the file's window"
            + (f" (window_size={w})" if square else "")
        )
    return dict(state)


def adapt_state(model: nn.Module, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The timm Swin ``state`` for ``model``: unchanged, its windows checked (:func:`check_window_tables`)."""
    rules, skip = state_rules(model, state)
    return check_window_tables(model, state, rules, skip, "timm Swin")
