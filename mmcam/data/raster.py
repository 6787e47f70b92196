"""A hard-edged numpy rasterizer: shape masks, backgrounds, clutter blobs and occluding bars.

A pixel (row ``y``, column ``x``) is sampled at its centre ``(x + 0.5, y + 0.5)`` and is
either inside a shape or not: no anti-aliasing, so the ground truth is exact and the bytes
are the same on every machine.

Every shape is centred on ``(cx, cy)``: the box of its full (unoccluded) outline is
symmetric about the centre up to pixel rounding, so "where an object is" means the same
thing for every shape.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .vocab import SHAPES

__all__ = ["shape_mask", "background", "clutter", "occluder_bar", "BACKGROUNDS", "CLUTTER_RADII"]

BACKGROUNDS: tuple[str, ...] = ("plain", "textured", "cluttered")
#: Radii of clutter blobs: much smaller than any object.
CLUTTER_RADII: tuple[int, int] = (2, 3)


@lru_cache(maxsize=8)
def _pixel_centres(size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(xx, yy)``: float32 (size, size) coordinates of the pixel centres (read-only)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    xx.setflags(write=False)
    yy.setflags(write=False)
    return xx, yy


def shape_mask(shape: str, cx: float, cy: float, r: float, size: int) -> np.ndarray:
    """Bool (size, size) mask of ``shape`` centred at ``(cx, cy)`` with radius ``r``.

    circle: disc of radius r; square: side 1.7 r; triangle: apex up, base 2 r, height 1.8 r;
    diamond: square rotated 45°, half-diagonal 1.1 r. The four have similar areas
    (1.8–3.1 r²) so size does not give the shape away.
    """
    xx, yy = _pixel_centres(size)
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        half = r * 0.85
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if shape == "triangle":
        half_height = r * 0.9
        frac = (dy + half_height) / (2 * half_height)  # 0 at the apex, 1 at the base
        return (frac >= 0) & (frac <= 1) & (np.abs(dx) <= frac * r)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= r * 1.1
    raise ValueError(f"unknown shape {shape!r}; pass one of {SHAPES}")


def background(rng: np.random.Generator, kind: str, size: int) -> np.ndarray:
    """uint8 (size, size, 3) background, grey-ish and far from every object colour.

    plain: one slightly tinted grey (200 ± 10 per channel). textured / cluttered: grey
    8×8-pixel blocks (± 18) plus per-pixel noise (± 6), values kept in [150, 235].
    """
    if kind == "plain":
        base = np.full((size, size, 3), 200, np.int16) + rng.integers(-10, 11, 3)
    elif kind in ("textured", "cluttered"):
        blocks = size // 8 + 1
        coarse = rng.integers(-18, 19, (blocks, blocks, 1))
        base = 190 + np.kron(coarse, np.ones((8, 8, 1), np.int64))[:size, :size] + rng.integers(-6, 7, (size, size, 1))
        base = np.repeat(base, 3, axis=2)
    else:
        raise ValueError(f"unknown background {kind!r}; pass one of {BACKGROUNDS}")
    return np.clip(base, 150, 235).astype(np.uint8)


def clutter(rng: np.random.Generator, image: np.ndarray, count: int) -> None:
    """Paint ``count`` small slate-blue blobs (not object colours, not categories) in place.

    Each blob is a disc of radius 2–3 px coloured ``(v, v, b)`` with v in [100, 140) and
    b in [150, 180): never equal to an object colour, never grey like the background.
    """
    size = image.shape[0]
    for _ in range(count):
        cx, cy = rng.uniform(3, size - 3, 2)
        blob = shape_mask("circle", cx, cy, int(rng.integers(CLUTTER_RADII[0], CLUTTER_RADII[1] + 1)), size)
        grey = int(rng.integers(100, 140))
        image[blob] = (grey, grey, int(rng.integers(150, 180)))


def occluder_bar(rng: np.random.Generator, cx: float, cy: float, r: float, size: int) -> np.ndarray:
    """Bool (size, size) mask of a vertical bar, 3 px wide, across an object at ``(cx, cy)``.

    The bar starts within ± 2 px of the centre column and spans the object's height plus
    4 px above and below, so it cuts the object without hiding it.
    """
    x0 = int(cx + rng.integers(-2, 3))
    index = np.arange(size)
    columns = (index >= x0) & (index < x0 + 3)
    rows = np.abs(index - cy) <= r + 4
    return rows[:, None] & columns[None, :]
