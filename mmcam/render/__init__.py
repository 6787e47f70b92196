"""Rendering: overlays, per-item panels and reports."""

from .overlay import colorize, data_uri, overlay, png_bytes, resize_map, save_png, to_uint8_image

__all__ = ["colorize", "overlay", "save_png", "png_bytes", "data_uri", "to_uint8_image", "resize_map"]
