"""Text-task renderings: caption strips (one thumbnail per word) and answer-grounding panels."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

from .overlay import overlay

__all__ = ["caption_strip", "answer_panel"]


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


def _wrap(draw: ImageDraw.ImageDraw, text: str, width: float) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]


def answer_panel(
    image: np.ndarray, heat: torch.Tensor, question: str, answer: str, probability: float | None = None, size: int = 160, pad: int = 6
) -> np.ndarray:
    """A uint8 RGB answer-grounding panel: the image and the answer's heatmap side by side,
    the question and the answer (with its probability) written below."""
    base = Image.fromarray(np.asarray(image)).convert("RGB").resize((size, size), Image.NEAREST)
    heated = Image.fromarray(overlay(image, heat)).resize((size, size), Image.NEAREST)
    width = 2 * size + 3 * pad
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    q_lines = _wrap(probe, f"Q: {question}", width - 2 * pad)
    a_text = f"A: {answer}" + (f"  (p = {probability:.3f})" if probability is not None else "")
    a_lines = _wrap(probe, a_text, width - 2 * pad)
    line_h = 14
    height = size + 2 * pad + line_h * (len(q_lines) + len(a_lines)) + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    canvas.paste(base, (pad, pad))
    canvas.paste(heated, (2 * pad + size, pad))
    draw = ImageDraw.Draw(canvas)
    y = size + 2 * pad
    for line in q_lines:
        draw.text((pad, y), line, fill=(20, 20, 20))
        y += line_h
    for line in a_lines:
        draw.text((pad, y), line, fill=(150, 20, 20))
        y += line_h
    return np.asarray(canvas)
