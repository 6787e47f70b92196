"""PaliGemma and Gemma 3: a fixed square input (the image processor's ``size``), a SigLIP tower
without CLS, one square grid of image tokens.

PaliGemma writes the tower's ``(image_size / patch_size)^2`` projected patches into the
sequence as they are; its answer tokens are the *suffix* of a prefix-LM (``token_type_ids``
1: causal), the prompt and image the bidirectional prefix (0). Gemma 3's projector average-
pools the patch grid to ``mm_tokens_per_image`` tokens (a ``sqrt(mm_tokens_per_image)``-sided
grid), so the tower's blocks and the projector give grids of different sides, both square and
both read from the hooked tensor. Pan-and-scan crops (Gemma 3's ``do_pan_and_scan``) are
refused with what to pass instead.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ...errors import InputError
from ...reshape import Reshape, Tokens
from ..base import Prepared, processor_prepare
from .base import ImageLayout, ImageTokens, blocks_of

__all__ = ["PaliGemmaLayout", "Gemma3Layout"]


class PaliGemmaLayout(ImageLayout):
    """``PaliGemmaForConditionalGeneration``: the image's tokens (``config.image_token_id``) are
    a square row-major grid over the processor's resized input; the vision tower's blocks give
    the same grid (``image_size / patch_size``). Default layer: the tower's last block."""

    answer_token_types = {"token_type_ids": 1}

    def __init__(self, model: nn.Module):
        config = model.config
        token = getattr(config, "image_token_id", None)
        token = getattr(config, "image_token_index", None) if token is None else token
        vision = config.vision_config
        super().__init__(int(token), int(vision.patch_size), None, type(model).__name__)
        self.depth = int(vision.num_hidden_layers)

    def prepare(self, processor: Any, photo: Any, prompt: str) -> Prepared:
        prepared = processor_prepare(processor, photo, text=prompt)
        prepared.inputs.pop("labels", None)  # PaliGemmaProcessor's training labels: no loss is wanted
        pixels = prepared.inputs["pixel_values"]
        if pixels.shape[0] != 1:
            raise InputError(
                f"the processor returned {pixels.shape[0]} images for one photo ({self.family} explains one image without crops); "
                "pass do_pan_and_scan=False to the processor, one image and one image placeholder in the prompt"
            )
        return prepared

    def image_tokens(self, inputs: dict[str, Any], frame: Any = None) -> ImageTokens:
        ids, pixels = inputs.get("input_ids"), inputs.get("pixel_values")
        if not isinstance(ids, torch.Tensor) or not isinstance(pixels, torch.Tensor):
            raise InputError(f"{self.family} needs input_ids and pixel_values from its processor; pass the model's own processor")
        positions = (ids[0] == self.image_token_id).nonzero().flatten().tolist()
        side = math.isqrt(len(positions))
        H, W = (int(s) for s in pixels.shape[-2:])
        if ids.shape[0] != 1 or pixels.shape[0] != 1 or not positions or side * side != len(positions) or H != W:
            raise InputError(
                f"{self.family} explains one image and one prompt: got {pixels.shape[0]} images, {ids.shape[0]} prompts and "
                f"{len(positions)} image tokens (id {self.image_token_id}), expected a square number over a square input; "
                "pass one image, one image placeholder and the model's own processor (image_seq_length as in its config)"
            )
        return ImageTokens(positions, (side, side), 0, (H, W))

    def reshape(self, tokens: ImageTokens) -> Reshape:
        """Square grids, the side read from the hooked tensor (tower patches or pooled tokens)."""
        return Tokens(prefix=0)

    def default_layers(self, model: nn.Module) -> list[str]:
        if self.layers:
            return list(self.layers)
        blocks = blocks_of(model, self.depth)
        if blocks is None:
            raise InputError(f"found no vision blocks in {self.family}; pass layers= (e.g. 'model.vision_tower.vision_model.encoder.layers.<i>')")
        return [f"{blocks}.{self.depth - 1}"]


class Gemma3Layout(PaliGemmaLayout):
    """``Gemma3ForConditionalGeneration``: :class:`PaliGemmaLayout` with the projector's pooling
    (``mm_tokens_per_image`` tokens in the sequence, a ``(image_size / patch_size)``-sided grid
    at the tower's blocks); the answer tokens are plain text (``token_type_ids`` 0)."""

    answer_token_types: dict[str, int] = {}
