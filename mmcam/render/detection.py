"""Per-item panels: the box (upright or rotated) or keypoints drawn over its own normalised heatmap."""

from __future__ import annotations

import numpy as np

__all__ = ["draw_box", "draw_polygon", "draw_points"]


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


def draw_polygon(image: np.ndarray, points, color=(255, 45, 85), width: int = 1) -> np.ndarray:
    """A copy of ``image`` with the closed polygon ``[(x, y), ...]`` outlined (a rotated box's
    four corners), each edge sampled at every pixel along its longer axis."""
    out = image.copy()
    h, w = out.shape[:2]
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    for (x0, y0), (x1, y1) in zip(pts, np.roll(pts, -1, axis=0)):
        n = int(np.ceil(max(abs(x1 - x0), abs(y1 - y0)))) + 1
        xs, ys = np.linspace(x0, x1, n), np.linspace(y0, y1, n)
        for t in range(width):
            for dx, dy in ((t, 0), (0, t)) if t else ((0, 0),):
                cx, cy = np.round(xs + dx).astype(int), np.round(ys + dy).astype(int)
                inside = (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h)
                out[cy[inside], cx[inside]] = color
    return out


def draw_points(image: np.ndarray, points, color=(10, 132, 255), radius: int = 3, min_visibility: float = 0.0) -> np.ndarray:
    """A copy of ``image`` with a filled disc at each ``(x, y[, visibility])`` keypoint (those with
    visibility above ``min_visibility``; points outside the image are skipped)."""
    out = image.copy()
    h, w = out.shape[:2]
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    disc = xx**2 + yy**2 <= radius**2
    for point in np.asarray(points, dtype=np.float64).reshape(-1, np.shape(points)[-1] if np.ndim(points) else 2):
        if len(point) > 2 and point[2] <= min_visibility:
            continue
        cx, cy = int(round(point[0])), int(round(point[1]))
        ys, xs = cy + yy[disc], cx + xx[disc]
        inside = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
        out[ys[inside], xs[inside]] = color
    return out
