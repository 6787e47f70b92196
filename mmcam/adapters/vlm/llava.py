"""LLaVA's image-token layout: one square patch grid, the tower's CLS dropped or kept."""

from __future__ import annotations

from torch import nn

from ...errors import InputError
from .base import ImageLayout, blocks_of

__all__ = ["LlavaLayout"]


class LlavaLayout(ImageLayout):
    """``LlavaForConditionalGeneration``: a square patch grid from the vision config's patch
    size, CLS dropped under ``vision_feature_select_strategy="default"``; the default layer is
    the vision-tower block whose output is ``hidden_states[vision_feature_layer]`` (or the
    projector for a list of feature layers, or the embeddings' output)."""

    def __init__(self, model: nn.Module):
        config = model.config
        token = getattr(config, "image_token_id", None)
        token = getattr(config, "image_token_index", None) if token is None else token
        super().__init__(int(token), int(config.vision_config.patch_size), None, type(model).__name__)
        self.feature_layer = config.vision_feature_layer
        self.strategy = config.vision_feature_select_strategy
        self.depth = int(config.vision_config.num_hidden_layers)

    def default_layers(self, model: nn.Module) -> list[str]:
        if self.layers:
            return list(self.layers)
        names = dict(model.named_modules())
        projector = next((n for n in names if n.endswith("multi_modal_projector")), None)
        blocks = blocks_of(model, self.depth)
        if isinstance(self.feature_layer, int) and blocks is not None:
            index = self.feature_layer if self.feature_layer >= 0 else self.depth + 1 + self.feature_layer
            if index >= 1:  # hidden_states[0] is the embeddings' output, [i] block i - 1's
                return [f"{blocks}.{index - 1}"]
        if projector is None:
            raise InputError(f"found no vision-tower blocks or projector in {self.family}; pass layers=")
        return [projector]
