"""Model inputs: a tensor passed as ``model(x)`` or a dict passed as ``model(**x)``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import InputError

__all__ = ["Inputs"]

IMAGE_KEYS = ("pixel_values", "images", "image", "x")


class Inputs:
    """A batch of model inputs with its batch size and its image tensor located.

    ``image_key`` names the dict entry holding the image (``None`` for a plain tensor);
    perturbation methods replace that entry and repeat rows of the others.
    """

    def __init__(self, value: Any, image_key: str | None = None):
        if isinstance(value, torch.Tensor):
            if not value.is_floating_point():
                raise InputError(
                    f"the input tensor has dtype {value.dtype}; pass a float image tensor (B, C, H, W), e.g. x.float() / 255 normalised as the model expects"
                )
            if value.ndim < 2:
                raise InputError(
                    f"the input tensor needs a batch dimension, got shape {tuple(value.shape)}; pass a batch (B, ...), e.g. x[None] for one sample"
                )
            self.value, self.image_key = value, None
        elif isinstance(value, Mapping):
            self.value = dict(value)
            self.image_key = image_key or _find_image_key(self.value)
        else:
            raise InputError(
                f"cannot use {type(value).__name__} as inputs; pass a tensor or a dict of tensors (passed as model(**inputs)), e.g. torch.stack(images)"
            )
        self.batch_size = int(self.image.shape[0]) if self.image is not None else _first_batch(self.value)

    @property
    def image(self) -> torch.Tensor | None:
        """The image tensor, or ``None`` when the inputs hold no image."""
        if self.image_key is None:
            return self.value if isinstance(self.value, torch.Tensor) else None
        return self.value[self.image_key]

    @property
    def spatial_size(self) -> tuple[int, int] | None:
        image = self.image
        if image is None or image.ndim < 4:
            return None
        return int(image.shape[-2]), int(image.shape[-1])

    def run(self, model: nn.Module) -> Any:
        return model(**self.value) if isinstance(self.value, dict) else model(self.value)

    def take(self, rows: torch.Tensor, image: torch.Tensor | None = None) -> "Inputs":
        """Rows ``rows`` of every batched entry; the image replaced by ``image`` if given."""
        if isinstance(self.value, torch.Tensor):
            return Inputs(image if image is not None else self.value[rows])
        out = {}
        for key, v in self.value.items():
            if key == self.image_key and image is not None:
                out[key] = image
            elif isinstance(v, torch.Tensor) and v.ndim > 0 and v.shape[0] == self.batch_size:
                out[key] = v[rows.to(v.device)]
            else:
                out[key] = v
        return Inputs(out, self.image_key)


def _find_image_key(value: dict) -> str | None:
    for key in IMAGE_KEYS:
        if isinstance(value.get(key), torch.Tensor):
            return key
    four_d = [k for k, v in value.items() if isinstance(v, torch.Tensor) and v.ndim == 4 and v.is_floating_point()]
    return four_d[0] if len(four_d) == 1 else None


def _first_batch(value: dict) -> int:
    for v in value.values():
        if isinstance(v, torch.Tensor) and v.ndim > 0:
            return int(v.shape[0])
    raise InputError("the input dict holds no tensor with a batch dimension; pass tensors shaped (B, ...)")
