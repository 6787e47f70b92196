"""Caption strips: one thumbnail per word, in caption order, with the word under it."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

from .overlay import overlay

__all__ = ["caption_strip"]


def caption_strip(image: np.ndarray, maps: torch.Tensor, words: list[str], thumb: int = 96, pad: int = 4) -> np.ndarray:
    """A uint8 RGB strip: for each word its overlay (``thumb`` px) above the word."""
    label_h = 16
    width = len(words) * (thumb + pad) + pad
    canvas = Image.new("RGB", (width, thumb + label_h + 2 * pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for k, (word, heat) in enumerate(zip(words, maps)):
        tile = Image.fromarray(overlay(image, heat)).resize((thumb, thumb), Image.NEAREST)
        x = pad + k * (thumb + pad)
        canvas.paste(tile, (x, pad))
        text_w = draw.textlength(word)
        draw.text((x + (thumb - text_w) / 2, thumb + pad + 2), word, fill=(20, 20, 20))
    return np.asarray(canvas)
