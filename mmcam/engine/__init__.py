"""The CAM engine: per-call hooks (``hooks``), prefix cut, gradients (``gradients``: batched /
loop / auto), default-layer probing (``layers``), the returned maps (``explanation``,
``combine``: normalise / upsample / fuse), attention methods (``attention``) and the
pixel-space composites Guided Backprop / Guided Grad-CAM (``guided``)."""

from .core import CAM, Explanation

__all__ = ["CAM", "Explanation"]
