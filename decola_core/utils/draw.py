"""Draw boxes with labels on images (training visualisations, predictions)."""

from __future__ import annotations

import colorsys

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont


def palette(index: int) -> tuple[int, int, int]:
    """Well-separated colours (golden-ratio hue steps), stable per class index."""
    hue = (index * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_boxes(
    image: torch.Tensor | np.ndarray,
    boxes,
    labels: list[str],
    colours: list[int],
    *,
    fade: float = 0.0,
) -> Image.Image:
    """A PIL image of ``image`` (3, H, W uint8 or H, W, 3) with xyxy ``boxes`` and text labels
    on filled tags (readable on any background). ``fade`` blends the image towards white."""
    array = (
        image.permute(1, 2, 0).cpu().numpy()
        if isinstance(image, torch.Tensor)
        else np.asarray(image)
    )
    if fade:
        array = (array.astype(np.float32) * (1 - fade) + 255 * fade).astype(np.uint8)
    canvas = Image.fromarray(np.ascontiguousarray(array)).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    width = max(1, round(min(canvas.size) / 200))
    for box, text, colour_index in zip(
        np.asarray(boxes, dtype=np.float64).reshape(-1, 4), labels, colours, strict=True
    ):
        colour = palette(colour_index)
        x0, y0, x1, y1 = box.tolist()
        draw.rectangle([x0, y0, x1, y1], outline=colour, width=width)
        if text:
            left, top, right, bottom = draw.textbbox((x0, y0), text, font=font)
            tag_top = max(0, y0 - (bottom - top) - 2)
            x0 = max(0, min(x0, canvas.width - (right - left) - 4))  # keep the tag inside
            draw.rectangle(
                [x0, tag_top, x0 + (right - left) + 4, tag_top + (bottom - top) + 2], fill=colour
            )
            luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
            draw.text(
                (x0 + 2, tag_top),
                text,
                fill=(0, 0, 0) if luminance > 140 else (255, 255, 255),
                font=font,
            )
    return canvas


def overlay_masks(
    image: torch.Tensor | np.ndarray, masks: torch.Tensor, colours: list[int], alpha: float = 0.45
) -> np.ndarray:
    """(H, W, 3) uint8: ``image`` with each (H, W) bool mask blended in its class colour."""
    array = (
        image.permute(1, 2, 0).cpu().numpy()
        if isinstance(image, torch.Tensor)
        else np.asarray(image)
    ).astype(np.float32)
    for mask, colour_index in zip(masks.cpu().numpy(), colours, strict=True):
        array[mask] = array[mask] * (1 - alpha) + np.array(palette(colour_index)) * alpha
    return array.round().astype(np.uint8)


def draw_instances(
    image: torch.Tensor | np.ndarray,
    boxes,
    labels: list[str],
    colours: list[int],
    *,
    masks: torch.Tensor | None = None,
    fade: float = 0.0,
) -> Image.Image:
    """:func:`draw_boxes` over the instances' (n, H, W) bool masks (translucent) if given."""
    if masks is not None:
        image = overlay_masks(image, masks, colours)
    return draw_boxes(image, boxes, labels, colours, fade=fade)
