"""RAFT (Teed & Deng, ECCV 2020): Recurrent All-Pairs Field Transforms for optical flow.

Shape shorthand: B pairs, H x W input pixels, H' x W' after padding (multiples of 8, at least
``min_size``), h = H' / 8, w = W' / 8 the flow grid, C feature channels, D hidden state
channels, X context channels, K = L (2r + 1)^2 correlation features, T flow updates.

Architecture: a feature encoder maps both frames to ``[B, C, h, w]``; their all-pairs
correlation ``[B, h, w, h, w]`` is average-pooled into L levels
(:func:`~structpred.ops.correlation_packed.packed_correlation_pyramid`: the values of the
reference :func:`~structpred.ops.correlation.correlation_pyramid` in one zero-bordered buffer).
A context encoder on frame0 gives the GRU's initial hidden state (tanh of D channels) and the
context (ReLU of X channels). Starting from zero flow, each of T updates looks the pyramid up
in a ``(2r + 1)^2`` window around ``p + flow(p)``
(:func:`~structpred.ops.correlation_packed.packed_lookup`, the coordinates detached as in the
paper), runs the update block (:mod:`structpred.heads.raft_update`) and adds its increment;
the 1/8 flow is upsampled to the image, convexly (RAFT-large's mask predictor) or bilinearly
(RAFT-small). Module names are torchvision's, so its weights load one to one.

Convention: ``model(pairs)`` takes ``Tensor[2, 3, H, W]`` pairs in [0, 1] (or
``[B, 2, 3, H, W]``) and maps them to [-1, 1] inside; :meth:`RAFT.flow` takes two ``[B, 3, H, W]``
frames already in [-1, 1], as torchvision's ``RAFT.forward`` (its ``OpticalFlow`` transform
does ``2 x - 1``). Flow is ``(dx, dy)`` in input pixels, frame0 -> frame1.

Any size: frames are padded to ``H' x W'`` by replicating the border, centred (RAFT's
``InputPadder``, "sintel" mode: the extra row goes to the bottom / right), run, and the flow is
cropped back (values unchanged). At multiples of 8 >= ``min_size`` nothing is padded, so the
output equals torchvision's. ``min_size`` (default 16: a 2 x 2 grid, the least instance
norm accepts) may be far below torchvision's 128: our pyramid keeps a one-pixel level and its
lookup reads zeros around it, where torchvision raises (or, at 1-pixel levels, returns NaN).

Loss (training, and validation when targets are given): RAFT's sequence loss over every update
``sum_i gamma^(T - i) mean(valid * |flow_i - gt|)``, gamma 0.8, pixels whose true flow is 400 px
or more (or not finite) excluded, as in the paper's code; key ``loss_flow``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..heads.raft_update import (
    FACTOR,
    FlowHead,
    MaskPredictor,
    MotionEncoder,
    RecurrentBlock,
    UpdateBlock,
    sequence_loss,
    upsample_flow,
)
from ..layers.raft_blocks import RaftEncoder
from ..layers.views import batch_views
from ..ops.correlation_packed import packed_correlation_pyramid, packed_lookup
from .contract import check_request, flow_targets
from .registry import register_model
from .segmenter import config_from

Pad = tuple[int, int, int, int]  # (left, right, top, bottom)


@dataclass
class RaftConfig:
    """RAFT settings; defaults are RAFT-large's (torchvision's ``raft_large``)."""

    feature_layers: tuple[int, ...] = (64, 64, 96, 128, 256)
    feature_block: str = "residual"
    feature_norm: str | None = "instance"
    context_layers: tuple[int, ...] = (64, 64, 96, 128, 256)  # hidden_size + X channels out
    context_block: str = "residual"
    context_norm: str | None = "batch"
    corr_levels: int = 4
    corr_radius: int = 4
    motion_corr_layers: tuple[int, ...] = (256, 192)
    motion_flow_layers: tuple[int, ...] = (128, 64)
    motion_out_channels: int = 128
    hidden_size: int = 128
    gru_kernels: tuple[Any, ...] = ((1, 5), (5, 1))  # one or two ConvGRUs
    gru_paddings: tuple[Any, ...] = ((0, 2), (2, 0))
    flow_head_hidden: int = 256
    convex_upsampling: bool = True  # the mask predictor (RAFT-large); bilinear otherwise
    num_flow_updates: int = 12  # T in training and inference
    gamma: float = 0.8
    max_flow: float = 400.0
    min_size: int = 16  # the padded sides' minimum (a multiple of 8)


class RAFT(nn.Module):
    """RAFT under the optical-flow contract; :meth:`flow` is torchvision's ``forward``.

    Args:
        config: a :class:`RaftConfig` (None: RAFT-large).
        feature_encoder, context_encoder, update_block, mask_predictor: injected submodules
            (None: built from the config; no mask predictor unless ``convex_upsampling``).
    """

    class_dependent_tensors: tuple[str, ...] = ()  # no classes: every tensor loads as it is

    def __init__(
        self,
        config: RaftConfig | None = None,
        feature_encoder: nn.Module | None = None,
        context_encoder: nn.Module | None = None,
        update_block: UpdateBlock | None = None,
        mask_predictor: nn.Module | None = None,
    ) -> None:
        super().__init__()
        c = config or RaftConfig()
        if not isinstance(c.min_size, int) or c.min_size < 16 or c.min_size % FACTOR:
            raise ValueError(f"RAFT: min_size must be a multiple of 8 >= 16, got {c.min_size!r}")
        if not isinstance(c.num_flow_updates, int) or c.num_flow_updates < 1:
            raise ValueError(f"RAFT: num_flow_updates must be an int >= 1, got {c.num_flow_updates!r}")
        if c.context_layers[-1] <= c.hidden_size:
            raise ValueError(
                f"RAFT: the context encoder's {c.context_layers[-1]} channels must exceed hidden_size "
                f"{c.hidden_size} (they split into the hidden state and the context)"
            )
        self.config = c
        self.feature_encoder = feature_encoder or RaftEncoder(
            c.feature_layers, c.feature_block, c.feature_norm
        )
        self.context_encoder = context_encoder or RaftEncoder(
            c.context_layers, c.context_block, c.context_norm
        )
        if update_block is None:
            motion = MotionEncoder(
                in_channels_corr=c.corr_levels * (2 * c.corr_radius + 1) ** 2,
                corr_layers=c.motion_corr_layers,
                flow_layers=c.motion_flow_layers,
                out_channels=c.motion_out_channels,
            )
            context_channels = c.context_layers[-1] - c.hidden_size
            recurrent = RecurrentBlock(
                input_size=motion.out_channels + context_channels,
                hidden_size=c.hidden_size,
                kernel_size=c.gru_kernels,
                padding=c.gru_paddings,
            )
            head = FlowHead(in_channels=c.hidden_size, hidden_size=c.flow_head_hidden)
            update_block = UpdateBlock(motion_encoder=motion, recurrent_block=recurrent, flow_head=head)
        self.update_block = update_block
        if mask_predictor is None and c.convex_upsampling:
            mask_predictor = MaskPredictor(in_channels=c.hidden_size)
        self.mask_predictor = mask_predictor

    # ------------------------------------------------------------------------- padding
    def padding(self, height: int, width: int) -> Pad:
        """``(left, right, top, bottom)`` replicate padding for an ``H x W`` input (module doc)."""
        m = self.config.min_size
        Hp = max(-(-height // FACTOR) * FACTOR, m)
        Wp = max(-(-width // FACTOR) * FACTOR, m)
        top, left = (Hp - height) // 2, (Wp - width) // 2
        return left, Wp - width - left, top, Hp - height - top

    # ------------------------------------------------------------------------- network
    def _updates(self, image1: Tensor, image2: Tensor, num_updates: int, every: bool) -> list[Tensor]:
        """Upsampled flows ``[B, 2, H', W']`` of every update (``every``) or of the last one only.

        Args:
            image1, image2 (Tensor[B, 3, H', W']): in [-1, 1], sides multiples of 8.
        """
        c = self.config
        B = image1.shape[0]
        fmaps = self.feature_encoder(torch.cat([image1, image2], dim=0))  # (2B, C, h, w)
        # (2B, C, h, w) -> (2, B, C, h, w): a reshape, not two slices (onnxruntime fuses slices at
        # a dynamic batch into a Split with the traced sizes)
        f1, f2 = fmaps.unflatten(0, (2, B)).unbind(0)  # (B, C, h, w) each
        pyramid = packed_correlation_pyramid(f1, f2, c.corr_levels)  # (B h w, T): L bordered levels
        D = self.update_block.hidden_state_size
        context_out = self.context_encoder(image1)  # (B, D + X, h, w)
        hidden = torch.tanh(context_out[:, :D])  # (B, D, h, w)
        context = F.relu(context_out[:, D:])  # (B, X, h, w)
        h, w = f1.shape[-2:]
        ys, xs = torch.meshgrid(
            torch.arange(h, device=f1.device, dtype=f1.dtype),
            torch.arange(w, device=f1.device, dtype=f1.dtype),
            indexing="ij",
        )
        coords0 = torch.stack([xs, ys])[None].expand(B, 2, h, w)  # (B, 2, h, w): (x, y) of each cell
        coords1 = coords0
        outputs = []
        for step in range(num_updates):
            coords1 = coords1.detach()  # the paper: no gradient through the lookup position
            corr = packed_lookup(pyramid, coords1, c.corr_radius)  # (B, K, h, w)
            hidden, delta = self.update_block(hidden, context, corr, coords1 - coords0)
            coords1 = coords1 + delta  # (B, 2, h, w)
            if every or step == num_updates - 1:
                mask = None if self.mask_predictor is None else self.mask_predictor(hidden)
                outputs.append(upsample_flow(coords1 - coords0, mask))  # (B, 2, H', W')
        return outputs

    def _padded_run(self, image1: Tensor, image2: Tensor, num_updates: int, every: bool) -> list[Tensor]:
        H, W = image1.shape[-2:]
        left, right, top, bottom = self.padding(H, W)
        if left or right or top or bottom:
            # (B, 3, H, W) -> (B, 3, H', W'), both frames in one call
            both = F.pad(torch.cat([image1, image2]), (left, right, top, bottom), mode="replicate")
            image1, image2 = both.unflatten(0, (2, image1.shape[0])).unbind(0)
        flows = self._updates(image1, image2, num_updates, every)
        return [f[:, :, top : top + H, left : left + W] for f in flows]  # (B, 2, H', W') -> (B, 2, H, W)

    def flow(self, image1: Tensor, image2: Tensor, num_flow_updates: int = 12) -> list[Tensor]:
        """torchvision's ``RAFT.forward``: the flow after each of ``num_flow_updates`` updates.

        Args:
            image1, image2 (Tensor[B, 3, H, W]): float frames in [-1, 1] (not [0, 1]), any H x W
                (padded and cropped back as the module doc says).

        Returns:
            ``num_flow_updates`` Tensors ``[B, 2, H, W]`` (dx, dy) px, the last the best.
        """
        for name, x in (("image1", image1), ("image2", image2)):
            if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != 3 or not x.is_floating_point():
                got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
                raise ValueError(f"RAFT.flow: {name} must be a float Tensor[B, 3, H, W], got {got}")
        if image1.shape != image2.shape or 0 in image1.shape:
            raise ValueError(
                f"RAFT.flow: image1 {tuple(image1.shape)} and image2 {tuple(image2.shape)} must share one "
                "non-empty shape"
            )
        if (
            isinstance(num_flow_updates, bool)
            or not isinstance(num_flow_updates, int)
            or num_flow_updates < 1
        ):
            raise ValueError(f"RAFT.flow: num_flow_updates must be an int >= 1, got {num_flow_updates!r}")
        return self._padded_run(image1, image2, num_flow_updates, every=True)

    # ------------------------------------------------------------------------- contract

    def forward(
        self,
        pairs: Sequence[Tensor] | Tensor,
        targets: Sequence[dict[str, Tensor]] | None = None,
        *,
        predict: bool = True,
    ) -> tuple[dict[str, Tensor] | None, dict[str, Tensor]]:
        """``pairs`` (``Tensor[2, 3, H, W]`` in [0, 1], or ``[B, 2, 3, H, W]``) ->
        ``({"flow": [B, 2, H, W]}, losses)``; ``loss_flow`` with targets (module doc)."""
        check_request(targets is not None, predict, "RAFT")
        x = batch_views(pairs, 2, "RAFT")  # (B, 2, 3, H, W)
        B, _, _, H, W = x.shape
        gt = flow_targets(targets, B, H, W, "RAFT") if targets is not None else None
        if not torch.compiler.is_exporting() and not bool(torch.isfinite(x).all()):
            raise ValueError("RAFT: the frames contain NaN or infinite values")
        x = 2 * x - 1  # [0, 1] -> [-1, 1], as torchvision's OpticalFlow transform
        c = self.config
        flows = self._padded_run(x[:, 0], x[:, 1], c.num_flow_updates, every=gt is not None)
        losses: dict[str, Tensor] = {}
        if gt is not None:
            losses["loss_flow"] = sequence_loss(flows, gt[0], gt[1], c.gamma, c.max_flow)
        return ({"flow": flows[-1]} if predict else None), losses


# ----------------------------------------------------------------------------- builders

LARGE: dict[str, Any] = {}  # RaftConfig's defaults
SMALL: dict[str, Any] = {
    "feature_layers": (32, 32, 64, 96, 128),
    "feature_block": "bottleneck",
    "feature_norm": "instance",
    "context_layers": (32, 32, 64, 96, 160),
    "context_block": "bottleneck",
    "context_norm": None,
    "corr_radius": 3,
    "motion_corr_layers": (96,),
    "motion_flow_layers": (64, 32),
    "motion_out_channels": 82,
    "hidden_size": 96,
    "gru_kernels": (3,),
    "gru_paddings": (1,),
    "flow_head_hidden": 128,
    "convex_upsampling": False,
}


@register_model(task="optical_flow", peer_weights=("torchvision",))
def raft_large(**config: Any) -> RAFT:
    """RAFT-large (5.3 M parameters): residual encoders, separable ConvGRU, convex upsampling,
    12 updates; torchvision's ``raft_large`` weights load. Any :class:`RaftConfig` field may be
    overridden."""
    return RAFT(config_from(RaftConfig, {**LARGE, **config}))


@register_model(task="optical_flow", peer_weights=("torchvision",))
def raft_small(**config: Any) -> RAFT:
    """RAFT-small (1.0 M parameters): bottleneck encoders, one 3 x 3 ConvGRU, bilinear
    upsampling, 12 updates; torchvision's ``raft_small`` weights load."""
    return RAFT(config_from(RaftConfig, {**SMALL, **config}))
