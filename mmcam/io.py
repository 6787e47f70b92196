"""Reading images with errors that say what went wrong."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import InputError

__all__ = ["load_image", "IMAGE_SUFFIXES", "list_images"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def load_image(image: Any) -> Image.Image:
    """An RGB PIL image from a path, PIL image, uint8 array (H, W, 3) or tensor (3, H, W) in [0, 1]."""
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.exists():
            raise InputError(f"image file {str(path)!r} does not exist; pass an existing image path")
        if path.is_dir():
            raise InputError(f"{str(path)!r} is a directory; pass an image file")
        try:
            with Image.open(path) as img:
                img.load()
                return img.convert("RGB")
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, ImportError) as error:
            # ImportError: importing ultralytics patches Image.open to try an optional HEIF
            # decoder on files PIL cannot read
            raise InputError(f"cannot read image {str(path)!r}: {error}; pass a PNG/JPEG file") from None
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        if image.ndim == 4 and image.shape[0] == 1:
            image = image[0]
        if image.ndim != 3 or image.shape[0] not in (1, 3):
            raise InputError(f"an image tensor must be (3, H, W), got {tuple(image.shape)}")
        arr = image.permute(1, 2, 0).numpy()
        arr = (arr * 255).round().clip(0, 255).astype(np.uint8) if image.is_floating_point() else arr.astype(np.uint8)
        return Image.fromarray(arr.squeeze(-1) if arr.shape[-1] == 1 else arr).convert("RGB")
    if isinstance(image, np.ndarray):
        if image.ndim not in (2, 3):
            raise InputError(f"an image array must be (H, W) or (H, W, 3), got {image.shape}")
        arr = image if image.dtype == np.uint8 else (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
        return Image.fromarray(arr).convert("RGB")
    raise InputError(f"cannot use {type(image).__name__} as an image; pass a path, PIL image, array or tensor")


def list_images(path: "str | Path") -> list[Path]:
    """Image files in a directory (sorted), or the single file given."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{str(path)!r} does not exist; pass an image file or a directory of images")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in {str(path)!r}")
    return files
