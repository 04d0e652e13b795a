"""Draw structured predictions and targets as pictures: boxes, masks, label maps, flow, depth.

Convention: images come in as ``Tensor[3, H, W]`` (or ``[1, H, W]`` grey), either float in
[0, 1] (values outside are clamped) or ``uint8`` in 0..255, and every function returns a new
``uint8`` ``Tensor[3, H, W]`` on the CPU; inputs are never modified. Boxes are xyxy in
absolute pixels where pixel ``i`` spans ``[i, i + 1)``, so box ``(10, 10, 20, 20)`` covers
pixel rows and columns 10..19 and its outline is drawn on those pixels, inward.
Colours are ``(r, g, b)`` tuples, colour names or ``#rrggbb`` strings.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from ..ops import clip_boxes_to_image
from .colors import Color, ColorLike, distinct_color, parse_color, voc_palette

logger = logging.getLogger(__name__)

IGNORE_COLOR: Color = (255, 255, 255)


# ----------------------------------------------------------------------------- helpers


def _shape(x: Any) -> Any:
    return tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__


def to_uint8_image(image: Tensor, name: str = "image") -> Tensor:
    """Float ``[C, H, W]`` in [0, 1] or ``uint8`` with C in {1, 3} -> ``uint8[3, H, W]`` on the CPU."""
    if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"{name} must be a Tensor[3, H, W] (or [1, H, W]), got {_shape(image)}")
    if image.dtype == torch.uint8:
        out = image.detach().cpu()
    elif image.is_floating_point():
        out = (image.detach().cpu().float().nan_to_num(0.0).clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    else:
        raise ValueError(f"{name} must be float in [0, 1] or uint8, got {image.dtype}")
    return out.expand(3, -1, -1).clone()  # (1 or 3, H, W) -> (3, H, W), a fresh copy


def _to_pil(image: Tensor) -> Image.Image:
    return Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())  # (3, H, W) -> (H, W, 3)


def _from_pil(pil: Image.Image) -> Tensor:
    return torch.from_numpy(np.array(pil.convert("RGB"))).permute(2, 0, 1).contiguous()  # -> (3, H, W)


def _per_item_colors(colors: ColorLike | Sequence[ColorLike] | None, n: int, name: str) -> list[Color] | None:
    """``None`` -> None; one colour -> n copies; a list of n colours -> parsed list."""
    if colors is None:
        return None
    if isinstance(colors, str) or (
        isinstance(colors, (tuple, list)) and len(colors) == 3 and all(isinstance(c, int) for c in colors)
    ):
        return [parse_color(colors, name)] * n  # type: ignore[arg-type]
    if isinstance(colors, Tensor) and colors.dim() == 2:
        colors = colors.tolist()
    if not isinstance(colors, Sequence) or len(colors) != n:
        got = len(colors) if isinstance(colors, Sequence) else type(colors).__name__
        raise ValueError(f"{name} must be one colour or a list of {n} colours (one per item), got {got}")
    return [parse_color(c, f"{name}[{i}]") for i, c in enumerate(colors)]  # type: ignore[arg-type]


def _check_alpha(alpha: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")


@functools.lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Pillow's built-in font: no file on disk, no download.
    return ImageFont.load_default(size=size)


# ----------------------------------------------------------------------------- boxes


def _class_name(label: int, class_names: Any) -> str:
    if class_names is None:
        return str(label)
    names = class_names.names if hasattr(class_names, "names") else class_names
    if label == 0:
        return "background"
    if not 1 <= label <= len(names):
        raise ValueError(f"labels holds {label}, but class_names names only labels 1..{len(names)}")
    return str(names[label - 1])


def draw_boxes(
    image: Tensor,
    boxes: Tensor,
    labels: Tensor | None = None,
    scores: Tensor | None = None,
    class_names: Sequence[str] | Any | None = None,
    colors: ColorLike | Sequence[ColorLike] | None = None,
    width: int = 2,
    font_size: int | None = None,
    score_threshold: float | None = None,
) -> Tensor:
    """Draw box outlines with a caption ``"name 0.87"`` beside each, never over its object.

    Caption rule: the caption sits on a tag just above the box; when the image has no room
    above, just below it; when there is room for neither it is left out. A caption is never
    drawn inside its box, so it never hides a small object. Its size follows the image
    (:func:`caption_font_size`) unless ``font_size`` is given.

    Args:
        image (Tensor[3, H, W]): float in [0, 1] or uint8.
        boxes (Tensor[N, 4]): xyxy, absolute pixels; clipped to the image, boxes entirely
            outside it are skipped. ``N = 0`` returns the image unchanged (as uint8).
        labels (int Tensor[N]): class labels (0 = background); colour boxes by class.
        scores (Tensor[N]): confidences, printed with two decimals.
        class_names: names of labels ``1..K`` (``class_names[k - 1]`` names label k, as
            ``structpred.data.records.Categories.names``) or a ``Categories``; without it the
            caption shows the label number.
        colors: one colour for all boxes or one per box; default: a distinct colour per class
            (per box without labels).
        width: outline width in pixels, drawn inside the box.
        font_size: caption height in pixels; None: :func:`caption_font_size` of the image.
        score_threshold: draw only boxes with ``score >= score_threshold`` (needs scores).
    Returns:
        uint8 Tensor[3, H, W].
    """
    out = to_uint8_image(image)
    _, H, W = out.shape
    if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be a Tensor[N, 4] (xyxy), got {_shape(boxes)}")
    boxes = boxes.detach().cpu().double()
    N = boxes.shape[0]
    if not bool(torch.isfinite(boxes).all()):
        raise ValueError("boxes holds NaN or infinite coordinates")
    if bool(((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])).any()):
        raise ValueError("boxes must be xyxy with x2 >= x1 and y2 >= y1")
    if labels is not None:
        if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.shape[0] != N:
            raise ValueError(f"labels must be a Tensor[N] with N = {N} (one per box), got {_shape(labels)}")
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
    if scores is not None:
        if not isinstance(scores, Tensor) or scores.dim() != 1 or scores.shape[0] != N:
            raise ValueError(f"scores must be a Tensor[N] with N = {N} (one per box), got {_shape(scores)}")
    if score_threshold is not None and scores is None:
        raise ValueError("score_threshold needs scores")
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    if font_size is None:
        font_size = caption_font_size(H, W)
    if font_size < 1:
        raise ValueError(f"font_size must be >= 1, got {font_size}")
    label_list = labels.tolist() if labels is not None else None
    score_list = scores.detach().cpu().tolist() if scores is not None else None
    box_colors = _per_item_colors(colors, N, "colors")
    captions = []
    for i in range(N):  # names first, so a bad label raises before anything is drawn
        parts = [] if label_list is None else [_class_name(int(label_list[i]), class_names)]
        if score_list is not None:
            parts.append(f"{score_list[i]:.2f}")
        captions.append(" ".join(parts))
    if N == 0:
        return out

    pil = _to_pil(out)
    draw = ImageDraw.Draw(pil)
    font = _font(font_size)
    clipped = clip_boxes_to_image(boxes, (H, W))  # (N, 4)
    for i in range(N):
        x1, y1, x2, y2 = boxes[i].tolist()
        if x1 >= W or y1 >= H or x2 <= 0 or y2 <= 0:
            continue  # entirely outside
        if score_threshold is not None and score_list is not None and score_list[i] < score_threshold:
            continue
        if box_colors is not None:
            color = box_colors[i]
        else:
            color = distinct_color(int(label_list[i]) if label_list is not None else i)
        # Continuous [x1, x2) -> inclusive pixel range [px1, px2].
        cx1, cy1, cx2, cy2 = clipped[i].tolist()
        px1, py1 = min(round(cx1), W - 1), min(round(cy1), H - 1)
        px2, py2 = max(round(cx2) - 1, px1), max(round(cy2) - 1, py1)
        draw.rectangle((px1, py1, px2, py2), outline=color, width=width)
        if captions[i]:
            _draw_caption(draw, captions[i], (px1, py1, px2, py2), color, font, (H, W))
    return _from_pil(pil)


def caption_font_size(height: int, width: int) -> int:
    """Caption height in pixels for an ``height`` x ``width`` image: 3.5 % of the shorter side,
    clamped to 8..22 (legible on a 64-pixel thumbnail, not shouting on a photograph)."""
    return int(min(22, max(8, round(0.035 * min(height, width)))))


def caption_position(
    box: tuple[int, int, int, int], tag: tuple[int, int], size: tuple[int, int]
) -> tuple[int, int] | None:
    """Top-left corner of a ``tag = (tw, th)`` caption for the pixel box ``(x1, y1, x2, y2)``
    (inclusive) in an image of ``size = (H, W)``: above the box, else below it, else None
    (no room: the caption is left out rather than drawn over the object)."""
    H, W = size
    tw, th = tag
    x1, y1, _, y2 = box
    x = max(0, min(x1, W - tw))
    if y1 - th >= 0:
        return x, y1 - th
    if y2 + 1 + th <= H:
        return x, y2 + 1
    return None


def _draw_caption(
    draw: ImageDraw.ImageDraw,
    text: str,
    box: tuple[int, int, int, int],
    color: Color,
    font: Any,
    size: tuple[int, int],
) -> None:
    """Caption on a filled tag in the box colour at :func:`caption_position` (if any)."""
    left, top, right, bottom = (int(math.ceil(v)) for v in draw.textbbox((0, 0), text, font=font))
    tw, th = right - left + 2, bottom - top + 2  # 1-pixel margin around the glyphs
    where = caption_position(box, (tw, th), size)
    if where is None:
        return
    x, y = where
    draw.rectangle((x, y, x + tw - 1, y + th - 1), fill=color)
    luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    ink = (0, 0, 0) if luminance > 140 else (255, 255, 255)
    draw.text((x + 1 - left, y + 1 - top), text, fill=ink, font=font)


# ----------------------------------------------------------------------------- masks and label maps


def _blend(out: Tensor, where: Tensor, color: Color | Tensor, alpha: float) -> None:
    """In place: ``out[:, where] = round((1 - alpha) * out + alpha * color)`` (out uint8[3, H, W])."""
    rgb = torch.as_tensor(color, dtype=torch.float64)
    rgb = rgb.reshape(3, 1) if rgb.dim() == 1 else rgb.t()  # (3,) -> (3, 1); (P, 3) -> (3, P)
    pixels = out[:, where].double()  # (3, P)
    out[:, where] = (pixels * (1.0 - alpha) + rgb * alpha).round().clamp(0, 255).to(torch.uint8)


def draw_masks(
    image: Tensor,
    masks: Tensor,
    colors: ColorLike | Sequence[ColorLike] | None = None,
    alpha: float = 0.5,
) -> Tensor:
    """Tint the pixels of each instance mask: ``round((1 - alpha) * pixel + alpha * colour)``.

    Args:
        image (Tensor[3, H, W]): float in [0, 1] or uint8.
        masks (Tensor[N, H, W]): bool or uint8 (non-zero = inside); later masks are blended
            over earlier ones where they overlap. Threshold soft masks first (``masks > 0.5``).
        colors: one colour or one per mask; default a distinct colour per mask.
        alpha: opacity of the tint in [0, 1].
    Returns:
        uint8 Tensor[3, H, W]; pixels outside every mask are unchanged.
    """
    out = to_uint8_image(image)
    _, H, W = out.shape
    if not isinstance(masks, Tensor) or masks.dim() != 3 or tuple(masks.shape[1:]) != (H, W):
        raise ValueError(f"masks must be a Tensor[N, {H}, {W}] matching the image, got {_shape(masks)}")
    if masks.dtype not in (torch.bool, torch.uint8):
        raise ValueError(f"masks must be bool or uint8, got {masks.dtype} (threshold soft masks first)")
    _check_alpha(alpha)
    N = masks.shape[0]
    mask_colors = _per_item_colors(colors, N, "colors") or [distinct_color(i) for i in range(N)]
    masks = masks.detach().cpu() != 0
    for i in range(N):
        _blend(out, masks[i], mask_colors[i], alpha)
    return out


def _palette_tensor(palette: Tensor | Sequence[ColorLike] | None) -> Tensor:
    if palette is None:
        return voc_palette(256)
    if isinstance(palette, Tensor):
        if palette.dim() != 2 or palette.shape[1] != 3:
            raise ValueError(f"palette must be a Tensor[K, 3], got {tuple(palette.shape)}")
        return palette.detach().cpu().round().clamp(0, 255).to(torch.uint8)
    if len(palette) == 0:
        raise ValueError("palette is empty")
    return torch.tensor([parse_color(c, f"palette[{i}]") for i, c in enumerate(palette)], dtype=torch.uint8)


def _check_label_map(labels: Tensor, palette: Tensor, ignore_index: int | None) -> Tensor:
    """Validate ``labels`` (int [H, W]); returns a bool [H, W] of ignored pixels."""
    if not isinstance(labels, Tensor) or labels.dim() != 2:
        raise ValueError(f"labels must be an integer Tensor[H, W], got {_shape(labels)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
    if ignore_index is None:
        ignored = torch.zeros_like(labels, dtype=torch.bool)
    else:
        ignored = labels == ignore_index
    kept = labels[~ignored]
    if kept.numel() and (int(kept.min()) < 0 or int(kept.max()) >= palette.shape[0]):
        raise ValueError(
            f"labels holds values in [{int(kept.min())}, {int(kept.max())}] but the palette has "
            f"{palette.shape[0]} colours (and ignore_index={ignore_index})"
        )
    return ignored


def draw_label_map(
    labels: Tensor,
    palette: Tensor | Sequence[ColorLike] | None = None,
    ignore_index: int | None = 255,
    ignore_color: ColorLike = IGNORE_COLOR,
) -> Tensor:
    """Colour a semantic (or part) label map ``int[H, W]`` -> ``uint8[3, H, W]``.

    Label ``k`` gets ``palette[k]`` (default: the PASCAL VOC palette, background 0 black);
    pixels equal to ``ignore_index`` are painted ``ignore_color``, **white** by default so
    they stand out from the black background. Labels outside the palette raise ``ValueError``.
    """
    pal = _palette_tensor(palette)
    ignored = _check_label_map(labels, pal, ignore_index)
    index = labels.detach().cpu().long().masked_fill(ignored.cpu(), 0)  # (H, W)
    out = pal[index].permute(2, 0, 1).contiguous()  # (H, W, 3) -> (3, H, W)
    fill = torch.tensor(parse_color(ignore_color, "ignore_color"), dtype=torch.uint8)
    out[:, ignored.cpu()] = fill[:, None]  # (3,) -> (3, 1), broadcast over the ignored pixels
    return out


def overlay_label_map(
    image: Tensor,
    labels: Tensor,
    alpha: float = 0.5,
    palette: Tensor | Sequence[ColorLike] | None = None,
    ignore_index: int | None = 255,
    background_index: int | None = 0,
) -> Tensor:
    """Blend the colours of a label map ``int[H, W]`` over ``image`` with opacity ``alpha``.

    Pixels labelled ``background_index`` or ``ignore_index`` keep the image's colour, so the
    photograph shows through; every other pixel is ``round((1 - alpha) * pixel + alpha * palette[k])``.
    """
    out = to_uint8_image(image)
    _check_alpha(alpha)
    pal = _palette_tensor(palette)
    ignored = _check_label_map(labels, pal, ignore_index).cpu()
    if tuple(labels.shape) != tuple(out.shape[1:]):
        raise ValueError(f"labels has shape {tuple(labels.shape)} but the image is {tuple(out.shape[1:])}")
    labels = labels.detach().cpu().long()
    painted = ~ignored
    if background_index is not None:
        painted &= labels != background_index
    _blend(out, painted, pal[labels[painted]], alpha)
    return out


# ----------------------------------------------------------------------------- files and grids


def save_png(path: str | Path, image: Tensor) -> Path:
    """Write ``uint8[3, H, W]`` (or ``[1, H, W]`` grey) as a PNG, creating parent folders."""
    if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"image must be a uint8 Tensor[3, H, W], got {_shape(image)}")
    if image.dtype != torch.uint8:
        raise ValueError(f"image must be uint8 (use to_uint8_image for floats), got {image.dtype}")
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"path must end in .png, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    _to_pil(to_uint8_image(image)).save(path, format="PNG")
    logger.debug("wrote %s", path)
    return path


def make_grid(
    images: Sequence[Tensor] | Tensor, nrow: int = 8, padding: int = 2, pad_value: ColorLike = (0, 0, 0)
) -> Tensor:
    """Tile images into one ``uint8[3, H', W']`` picture, ``nrow`` images per row.

    Images may be float in [0, 1] or uint8 and may differ in size: each cell is as large as
    the largest image, which is placed at its centre. ``padding`` pixels of ``pad_value``
    separate the cells and surround the grid.
    """
    if isinstance(images, Tensor):
        if images.dim() != 4:
            raise ValueError(f"images as a Tensor must be [B, 3, H, W], got {tuple(images.shape)}")
        images = list(images.unbind(0))
    if not isinstance(images, Sequence) or len(images) == 0:
        raise ValueError("images must be a non-empty list of Tensor[3, H, W]")
    if nrow < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    tiles = [to_uint8_image(im, f"images[{i}]") for i, im in enumerate(images)]
    cell_h = max(t.shape[1] for t in tiles)
    cell_w = max(t.shape[2] for t in tiles)
    cols = min(nrow, len(tiles))
    rows = math.ceil(len(tiles) / cols)
    fill = torch.tensor(parse_color(pad_value, "pad_value"), dtype=torch.uint8)
    grid = fill.reshape(3, 1, 1).repeat(
        1, rows * (cell_h + padding) + padding, cols * (cell_w + padding) + padding
    )  # (3, H', W')
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        _, h, w = tile.shape
        top = padding + r * (cell_h + padding) + (cell_h - h) // 2
        left = padding + c * (cell_w + padding) + (cell_w - w) // 2
        grid[:, top : top + h, left : left + w] = tile
    return grid
