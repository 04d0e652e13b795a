"""A unified multi-task network: one backbone + FPN, several structured heads, one summed loss.

Shape shorthand: B images (one size per batch), H x W their size, Hr x Wr after the model's
resize, Hp x Wp the padded batch, D the pyramid's channels.

"Multi-task structure prediction allows for unified networks": Faster R-CNN already shares its
convolutions between the RPN and the detector; here one backbone's pyramid (P2-P5 + P6, P7)
feeds a dict of heads (:mod:`.multitask_heads`), each keeping its own task's contract:

=============  =========================  ============================  =======================
head           task (its predictions)     targets it reads              loss terms
=============  =========================  ============================  =======================
``detection``  detection (list of dicts)  ``boxes``, ``labels``         FCOS's three
``semantic``   semantic_segmentation      ``semantic``                  cross-entropy
``parts``      semantic_segmentation      ``parts``                     cross-entropy
``depth``      monocular_depth            ``depth`` (or ``disparity``)  L1 of log disparity
=============  =========================  ============================  =======================

Pipeline: :class:`~structpred.layers.transform.DetectionTransform` (normalise, resize the shorter
side to ``input_size``, pad to 32) -> backbone + FPN -> (the shared dense decoder) -> every head
-> predictions ``{head: its task's predictions}`` in the input's pixels.

Dense decoder (``dense_decoder``): ``"per_head"`` (default) gives each dense head (semantic, parts,
depth) its own whole Panoptic-FPN semantic branch; ``"shared"`` computes that branch (P2..P5 -> one
stride-4 map of ``dense_channels``) once, as part of the shared neck, and each dense head is a light
predictor on it (``dense_head_convs`` 3x3 stages + 1x1): 0.37x the FLOPs of the four single-task
networks instead of 0.55x, but trained here it loses 7 points of parts mIoU (docs/multitask.md),
so it is the option, not the default. ``dense_own`` (e.g. ``("parts",)``) keeps a whole branch
for the named dense heads while the others share the decoder: with uncertainty weighting it is the
layout that met the accuracy goal (docs/multitask.md). Sharing the decoder, not only the pyramid,
follows UberNet (Kokkinos 2017), PAD-Net (Xu et al. 2018) and MTI-Net (Vandenhende et al. 2020),
whose dense tasks share a decoder and keep task-specific predictors.

GradNorm's "last shared layer" (:meth:`MultiTaskNet.shared_parameters`) is the last layer every
head reads: the FPN's output convolutions when the model has a detection head or per-head
branches; the shared decoder's last stages when every head is a dense head on it.

Losses: each head's terms, prefixed ``loss_<head>/<term>`` and multiplied by the head's weight from
a :class:`~structpred.heads.loss_weighting.LossWeighting` (fixed, uncertainty, DWA, GradNorm),
plus the weighting's own terms. An item without a head's targets adds nothing to that head's loss;
a head none of whose items has targets in a batch is skipped. Any subset of the heads is a
model (``heads=("semantic",)`` is the single-task network of the same backbone: the baselines).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import Tensor, nn

from ..heads.dense_fpn import DensePredictor, FPNDenseDecoder, FPNDenseHead
from ..heads.loss_weighting import LossWeighting, build_weighting
from ..layers.transform import IMAGENET_MEAN, IMAGENET_STD, DetectionTransform, as_image_list
from .contract import check_request
from .faster_rcnn import make_config
from .fcos import FCOSConfig, build_fcos
from .multitask_heads import DepthHead, DetectionHead, PyramidSpec, SegmentationHead, SharedFeatures, TaskHead
from .registry import register_model
from .segmenter import config_from

HEAD_KINDS = ("detection", "semantic", "parts", "depth")  # the heads a multi-task model can have
# the task whose prediction contract each head kind keeps
HEAD_TASKS = {
    "detection": DetectionHead.task,
    "semantic": SegmentationHead.task,
    "parts": SegmentationHead.task,
    "depth": DepthHead.task,
}
_NAME = re.compile(r"^[a-z][a-z0-9]*$")  # loss keys are loss_<head>/<term>: no "/" or "_" clash


def head_target_keys(head: str, depth_target: str = "depth") -> tuple[str, ...]:
    """The target keys head kind ``head`` reads (``ValueError`` for an unknown kind)."""
    keys = {"detection": ("boxes", "labels"), "semantic": ("semantic",), "parts": ("parts",)}
    if head == "depth":
        return (depth_target,)
    if head not in keys:
        raise ValueError(f"unknown head {head!r}; the heads are {', '.join(HEAD_KINDS)}")
    return keys[head]


def check_head_names(heads: Sequence[str]) -> tuple[str, ...]:
    """``heads`` as a tuple: non-empty, known kinds, no name twice (their outputs would clash)."""
    if isinstance(heads, str):
        heads = [h.strip() for h in heads.split(",")]
    heads = tuple(heads)
    if not heads:
        raise ValueError(f"a multi-task model needs at least one head, got none; the heads are {HEAD_KINDS}")
    for h in heads:
        head_target_keys(h)  # known kind
    twice = sorted({h for h in heads if heads.count(h) > 1})
    if twice:
        raise ValueError(f"heads {twice} are given twice: their predictions and loss keys would clash")
    return heads


def _in_batch(message: str, items: list[int]) -> str:
    """A head's error about ``targets[j]`` of the ``items`` it was given, renamed ``targets[items[j]]``."""
    return re.sub(r"targets\[(\d+)\]", lambda m: f"targets[{items[int(m.group(1))]}]", message)


def _one_size(images: Sequence[Tensor]) -> tuple[int, int]:
    """The ``(H, W)`` every image of the batch has (``ValueError`` for mixed sizes)."""
    sizes = {tuple(im.shape[-2:]) for im in images}
    if len(sizes) != 1:
        raise ValueError(
            f"MultiTaskNet: images of sizes {sorted(sizes)} in one batch; its dense heads label "
            "the pixels they are given, so resize or crop the images to one size first"
        )
    return int(images[0].shape[-2]), int(images[0].shape[-1])


class MultiTaskNet(nn.Module):
    """transform -> backbone (a pyramid) -> heads, each injected; see the module docstring.

    Args:
        transform: a :class:`DetectionTransform` (normalise, resize, pad).
        backbone: ``[B, 3, Hp, Wp] -> dict`` of pyramid maps, finest first (strides 4, 8, ...).
        heads: ``{name: TaskHead}``; names as :data:`HEAD_KINDS` (lower-case letters and digits).
        weighting: the loss weighting over ``heads`` (None: fixed weights 1).
        shared: the last shared layer (GradNorm's gradients are taken on its parameters);
            None: the decoder's last stages if every head reads the decoder, else the backbone's
            ``fpn.layer_blocks`` (the pyramid's output convolutions).
        decoder: the shared dense decoder, ``pyramid -> [B, C, Hp/4, Wp/4]``, run once per batch
            for the heads with ``reads_dense`` (None: no head may read it).
    """

    # Fine-tuning to other object classes (``num_classes``): the detection head's class logits.
    # The label-map heads' class counts are their own settings (semantic_classes, part_classes).
    class_dependent_tensors: tuple[str, ...] = (
        r"heads\.detection\.fcos\.head\.classification_head\.cls_logits\.(?:weight|bias)",
    )

    def __init__(
        self,
        transform: DetectionTransform,
        backbone: nn.Module,
        heads: Mapping[str, TaskHead],
        weighting: LossWeighting | None = None,
        shared: nn.Module | None = None,
        decoder: FPNDenseDecoder | None = None,
    ) -> None:
        super().__init__()
        if not heads:
            raise ValueError("MultiTaskNet: the head dict is empty; give at least one head")
        for name, head in heads.items():
            if not isinstance(name, str) or not _NAME.match(name):
                raise ValueError(f"MultiTaskNet: head name {name!r} must be lower-case letters and digits")
            if not isinstance(head, TaskHead):
                raise ValueError(f"MultiTaskNet: head {name!r} is a {type(head).__name__}, not a TaskHead")
        readers = [name for name, head in heads.items() if head.reads_dense]
        if decoder is None and readers:
            raise ValueError(f"MultiTaskNet: heads {readers} predict on the shared dense decoder's map; "
                             "give a decoder (or heads with their own branches)")  # fmt: skip
        if decoder is not None and not readers:
            raise ValueError("MultiTaskNet: a dense decoder but no head reads it; leave it out")
        self.transform = transform
        self.backbone = backbone
        self.decoder = decoder
        self.heads = nn.ModuleDict(dict(heads))
        self.weighting = weighting if weighting is not None else build_weighting("fixed", list(heads))
        if tuple(self.weighting.heads) != tuple(heads):
            raise ValueError(
                f"MultiTaskNet: the weighting is over {self.weighting.heads}, the heads are {tuple(heads)}"
            )
        self._shared: list[nn.Module] = []  # a list: not registered a second time
        if shared is not None:
            self._shared = [shared]
        elif decoder is not None and len(readers) == len(heads):  # every head reads the decoder
            self._shared = decoder.last_layer()
        elif (pyramid_out := getattr(getattr(backbone, "fpn", None), "layer_blocks", None)) is not None:
            self._shared = [pyramid_out]

    def no_weight_decay(self) -> set[str]:
        """The weighting's parameters (log-variances, GradNorm's weights): weight decay would pull
        them to 0 (timm's convention; the engine's optimizer reads it)."""
        return {f"weighting.{name}" for name, _ in self.weighting.named_parameters()}

    def checkpoint_hint(self, missing: Sequence[str], unexpected: Sequence[str]) -> str:
        """One line for a checkpoint whose weights do not fit: which dense-decoder layout it has."""
        per_head = any(re.match(r"heads\.\w+\.branch\.branches\.", k) for k in unexpected)
        shared = any(k.startswith("decoder.") for k in unexpected)
        if per_head and self.decoder is not None:
            return (
                "the checkpoint has a Panoptic FPN branch per dense head (the per_head layout, the "
                "default before the shared dense decoder): rebuild with dense_decoder='per_head'"
            )
        if shared and self.decoder is None:
            return "the checkpoint has a shared dense decoder: rebuild with dense_decoder='shared'"
        if any(k.startswith("heads.") and ".branch.convs." in k for k in [*missing, *unexpected]):
            return "the checkpoint's dense predictors have another depth: set dense_head_convs to match"
        return ""

    def features(self, images: Sequence[Tensor] | Tensor) -> SharedFeatures:
        """The shared part of :meth:`forward` on one batch of one size: transform, backbone +
        pyramid and the shared dense decoder (if the model has one)."""
        image_list = as_image_list(images)
        size = _one_size(image_list)
        batch, resized, _, _ = self.transform(image_list)  # (B, 3, Hp, Wp)
        maps = list(self.backbone(batch).values())
        dense = self.decoder(maps) if self.decoder is not None else None  # (B, C, Hp/4, Wp/4)
        return SharedFeatures(maps, (int(batch.shape[-2]), int(batch.shape[-1])), resized[0], size, dense)

    def _task_heads(self) -> list[tuple[str, TaskHead]]:
        return [(name, cast(TaskHead, head)) for name, head in self.heads.items()]

    def shared_parameters(self) -> list[Tensor]:
        """The last shared layer's parameters (GradNorm's W)."""
        return [p for m in self._shared for p in m.parameters() if p.requires_grad]

    def _check_targets(self, targets: Sequence[Any], B: int, size: tuple[int, int]) -> dict[str, list[int]]:
        """Per head, the items that carry its targets (checked); ``ValueError`` for a bad target."""
        if len(targets) != B:
            raise ValueError(f"MultiTaskNet: {len(targets)} targets for {B} images")
        for i, t in enumerate(targets):
            if not isinstance(t, dict):
                raise ValueError(f"MultiTaskNet: targets[{i}] must be a dict, got {type(t).__name__}")
        items: dict[str, list[int]] = {}
        for name, head in self._task_heads():
            for i, t in enumerate(targets):  # half of a head's keys is a data error, not "no target"
                some = [k for k in head.target_keys if k in t]
                if some and len(some) < len(head.target_keys):
                    missing = [k for k in head.target_keys if k not in t]
                    raise ValueError(f"MultiTaskNet: head {name!r}: targets[{i}] has {some}, not {missing}")
            have = [i for i, t in enumerate(targets) if all(k in t for k in head.target_keys)]
            if have:
                try:
                    head.check_targets([targets[i] for i in have], size, f"head {name!r}")
                except ValueError as e:
                    raise ValueError(_in_batch(str(e), have)) from None
            items[name] = have
        return items

    def forward(
        self,
        images: Sequence[Tensor] | Tensor,
        targets: Sequence[dict[str, Any]] | None = None,
        *,
        predict: bool = True,
    ) -> tuple[dict[str, Any] | None, dict[str, Tensor]]:
        """``{head: predictions}`` (None with ``predict=False``) and the weighted losses (with targets)."""
        check_request(targets is not None, predict, "MultiTaskNet")
        image_list = as_image_list(images)
        B, size = len(image_list), _one_size(image_list)
        items = self._check_targets(targets, B, size) if targets is not None else {}
        x = self.features(image_list)
        predictions: dict[str, Any] = {}
        head_losses: dict[str, dict[str, Tensor]] = {}
        for name, head in self.heads.items():
            have = items.get(name, [])
            if targets is not None and len(have) == B:  # one pass: predictions and loss
                preds, losses = head(x, list(targets), predict)
            else:
                preds = head(x, None, True)[0] if predict else None
                losses = {}
                if have:  # the loss on the items that have this head's targets
                    index = torch.tensor(have, device=x.maps[0].device)
                    losses = head(x.select(index), [targets[i] for i in have], False)[1]  # type: ignore[index]
            if predict:
                predictions[name] = preds
            if losses:
                head_losses[name] = losses
        return (predictions if predict else None), self._weighted(head_losses)

    def _weighted(self, head_losses: dict[str, dict[str, Tensor]]) -> dict[str, Tensor]:
        """``loss_<head>/<term>`` = the head's weight x its term, plus the weighting's own terms."""
        if not head_losses:
            return {}
        totals = {name: torch.stack(list(terms.values())).sum() for name, terms in head_losses.items()}
        grad = self.training and torch.is_grad_enabled()
        weights, extra = self.weighting(totals, self.shared_parameters() if grad else ())
        out: dict[str, Tensor] = {}
        for name, terms in head_losses.items():
            for term, value in terms.items():
                out[f"loss_{name}/{term.removeprefix('loss_')}"] = weights[name] * value
        for key, value in extra.items():
            if key in out or not key.startswith("loss_"):
                raise AssertionError(f"the weighting's term {key!r} clashes or lacks the loss_ prefix")
            out[key] = value
        return out


@dataclass
class MultiTaskConfig:
    """The knobs of :func:`build_multitask` (see the module docstring)."""

    heads: Sequence[str] = HEAD_KINDS
    num_classes: int = 6  # detection: object classes, background excluded
    semantic_classes: int = 7  # semantic label map, background included
    part_classes: int = 13  # part label map, background included
    depth_target: str = "depth"  # or "disparity"
    focal: float | None = None  # px; with baseline, turns a `depth` target into disparity
    baseline: float | None = None  # m
    max_disparity: float = 0.3
    input_size: int = 256  # the shorter side the network sees (the longer is capped at 4x)
    image_mean: Sequence[float] = IMAGENET_MEAN
    image_std: Sequence[float] = IMAGENET_STD
    dense_channels: int = 128  # the dense decoder's width (Panoptic FPN: 128)
    dense_decoder: str = "per_head"  # per_head: a whole branch per dense head | shared: one decoder
    dense_head_convs: int = 0  # shared: 3x3 stages in each dense head's predictor before its 1x1
    dense_own: Sequence[str] = ()  # shared: dense heads that keep their own branch (e.g. ("parts",))
    norm_groups: int = 32
    weighting: str = "fixed"  # fixed | uncertainty | dwa | gradnorm
    weighting_args: dict[str, Any] = field(default_factory=dict)
    detection: dict[str, Any] = field(default_factory=dict)  # FCOSConfig overrides (score_thresh...)


def build_multitask(backbone: nn.Module, config: MultiTaskConfig) -> MultiTaskNet:
    """The module tree, written out, over a pyramid ``backbone`` with ``out_channels`` (P2..P7)."""
    c = config
    heads_wanted = check_head_names(c.heads)
    D = int(backbone.out_channels)  # type: ignore[arg-type]
    if c.dense_decoder not in ("shared", "per_head"):
        raise ValueError(f"dense_decoder must be 'shared' or 'per_head', got {c.dense_decoder!r}")
    if c.dense_head_convs < 0:
        raise ValueError(f"dense_head_convs must be >= 0, got {c.dense_head_convs}")
    own = (
        tuple(h.strip() for h in c.dense_own.split(",") if h.strip())
        if isinstance(c.dense_own, str)
        else tuple(c.dense_own)
    )
    if bad := [h for h in own if h not in ("semantic", "parts", "depth")]:
        raise ValueError(f"dense_own names dense heads (semantic, parts, depth), got {bad}")
    if own and c.dense_decoder != "shared":
        raise ValueError(
            f"dense_own {list(own)} needs dense_decoder='shared' (per_head: every head has its own)"
        )
    readers = [h for h in heads_wanted if h != "detection" and h not in own]
    shared = c.dense_decoder == "shared" and bool(readers)
    decoder = FPNDenseDecoder(D, 4, c.dense_channels, c.norm_groups) if shared else None

    def branch(K: int, name: str) -> FPNDenseHead | DensePredictor:
        if name in readers and shared:
            return DensePredictor(c.dense_channels, K, c.dense_head_convs, c.norm_groups)
        return FPNDenseHead(D, K, 4, c.dense_channels, c.norm_groups)

    heads: dict[str, TaskHead] = {}
    for name in heads_wanted:
        if name == "detection":
            fcos_config = make_config(
                FCOSConfig, {"norm_groups": c.norm_groups, **c.detection}, "detection head"
            )
            heads[name] = DetectionHead(build_fcos(PyramidSpec(D), c.num_classes, fcos_config))
        elif name in ("semantic", "parts"):
            K = c.semantic_classes if name == "semantic" else c.part_classes
            heads[name] = SegmentationHead(branch(K, name), name)
        else:
            heads[name] = DepthHead(branch(1, name), c.depth_target, c.focal, c.baseline, c.max_disparity)
    if c.input_size < 32:
        raise ValueError(f"input_size must be >= 32 (the pyramid's stride), got {c.input_size}")
    transform = DetectionTransform(c.input_size, 4 * c.input_size, c.image_mean, c.image_std)
    weighting = build_weighting(c.weighting, list(heads), **c.weighting_args)
    return MultiTaskNet(transform, backbone, heads, weighting, decoder=decoder)


# ---------------------------------------------------------------------------- builders


def _config(overrides: dict[str, Any]) -> MultiTaskConfig:
    config = config_from(MultiTaskConfig, overrides)
    config.heads = check_head_names(config.heads)
    return config


@register_model(task="multi_task")
def multitask_fpn(
    num_classes: int = 6,
    backbone: str = "resnet18",
    fpn_channels: int = 128,
    backbone_args: dict[str, Any] | None = None,
    **config: Any,
) -> MultiTaskNet:
    """The unified network over any registered 4-stage backbone (C2-C5 + FPN + P6, P7) with
    detection, semantic, part and depth heads (any subset: ``heads=``); :class:`MultiTaskConfig`."""
    from ..backbones.fpn import fpn_backbone

    neck = fpn_backbone(backbone, out_channels=fpn_channels, extra_block="p6p7", **(backbone_args or {}))
    return build_multitask(neck, _config({"num_classes": num_classes, **config}))


# The narrow detection head's score threshold: 0.1, not FCOS narrow's 0.05. Trained (five
# checkpoints: 3 unified seeds, a single-task detector, uncertainty weighting) the detections
# between 0.05 and 0.1 are the last few of the 100 kept per image and do not change COCO mAP or
# map_50 at 4 decimals, while NMS gets 2.5x fewer boxes (docs/multitask.md, "Inference cost").
NARROW_DETECTION: dict[str, Any] = {"score_thresh": 0.1}


@register_model(task="multi_task")
def multitask_narrow(
    num_classes: int = 6, width: int = 16, fpn_channels: int = 32, **config: Any
) -> MultiTaskNet:
    """The small from-scratch unified network for CPU training: the narrow 4-stage backbone
    (``width`` .. ``8 width``) + FPN (32 channels) + P6, P7, a 32-channel dense decoder, 256 px."""
    from ..backbones.fpn import narrow_fpn

    neck = narrow_fpn(
        out_channels=fpn_channels, widths=(width, 2 * width, 4 * width, 8 * width), extra_block="p6p7"
    )
    defaults = {"dense_channels": 32, "norm_groups": 8}
    # a detection dict adds to these settings (NARROW_DETECTION) rather than replacing them
    detection = {**NARROW_DETECTION, **(config.pop("detection", None) or {})}
    return build_multitask(
        neck, _config({**defaults, "num_classes": num_classes, **config, "detection": detection})
    )
