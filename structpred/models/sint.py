"""SINT (Tao, Gavves, Smeulders, CVPR 2016): Siamese INstance search for Tracking.

Shape shorthand: B clips, T frames, H x W pixels, L feature layers, Cl channels of layer l at
stride sl, P x P pooled cells, K candidate boxes, D = sum_l Cl P^2 embedding size.

Idea: the only certainly correct example of the target is the first frame, so learn once,
offline, a matching function and track by instance search: in each new frame the candidate
box most similar to the first-frame target wins. No model update, no temporal model.

Architecture: one backbone (shared weights: the two Siamese branches are the same module run on
the query frame and on the search frame) maps a frame to feature maps; a box is embedded by RoI
pooling (:func:`~structpred.ops.roi_align.roi_align`, ours) each of L layers (default ``c2``,
``c3``: stride 4 and 8) to ``P x P`` cells, each layer's vector L2-normalised, the L vectors
concatenated and divided by sqrt(L) (a unit vector: distances lie in [0, 2]). The search branch
embeds all K candidates of a frame from its one feature map at once.

Tracking (:meth:`SINT.track`): candidates on circles around the previous box — ``num_radii``
radii evenly up to ``search_radius`` x the previous box's longer side, ``num_angles`` angles
each, plus the previous centre — at each of ``scales`` x the previous size; the candidate whose
embedding has the largest inner product with the first-frame target's (the paper's matching
function) is the new box. The paper's SINT samples the same way (radial and angular divisions at
3 scales); our defaults (10 radii, 10 angles, scales 0.95 / 1 / 1.05, radius 1 box side) suit
the 128-pixel shapes clips. The search range follows the previous box's size.

Box refinement (SINT+, ``config.refine``, :mod:`structpred.heads.sint_refine`): four ridge
regressors (R-CNN deltas) on the same RoI embeddings, fitted on boxes jittered around the
first-frame target only and never updated, move each frame's winning candidate
(:meth:`SINT.fit_refiner`). SINT+'s optical-flow pruning of candidates is not built.

Training (:mod:`structpred.heads.sint_loss`): per clip and track, a query frame at random
among the frames where the target is visible; every other visible frame gives candidates jittered
around its true box, labelled by IoU (>= 0.7 positive, <= 0.5 negative), plus the other tracks'
boxes as negatives; marginal contrastive loss with margin ``eps`` (``loss_contrastive``). In
eval mode the sampling is seeded (a reproducible validation loss).

Contract: ``model(clips, targets=None)``: clips ``Tensor[T, 3, H, W]`` in [0, 1] (a list, or
``[B, T, 3, H, W]``); targets ``boxes`` ``[T, 4]`` xyxy (frame 0's box initialises the tracker),
optional ``visible`` ``[T]`` (or ``tracks`` ``[M, T, 4]``: the first track seen in frame 0).
Predictions ``{"boxes": [B, T, 4]}``: the tracked box per frame. Without targets the tracker
starts from ``init_boxes`` (``[B, 4]``) if given, else from the centre box of half the frame's
width and height (a clip given without a box tracks what is in its middle).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..backbones.registry import get_backbone
from ..heads.sint_loss import marginal_contrastive_loss, sample_candidates, track_targets
from ..heads.sint_refine import BoxRegressor, fit_box_regressor, refine_samples
from ..ops.boxes import box_iou
from ..ops.roi_align import roi_align
from .contract import check_request
from .registry import register_model
from .segmenter import config_from

_MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics: frames are normalised inside
_STD = (0.229, 0.224, 0.225)


@dataclass
class SintConfig:
    """SINT settings (see the module docstring)."""

    backbone: str = "narrow"
    backbone_kwargs: dict[str, Any] | None = None
    layers: tuple[str, ...] = ("c2", "c3")
    pool_size: int = 3
    margin: float = 1.0  # eps of the marginal contrastive loss
    num_radii: int = 10
    num_angles: int = 10
    search_radius: float = 1.0  # x the previous box's longer side
    scales: tuple[float, ...] = (0.95, 1.0, 1.05)
    train_candidates: int = 24  # jittered boxes per search frame and track
    pos_iou: float = 0.7
    neg_iou: float = 0.5
    chunk: int = 16  # frames through the backbone at once when tracking
    refine: bool = False  # SINT+ box regression, fitted on the first frame only
    refine_lambda: float = 1.0  # its ridge weight
    refine_samples: int = 256  # jittered first-frame boxes drawn to fit it (IoU >= 0.6 kept)


def radial_candidates(
    box: Tensor,
    image_size: tuple[int, int],
    num_radii: int,
    num_angles: int,
    radius: float,
    scales: Sequence[float],
) -> Tensor:
    """Candidate boxes around ``box`` (``[4]`` xyxy): centres on ``num_radii`` circles of radii
    ``radius * i / num_radii`` (i = 1..num_radii) times the box's longer side, ``num_angles`` each,
    plus the centre itself; sizes ``scales`` x the box's. Clipped to ``image_size`` (H, W), at
    least 1 px wide and high. Returns ``float[K, 4]``, K = (1 + num_radii * num_angles) * len(scales)."""
    H, W = image_size
    w, h = float(box[2] - box[0]), float(box[3] - box[1])
    cx, cy = float(box[0] + box[2]) / 2, float(box[1] + box[3]) / 2
    r = torch.arange(1, num_radii + 1, dtype=torch.float32) * (radius * max(w, h) / num_radii)  # (R,)
    a = torch.arange(num_angles, dtype=torch.float32) * (2 * math.pi / num_angles)  # (A,)
    dx = torch.cat([torch.zeros(1), (r[:, None] * torch.cos(a)[None]).flatten()])  # (1 + R*A,)
    dy = torch.cat([torch.zeros(1), (r[:, None] * torch.sin(a)[None]).flatten()])
    s = torch.tensor(list(scales), dtype=torch.float32)  # (S,)
    # (S, 1) x (1, N) -> (S*N,): every centre at every scale
    half_w, half_h = (s[:, None] * w / 2).expand(-1, dx.numel()), (s[:, None] * h / 2).expand(-1, dx.numel())
    ccx, ccy = (cx + dx)[None].expand_as(half_w), (cy + dy)[None].expand_as(half_h)
    boxes = torch.stack([ccx - half_w, ccy - half_h, ccx + half_w, ccy + half_h], -1).reshape(-1, 4)  # (K, 4)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, W - 1)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, H - 1)
    boxes[:, 2] = torch.maximum(boxes[:, 2], boxes[:, 0] + 1)
    boxes[:, 3] = torch.maximum(boxes[:, 3], boxes[:, 1] + 1)
    return boxes.to(box)


class SINT(nn.Module):
    """Siamese instance-search tracker.

    Args:
        config: a :class:`SintConfig` (None: the defaults).
        backbone: an injected feature extractor returning a dict of ``[N, C, h, w]`` maps with
            ``strides`` (None: ``config.backbone`` from the registry).
    """

    class_dependent_tensors: tuple[str, ...] = ()

    def __init__(self, config: SintConfig | None = None, backbone: nn.Module | None = None) -> None:
        super().__init__()
        c = config or SintConfig()
        if not c.layers or c.pool_size < 1 or not c.scales or c.num_radii < 0 or c.num_angles < 1:
            raise ValueError(
                f"SINT: needs layers, pool_size >= 1, scales, num_radii >= 0, num_angles >= 1; got {c}"
            )
        if not c.margin > 0:
            raise ValueError(f"SINT: margin must be > 0, got {c.margin}")
        if not (c.refine_lambda > 0 and c.refine_samples >= 4):
            raise ValueError(f"SINT: needs refine_lambda > 0, refine_samples >= 4; got {c}")
        self.config = c
        self.backbone = (
            backbone if backbone is not None else get_backbone(c.backbone, **(c.backbone_kwargs or {}))
        )
        strides = getattr(self.backbone, "strides", {})
        missing = [name for name in c.layers if name not in strides]
        if missing:
            raise ValueError(f"SINT: the backbone has no layers {missing} (it has {sorted(strides)})")
        self.strides = {name: int(strides[name]) for name in c.layers}
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

    # ------------------------------------------------------------------------- embedding
    def features(self, frames: Tensor) -> dict[str, Tensor]:
        """frames ``[N, 3, H, W]`` in [0, 1] -> ``{layer: [N, Cl, H/sl, W/sl]}`` (the used layers)."""
        mean, std = self.get_buffer("mean"), self.get_buffer("std")
        feats = self.backbone((frames - mean) / std)
        return {name: feats[name] for name in self.config.layers}

    def embed(self, feats: dict[str, Tensor], rois: Tensor) -> Tensor:
        """Unit embeddings of boxes: ``rois`` ``[K, 5]`` (frame index into ``feats``, x1, y1, x2, y2)
        -> ``[K, D]``. Each box is pooled on its own: the result does not depend on the order."""
        parts = []
        for name, fmap in feats.items():
            p = self.config.pool_size
            pooled = roi_align(fmap, rois, p, 1.0 / self.strides[name], sampling_ratio=2, aligned=True)
            v = pooled.flatten(1)  # (K, Cl, P, P) -> (K, Cl*P*P)
            parts.append(nn.functional.normalize(v, dim=1))
        return torch.cat(parts, 1) / math.sqrt(len(parts))  # (K, D)

    # ------------------------------------------------------------------------- tracking
    def start(self, frame: Tensor, box: Tensor) -> Tensor:
        """The query: the first-frame target's embedding ``[1, D]``.

        frame ``[3, H, W]`` in [0, 1]; box ``[4]`` xyxy px."""
        box = check_box(box, frame.shape[-2:], "SINT.start: box")
        feats = self.features(frame[None])
        return self.embed(feats, torch.cat([box.new_zeros(1), box])[None])

    def fit_refiner(self, frame: Tensor, box: Tensor) -> BoxRegressor:
        """SINT+'s box regressors, fitted on the first frame only (seeded: deterministic).

        frame ``[3, H, W]`` in [0, 1]; box ``[4]`` xyxy px, the target (each side >= 1 px)."""
        c = self.config
        H, W = frame.shape[-2:]
        box = check_box(box, (H, W), "SINT.fit_refiner: box").to(frame)
        g = torch.Generator().manual_seed(0)
        samples = refine_samples(box, c.refine_samples, (H, W), g, min_iou=0.6)  # (N, 4)
        rois = torch.cat([samples.new_zeros(len(samples), 1), samples], 1)  # (N, 5)
        with torch.no_grad():
            emb = self.embed(self.features(frame[None]), rois)  # (N, D)
        return fit_box_regressor(emb, samples, box, c.refine_lambda)

    def step(
        self,
        feats: dict[str, Tensor],
        index: int,
        prev: Tensor,
        query: Tensor,
        size: tuple[int, int],
        refiner: BoxRegressor | None = None,
    ) -> Tensor:
        """The new box ``[4]``: the candidate around ``prev`` on frame ``index`` of ``feats`` that
        matches ``query`` best (largest inner product), moved by ``refiner`` if given (clipped to
        the frame, at least 1 px wide and high)."""
        c = self.config
        cands = radial_candidates(prev, size, c.num_radii, c.num_angles, c.search_radius, c.scales)  # (K, 4)
        rois = torch.cat([cands.new_full((len(cands), 1), float(index)), cands], 1)  # (K, 5)
        emb = self.embed(feats, rois)  # (K, D)
        best = int((emb @ query[0]).argmax())  # (K, D) @ (D,) -> (K,)
        if refiner is None:
            return cands[best]
        H, W = size
        box = refiner.apply(emb[best : best + 1], cands[best : best + 1])[0]  # (4,)
        x1, x2 = box[0].clamp(0, W - 1), box[2].clamp(max=W)
        y1, y2 = box[1].clamp(0, H - 1), box[3].clamp(max=H)
        return torch.stack([x1, y1, torch.maximum(x2, x1 + 1), torch.maximum(y2, y1 + 1)])

    def track(self, frames: Tensor, init_box: Tensor) -> Tensor:
        """Track through ``frames`` ``[T, 3, H, W]`` (float in [0, 1]) from ``init_box`` ``[4]`` (xyxy,
        frame 0) -> boxes ``float[T, 4]`` xyxy per frame (frame 0's is ``init_box``). No update;
        with ``config.refine``, each box is refined by regressors fitted on frame 0."""
        if (
            not isinstance(frames, Tensor)
            or frames.dim() != 4
            or frames.shape[1] != 3
            or not frames.is_floating_point()
        ):
            got = tuple(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__
            raise ValueError(f"SINT.track: frames must be a float Tensor[T, 3, H, W], got {got}")
        T, _, H, W = frames.shape
        init = check_box(init_box, (H, W), "SINT.track: init_box").to(frames)
        with torch.no_grad():
            query = self.start(frames[0], init)
            refiner = self.fit_refiner(frames[0], init) if self.config.refine else None
            out = [init]
            for begin in range(1, T, self.config.chunk):
                feats = self.features(frames[begin : begin + self.config.chunk])
                for i in range(feats[self.config.layers[0]].shape[0]):
                    out.append(self.step(feats, i, out[-1], query, (H, W), refiner))
        return torch.stack(out)  # (T, 4)

    # ------------------------------------------------------------------------- training
    def pair_loss(
        self, clip: Tensor, tracks: list[tuple[Tensor, Tensor]], generator: torch.Generator | None
    ) -> Tensor:
        """Marginal contrastive loss of the pairs sampled in one clip ``[T, 3, H, W]`` (module doc)."""
        c = self.config
        T, _, H, W = clip.shape
        feats = self.features(clip)
        queries, cands, same = [], [], []
        for k, (boxes, visible) in enumerate(tracks):
            frames = visible.nonzero().flatten()
            if len(frames) < 2:
                continue
            q = int(frames[torch.randint(len(frames), (1,), generator=generator)])
            for t in frames.tolist():
                if t == q:
                    continue
                b, pos = sample_candidates(
                    boxes[t], c.train_candidates, (H, W), generator, pos_iou=c.pos_iou, neg_iou=c.neg_iou
                )
                others = [bx[t] for j, (bx, vis) in enumerate(tracks) if j != k and bool(vis[t])]
                if others:  # other objects in the frame: negatives unless they overlap the target
                    o = torch.stack(others)  # (M', 4)
                    o = o[box_iou(o, boxes[t][None]).nan_to_num(0.0)[:, 0] <= c.neg_iou]
                    b, pos = torch.cat([b, o]), torch.cat([pos, pos.new_zeros(len(o))])
                cands.append(torch.cat([b.new_full((len(b), 1), float(t)), b], 1))  # (K, 5)
                queries.append(torch.cat([boxes[q].new_tensor([float(q)]), boxes[q]])[None].expand(len(b), 5))
                same.append(pos)
        if not cands:
            return torch.stack([f.sum() for f in feats.values()]).sum() * 0.0  # no pair in this clip
        emb = self.embed(feats, torch.cat(queries + cands))  # (2P, D)
        P = emb.shape[0] // 2
        return marginal_contrastive_loss(emb[:P], emb[P:], torch.cat(same), c.margin)

    # ------------------------------------------------------------------------- contract
    def forward(
        self,
        clips: Sequence[Tensor] | Tensor,
        targets: Sequence[dict[str, Any]] | None = None,
        *,
        predict: bool = True,
        init_boxes: Tensor | None = None,
    ) -> tuple[dict[str, Tensor] | None, dict[str, Tensor]]:
        """``clips`` (``Tensor[T, 3, H, W]`` each in [0, 1]) -> ``({"boxes": [B, T, 4]}, losses)``;
        ``loss_contrastive`` with targets (module doc)."""
        check_request(targets is not None, predict, "SINT")
        items = check_clips(clips)
        B, T = len(items), items[0].shape[0]
        H, W = items[0].shape[-2:]
        tracks = None
        if targets is not None:
            if not isinstance(targets, (list, tuple)) or len(targets) != B:
                n = len(targets) if isinstance(targets, (list, tuple)) else type(targets).__name__
                raise ValueError(f"SINT: {n} targets for {B} clips")
            tracks = [track_targets(t, T, f"SINT: targets[{i}]") for i, t in enumerate(targets)]
        if init_boxes is not None and (
            not isinstance(init_boxes, Tensor) or tuple(init_boxes.shape) != (B, 4)
        ):
            got = tuple(init_boxes.shape) if isinstance(init_boxes, Tensor) else type(init_boxes).__name__
            raise ValueError(f"SINT: init_boxes must be a Tensor[{B}, 4] (xyxy), got {got}")
        losses: dict[str, Tensor] = {}
        if tracks is not None:
            g = None if self.training else torch.Generator().manual_seed(0)
            losses["loss_contrastive"] = torch.stack(
                [self.pair_loss(x, tr, g) for x, tr in zip(items, tracks, strict=True)]
            ).mean()
        if not predict:
            return None, losses
        out = []
        for i, clip in enumerate(items):
            if tracks is not None:
                init = tracks[i][0][0][0]
            elif init_boxes is not None:
                init = init_boxes[i]
            else:
                init = clip.new_tensor([W / 4, H / 4, 3 * W / 4, 3 * H / 4])
            out.append(self.track(clip, init))
        return {"boxes": torch.stack(out)}, losses


def check_clips(clips: Sequence[Tensor] | Tensor) -> list[Tensor]:
    """A batch of clips as a list of ``float[T, 3, H, W]`` of one shape, finite (``ValueError`` otherwise)."""
    if isinstance(clips, Tensor):
        if clips.dim() == 4:
            clips = [clips]
        elif clips.dim() == 5:
            clips = list(clips.unbind(0))
    if not isinstance(clips, (list, tuple)) or not clips:
        raise ValueError(
            "SINT: clips must be a non-empty list of Tensor[T, 3, H, W] or a Tensor[B, T, 3, H, W]"
        )
    for i, x in enumerate(clips):
        if (
            not isinstance(x, Tensor)
            or x.dim() != 4
            or x.shape[1] != 3
            or not x.is_floating_point()
            or 0 in x.shape
        ):
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"SINT: clips[{i}] must be a float Tensor[T, 3, H, W], got {got}")
        if x.shape != clips[0].shape:
            raise ValueError(
                f"SINT: clips[{i}] {tuple(x.shape)} differs from clips[0] {tuple(clips[0].shape)}"
            )
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"SINT: clips[{i}] contains NaN or infinite values")
    return list(clips)


def check_box(box: Any, size: Sequence[int], where: str) -> Tensor:
    """``box`` as ``float[4]`` xyxy, non-empty and overlapping the ``(H, W)`` frame (else ``ValueError``)."""
    H, W = int(size[0]), int(size[1])
    if not isinstance(box, Tensor) or tuple(box.shape) != (4,):
        got = tuple(box.shape) if isinstance(box, Tensor) else type(box).__name__
        raise ValueError(f"{where}: must be a Tensor[4] (x1, y1, x2, y2), got {got}")
    box = box.float()
    x1, y1, x2, y2 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or x2 <= x1 or y2 <= y1:
        raise ValueError(f"{where}: empty or not finite: {[x1, y1, x2, y2]}")
    if x2 <= 0 or y2 <= 0 or x1 >= W or y1 >= H:
        raise ValueError(f"{where}: {[x1, y1, x2, y2]} lies outside the {W}x{H} frame")
    return box


# ----------------------------------------------------------------------------- builders


@register_model(task="single_object_tracking")
def sint_narrow(**config: Any) -> SINT:
    """SINT on the narrow backbone (GroupNorm; c2 + c3 RoI-aligned 3 x 3, the narrow widths
    16 / 32 / 64 / 128): trains on a CPU in minutes. Any :class:`SintConfig` field may be
    overridden."""
    defaults: dict[str, Any] = {
        "backbone_kwargs": {"widths": (16, 32, 64, 128), "norm_layer": _group_norm},
    }
    return SINT(config_from(SintConfig, {**defaults, **config}))


def _group_norm(channels: int) -> nn.Module:
    """GroupNorm with 4 groups: a clip's frames are one batch, so no batch statistics."""
    return nn.GroupNorm(4, channels)
