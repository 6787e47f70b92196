"""PaliGemma and Gemma 3: a fixed square input (the image processor's ``size``), a SigLIP tower
without CLS, one square grid of image tokens.

PaliGemma writes the tower's ``(image_size / patch_size)^2`` projected patches into the
sequence as they are; its answer tokens are the *suffix* of a prefix-LM (``token_type_ids``
1: causal), the prompt and image the bidirectional prefix (0). Gemma 3's projector average-
pools the patch grid to ``mm_tokens_per_image`` tokens (a ``sqrt(mm_tokens_per_image)``-sided
grid), so the tower's blocks and the projector give grids of different sides, both square and
both read from the hooked tensor. Gemma 3's pan-and-scan crops are stitched back over the
photo (:class:`Gemma3Layout`); PaliGemma has none.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ...errors import InputError
from ...reshape import Reshape, Tokens
from ..base import Prepared, processor_prepare
from ..frame import Frame
from .base import ImageLayout, ImageTokens, blocks_of
from .tiles import Tiles, tile_cells

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
        pooled = getattr(config, "mm_tokens_per_image", None)  # Gemma 3 pools the patch grid
        self.per_image = int(pooled) if pooled else (int(vision.image_size) // self.patch_size) ** 2

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
        ids, pixels, positions = self._ids_pixels(inputs)
        side = math.isqrt(len(positions))
        H, W = (int(s) for s in pixels.shape[-2:])
        if ids.shape[0] != 1 or pixels.shape[0] != 1 or len(positions) != self.per_image or side * side != len(positions) or H != W:
            raise InputError(
                f"{self.family} explains one image and one prompt: got {pixels.shape[0]} images, {ids.shape[0]} prompts and "
                f"{len(positions)} image tokens (id {self.image_token_id}), expected the model's {self.per_image} over a square input; "
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
    at the tower's blocks); the answer tokens are plain text (``token_type_ids`` 0).

    Pan-and-scan (a processor called with ``do_pan_and_scan=True``): the original image first,
    then ``n`` crops side by side along the photo's longer side (``ceil(side / n)`` pixels each,
    the last one what is left), each resized to one tile. The crops are stitched into a ``1 x n``
    (landscape) or ``n x 1`` (portrait) grid over the photo, the original over all of it
    (:class:`~mmcam.adapters.vlm.tiles.Tiles`); the frame stretches the photo to ``n`` tiles, which
    misplaces the last, narrower crop by less than ``n`` photo pixels."""

    answer_token_types: dict[str, int] = {}

    def prepare(self, processor: Any, photo: Any, prompt: str) -> Prepared:
        prepared = processor_prepare(processor, photo, text=prompt)
        crops = int(prepared.inputs["pixel_values"].shape[0]) - 1
        if crops <= 0:
            return prepared
        (ph, pw), tile = (photo.size[1], photo.size[0]), int(prepared.inputs["pixel_values"].shape[-1])
        size = (tile, crops * tile) if pw >= ph else (crops * tile, tile)
        name = f"{type(processor).__name__}: pan-and-scan, {crops} crops, stretched to {size[0]}x{size[1]}"
        return Prepared(prepared.inputs, prepared.photo, Frame.resize((ph, pw), size, name))

    def image_tokens(self, inputs: dict[str, Any], frame: Any = None) -> ImageTokens:
        pixels = inputs.get("pixel_values")
        count = int(pixels.shape[0]) if isinstance(pixels, torch.Tensor) else 1
        if count == 1:
            return super().image_tokens(inputs, frame)
        ids, tile = inputs.get("input_ids"), int(pixels.shape[-1])
        if frame is None or not isinstance(ids, torch.Tensor):
            raise InputError(f"{self.family} with pan-and-scan crops needs input_ids and the frame of its layout's prepare(); pass frame=")
        rows, cols = frame.input[0] // tile, frame.input[1] // tile
        positions = (ids[0] == self.image_token_id).nonzero().flatten().tolist()
        side = math.isqrt(self.per_image)
        if ids.shape[0] != 1 or rows * cols != count - 1 or len(positions) != count * self.per_image:
            raise InputError(
                f"the sequence holds {len(positions)} image tokens (id {self.image_token_id}) for the original + {count - 1} crops; "
                "pass one image, one image placeholder and the model's own processor (image_seq_length as mm_tokens_per_image)"
            )
        order = ["thumbnail"] + [f"tile {r} {c}" for r in range(rows) for c in range(cols)]
        return ImageTokens(positions, (rows * side, cols * side), 0, (rows * tile, cols * tile), tile_cells(rows, cols, side, order))

    def reshape(self, tokens: ImageTokens) -> Reshape:
        if tokens.cells is None:
            return super().reshape(tokens)
        tile = tokens.input_size[0] if tokens.input_size[0] < tokens.input_size[1] else tokens.input_size[1]
        rows, cols = tokens.input_size[0] // tile, tokens.input_size[1] // tile
        return Tiles(rows, cols, tuple(range(1, rows * cols + 1)), 0, rows * cols + 1, None)
