"""Per-box panels: the box drawn over its own normalised heatmap."""

from __future__ import annotations

import numpy as np

__all__ = ["draw_box"]


def draw_box(image: np.ndarray, box, color=(255, 45, 85), width: int = 1) -> np.ndarray:
    """A copy of ``image`` with the ``(x0, y0, x1, y1)`` box outlined."""
    out = image.copy()
    h, w = out.shape[:2]
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, x1 = max(0, min(x0, w - 1)), max(0, min(x1 - 1, w - 1))
    y0, y1 = max(0, min(y0, h - 1)), max(0, min(y1 - 1, h - 1))
    for t in range(width):
        out[max(0, y0 - t) : y1 + t + 1, max(0, x0 - t)] = color
        out[max(0, y0 - t) : y1 + t + 1, min(w - 1, x1 + t)] = color
        out[max(0, y0 - t), max(0, x0 - t) : x1 + t + 1] = color
        out[min(h - 1, y1 + t), max(0, x0 - t) : x1 + t + 1] = color
    return out
