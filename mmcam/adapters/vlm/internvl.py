"""InternVL: dynamic tiles + a thumbnail (GotOcr2's ``crop_to_patches``), a CLS token, pixel
shuffle. The tiles are stitched back with :class:`mmcam.adapters.vlm.tiles.Tiles`."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ...errors import InputError
from ...reshape import Reshape
from ..base import Prepared
from ..frame import Frame
from .base import ImageLayout, ImageTokens, prepare_with
from .llava import LlavaLayout
from .tiles import Tiles, tile_cells

__all__ = ["InternVLLayout"]


class InternVLLayout(LlavaLayout):
    """``InternVLForConditionalGeneration``: the image processor (GotOcr2, ``crop_to_patches``)
    stretches the photo to ``cols x rows`` tiles of ``size`` (its own ``get_optimal_tiled_canvas``
    between ``min_patches`` and ``max_patches``), cuts them row-major and appends the thumbnail
    (the whole photo at one tile) when there is more than one tile; the tower adds a CLS token
    (dropped under ``"default"``), the pixel shuffle (``downsample_ratio``) folds 2 x 2 patches.
    The tile split is read back from the frame (:meth:`image_tokens` ``frame``). Default layer:
    the tower block ``vision_feature_layer`` reads."""

    def __init__(self, model: nn.Module):
        config = model.config
        vision = config.vision_config
        size = vision.image_size if isinstance(vision.image_size, (list, tuple)) else (vision.image_size,) * 2
        patch = vision.patch_size if isinstance(vision.patch_size, (list, tuple)) else (vision.patch_size,) * 2
        if size[0] != size[1] or patch[0] != patch[1]:
            raise InputError(f"{type(model).__name__} with non-square tiles {size} / patches {patch} is not laid out; pass layout= by hand")
        ImageLayout.__init__(self, int(config.image_token_id), int(patch[0]), None, type(model).__name__)
        self.tile, self.side = int(size[0]), int(round(size[0] // patch[0] * config.downsample_ratio))
        self.feature_layer, self.strategy, self.depth = config.vision_feature_layer, config.vision_feature_select_strategy, int(vision.num_hidden_layers)

    def prepare(self, processor: Any, photo: Any, prompt: str) -> Prepared:
        from transformers.models.got_ocr2.image_processing_got_ocr2 import get_optimal_tiled_canvas

        inputs = prepare_with(processor, photo, prompt, "InternVLProcessor")
        pixels = inputs.get("pixel_values")
        ph, pw = photo.size[1], photo.size[0]
        images = getattr(processor, "image_processor", processor)
        size = images.size if isinstance(images.size, dict) else {"height": images.size.height, "width": images.size.width}
        cols, rows = (1, 1)
        if getattr(images, "crop_to_patches", False) and images.max_patches > 1:
            cols, rows = get_optimal_tiled_canvas((ph, pw), (size["height"], size["width"]), images.min_patches, images.max_patches)
        count = rows * cols + (rows * cols > 1)
        if not isinstance(pixels, torch.Tensor) or pixels.ndim != 4 or pixels.shape[0] != count or pixels.shape[-1] != self.tile:
            shape = None if pixels is None else tuple(pixels.shape)
            raise InputError(
                f"the processor returned pixel_values {shape} for a {ph}x{pw} photo, but its image processor makes {rows}x{cols} tiles"
                f"{' + the thumbnail' if count > 1 else ''} of {self.tile} px; pass one image, one image placeholder and the model's own processor"
            )
        size = (rows * self.tile, cols * self.tile)
        frame = Frame.resize(
            (ph, pw), size, f"{type(processor).__name__}: resize to {size[0]}x{size[1]}, {rows}x{cols} tiles" + (" + thumbnail" if count > 1 else "")
        )
        return Prepared(inputs, np.asarray(photo), frame)

    def image_tokens(self, inputs: dict[str, Any], frame: Frame | None = None) -> ImageTokens:
        ids, pixels, positions = self._ids_pixels(inputs)
        count = int(pixels.shape[0])
        if count == 1:
            rows = cols = 0
        elif frame is None or frame.input[0] % self.tile or frame.input[1] % self.tile:
            raise InputError(f"{self.family}'s tile split is read from the frame of its layout's prepare(); pass frame=")
        else:
            rows, cols = frame.input[0] // self.tile, frame.input[1] // self.tile
        expected = count * self.side**2
        if ids.shape[0] != 1 or len(positions) != expected or (rows and rows * cols + 1 != count):
            raise InputError(
                f"the sequence holds {len(positions)} image tokens (id {self.image_token_id}) for {count} tiles, expected {expected} "
                f"({self.side}x{self.side} a tile); pass one image, one image placeholder and the model's own processor (image_seq_length as its config)"
            )
        order = [f"tile {r} {c}" for r in range(rows) for c in range(cols)] + ["thumbnail"]
        grid = (max(rows, 1) * self.side, max(cols, 1) * self.side)
        return ImageTokens(positions, grid, 0, (max(rows, 1) * self.tile, max(cols, 1) * self.tile), tile_cells(rows, cols, self.side, order))

    def reshape(self, tokens: ImageTokens) -> Reshape:
        rows, cols = tokens.input_size[0] // self.tile, tokens.input_size[1] // self.tile
        if len(tokens.positions) == self.side**2:
            return Tiles(0, 0, (), 0, 1, None)
        return Tiles(rows, cols, tuple(range(rows * cols)), rows * cols, rows * cols + 1, None)
