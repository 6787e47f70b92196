"""Keypoints of the scene shapes: four outline points per object, clockwise from the top, read
off the exact masks.

>>> from mmcam.data import generate_scene
>>> from mmcam.data.keypoints import object_keypoints
>>> kpts = object_keypoints(generate_scene(7).objects[0], 64)   # (4, 3): x, y, visibility
>>> kpts.shape
(4, 3)

Per shape (``KEYPOINT_NAMES``), the geometric points of :func:`mmcam.data.raster.shape_mask`'s
outline (radius ``r``, centre ``(cx, cy)``):

* circle: top, right, bottom, left (the extreme points, ``r`` from the centre);
* square: top-left, top-right, bottom-right, bottom-left corners (``0.85 r`` half side);
* triangle: apex, bottom-right corner, base centre, bottom-left corner;
* diamond: top, right, bottom, left corners (``1.1 r`` half diagonal).

A keypoint is the centre ``(x + 0.5, y + 0.5)`` of the pixel of the object's *full*
(unoccluded) mask nearest to its geometric point (ties: the first in row-major order), so every
keypoint lies on a pixel of the shape. Its visibility is 2 when that pixel is in the object's
visible mask (``SceneObject.mask``) and 0 when a later object or an occluding bar hides it
(COCO's "not labelled" — what ultralytics' pose loss trains the visibility logit against).
"""

from __future__ import annotations

import numpy as np

from .raster import shape_mask
from .vocab import SHAPES

__all__ = ["NUM_KEYPOINTS", "KEYPOINT_NAMES", "outline_points", "object_keypoints", "scene_keypoints"]

NUM_KEYPOINTS = 4

#: per shape, the names of its keypoints in order
KEYPOINT_NAMES: dict[str, tuple[str, ...]] = {
    "circle": ("top", "right", "bottom", "left"),
    "square": ("top-left", "top-right", "bottom-right", "bottom-left"),
    "triangle": ("apex", "bottom-right", "base centre", "bottom-left"),
    "diamond": ("top", "right", "bottom", "left"),
}


def outline_points(shape: str, cx: float, cy: float, r: float) -> np.ndarray:
    """The geometric keypoints ``(4, 2)`` (x, y) of a shape (see the module docstring)."""
    if shape in ("circle", "diamond"):
        d = r if shape == "circle" else 1.1 * r
        pts = [(cx, cy - d), (cx + d, cy), (cx, cy + d), (cx - d, cy)]
    elif shape == "square":
        h = 0.85 * r
        pts = [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    elif shape == "triangle":
        h = 0.9 * r
        pts = [(cx, cy - h), (cx + r, cy + h), (cx, cy + h), (cx - r, cy + h)]
    else:
        raise ValueError(f"unknown shape {shape!r}; pass one of {SHAPES}")
    return np.asarray(pts, dtype=np.float64)


def object_keypoints(obj, size: int) -> np.ndarray:
    """``(4, 3)`` float ``x, y, visibility`` of a :class:`~mmcam.data.SceneObject` in an image of
    side ``size``: the full mask's pixel nearest to each outline point, visibility 2 / 0."""
    full = shape_mask(obj.shape, obj.center[0], obj.center[1], obj.radius, size)
    ys, xs = np.nonzero(full)
    cols, rows = xs + 0.5, ys + 0.5
    out = np.zeros((NUM_KEYPOINTS, 3))
    for j, (px, py) in enumerate(outline_points(obj.shape, obj.center[0], obj.center[1], obj.radius)):
        k = int(np.argmin((cols - px) ** 2 + (rows - py) ** 2))
        out[j] = cols[k], rows[k], 2.0 if obj.mask[ys[k], xs[k]] else 0.0
    return out


def scene_keypoints(scene) -> np.ndarray:
    """``(N, 4, 3)`` keypoints of every object of a :class:`~mmcam.data.Scene`, in object order."""
    size = scene.image.shape[0]
    if not scene.objects:
        return np.zeros((0, NUM_KEYPOINTS, 3))
    return np.stack([object_keypoints(o, size) for o in scene.objects])
