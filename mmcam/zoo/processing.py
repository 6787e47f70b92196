"""Processors for the zoo models: images in, model inputs out (no hub files)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from ..io import load_image

__all__ = ["ImageProcessor", "detr_processor", "to_pixel_tensor"]


def to_pixel_tensor(images: Any, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """``(B, 3, size, size)`` float tensor from one image or a list (path, PIL, uint8 array, tensor)."""
    if not isinstance(images, (list, tuple)):
        images = [images]
    arrays = []
    for img in images:
        pil = load_image(img)
        if pil.size != (size, size):
            pil = pil.resize((size, size), Image.BILINEAR)
        arrays.append(np.asarray(pil, dtype=np.float32) / 255.0)
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    mean_t = torch.tensor(mean, dtype=torch.float32)[None, :, None, None]
    std_t = torch.tensor(std, dtype=torch.float32)[None, :, None, None]
    return (x - mean_t) / std_t


class ImageProcessor:
    """Resize to ``size`` and normalise. Returns a tensor (torchvision models take ``model(x)``)
    or, with ``as_dict=True``, ``{"pixel_values": x}`` (HF models take ``model(**inputs)``)."""

    def __init__(self, size: int = 64, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), as_dict: bool = False, labels: list[str] | None = None):
        self.size, self.mean, self.std, self.as_dict = size, tuple(mean), tuple(std), as_dict
        self.labels = labels or []

    def __call__(self, images: Any = None, return_tensors: str = "pt", **_: Any) -> Any:
        x = to_pixel_tensor(images, self.size, self.mean, self.std)
        return {"pixel_values": x} if self.as_dict else x

    def __repr__(self) -> str:
        return f"ImageProcessor(size={self.size}, as_dict={self.as_dict})"


def detr_processor(cfg: dict[str, Any]) -> Any:
    """The HF ``DetrImageProcessor`` for a zoo DETR config: resize to the training size and
    normalise as in training, no padding. ``processor(images=..., return_tensors="pt")`` gives
    ``pixel_values``; ``processor.post_process_object_detection(outputs, threshold,
    target_sizes)`` gives per image ``{"scores", "labels" (0-based), "boxes" (xyxy px)}``."""
    from transformers import DetrImageProcessor

    pre = cfg["preprocessing"]
    return DetrImageProcessor(
        do_resize=True,
        size={"height": pre["size"], "width": pre["size"]},
        do_normalize=True,
        image_mean=list(pre["mean"]),
        image_std=list(pre["std"]),
        do_pad=False,
    )
