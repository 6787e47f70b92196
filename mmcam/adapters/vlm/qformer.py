"""BLIP-2 and InstructBLIP: a Q-Former between the vision tower and the language model.

The language model reads ``num_query_tokens`` learned queries, each of which cross-attends to
*every* patch of the tower: a query token covers no region of the image. The map is therefore
taken where regions exist, at the vision tower's patch tokens, with the gradient of each answer
word flowing back through the language model, the projection and the Q-Former's
cross-attention (hooking a tower block is all it takes: the engine differentiates the whole
path). The forward-only logit lens, which reads the language model at the image tokens, has no
region to put them in and is refused.

The processor puts the query tokens before the text itself; a prompt may hold the image
placeholder (``<image> question``, as for the other families): it is taken out before the
processor sees the text. The language model is decoder-only (OPT-based BLIP-2, Vicuna-based
InstructBLIP) or an encoder-decoder (Flan-T5): then the query tokens sit in the encoder's
sequence and the answer is teacher-forced through the decoder (:mod:`.seq2seq`).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ...errors import InputError
from ...reshape import Reshape, Tokens
from ..base import Prepared, processor_prepare
from .base import ImageLayout, ImageTokens, blocks_of
from .seq2seq import strip_placeholder

__all__ = ["QFormerLayout"]


class QFormerLayout(ImageLayout):
    """``Blip2ForConditionalGeneration`` / ``InstructBlipForConditionalGeneration``: the query
    tokens' positions (``config.image_token_id``, ``num_query_tokens`` of them) in the sequence,
    the map on the tower's patch grid (``image_size / patch_size``, CLS first). Default layer:
    the tower's last block."""

    def __init__(self, model: nn.Module):
        config = model.config
        token = getattr(config, "image_token_id", None)
        token = getattr(config, "image_token_index", None) if token is None else token
        if token is None:
            raise InputError(f"{type(model).__name__}'s config names no image_token_index; pass a checkpoint whose processor adds query tokens")
        vision = config.vision_config
        super().__init__(int(token), int(vision.patch_size), None, type(model).__name__)
        self.queries, self.depth = int(config.num_query_tokens), int(vision.num_hidden_layers)

    def prepare(self, processor: Any, photo: Any, prompt: str) -> Prepared:
        return processor_prepare(processor, photo, text=strip_placeholder(processor, prompt))

    def image_tokens(self, inputs: dict[str, Any], frame: Any = None) -> ImageTokens:
        ids, pixels, positions = self._ids_pixels(inputs)
        if ids.shape[0] != 1 or pixels.shape[0] != 1 or len(positions) != self.queries:
            raise InputError(
                f"the sequence holds {len(positions)} query tokens (id {self.image_token_id}) but the model has {self.queries}; "
                "pass one image and the model's own processor (num_query_tokens as in the model's config)"
            )
        H, W = (int(s) for s in pixels.shape[-2:])
        grid = (H // self.patch_size, W // self.patch_size)
        return ImageTokens(positions, grid, 0, (H, W), tuple(() for _ in positions))

    def reshape(self, tokens: ImageTokens) -> Reshape:
        return Tokens(grid=tokens.grid)

    def default_layers(self, model: nn.Module) -> list[str]:
        if self.layers:
            return list(self.layers)
        blocks = blocks_of(model, self.depth)
        if blocks is None:
            raise InputError(f"found no vision blocks in {self.family}; pass layers= (e.g. 'vision_model.encoder.layers.<i>')")
        return [f"{blocks}.{self.depth - 1}"]
