"""The CAM engine: per-call hooks, prefix cut, batched gradients, combine/normalise/upsample."""
from .core import CAM, Explanation

__all__ = ["CAM", "Explanation"]
