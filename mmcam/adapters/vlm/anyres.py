"""LLaVA-NeXT and LLaVA-OneVision: any-resolution tiles, a base image, row-end newline tokens and
unpadding.

The image processor picks the best of ``image_grid_pinpoints`` for the photo
(``select_best_resolution``), resizes the photo into it (aspect kept) and pads it centred, cuts
``rows x cols`` tiles of ``vision_config.image_size`` and puts the whole photo resized to one
tile (the *base* image) first. The model packs the tower's tokens (``pack_image_features``):
the base image's grid, then the tiles stitched into one grid with the padding rows or columns
cut (``unpad_image``) and an ``image_newline`` token after each row (OneVision also shrinks a
grid of more than ``anyres_max_N`` tiles' worth by interpolation, which no token layout can
follow: refused). :class:`AnyResLayout` runs the model's own packing on token *indices*, so the
language model's order of every image token (which tile, which patch, or a newline) is the
model's, not a re-implementation.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import torch
from torch import nn

from ...errors import InputError
from ...reshape import Reshape
from ..base import Prepared
from ..frame import Frame
from .base import ImageTokens, prepare_with
from .llava import LlavaLayout
from .tiles import Tiles

__all__ = ["AnyResLayout"]


class AnyResLayout(LlavaLayout):
    """``LlavaNextForConditionalGeneration`` and ``LlavaOnevisionForConditionalGeneration``: the
    stitched tile grid over the padded best resolution (the frame: the processor's resize +
    centred padding), the base image over the photo's part of it (:class:`Tiles` ``box``), the
    newline tokens over no region. Default layer: as LLaVA's (``vision_feature_layer``)."""

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self.model = model
        self.tile = int(model.config.vision_config.image_size)
        self.side = self.tile // self.patch_size

    def prepare(self, processor: Any, photo: Any, prompt: str) -> Prepared:
        from transformers.image_processing_utils import get_patch_output_size, select_best_resolution
        from transformers.image_utils import ChannelDimension

        inputs = prepare_with(processor, photo, prompt, "LlavaNextProcessor / LlavaOnevisionProcessor")
        pixels, sizes = inputs.get("pixel_values"), inputs.get("image_sizes")
        if not isinstance(pixels, torch.Tensor) or pixels.ndim != 5 or pixels.shape[0] != 1 or not isinstance(sizes, torch.Tensor):
            shape = None if pixels is None else tuple(pixels.shape)
            raise InputError(
                f"{self.family} explains one photo at a time: the processor returned pixel_values {shape}, expected (1, tiles, 3, H, W) and image_sizes"
            )
        ph, pw = photo.size[1], photo.size[0]
        best = select_best_resolution((ph, pw), self.model.config.image_grid_pinpoints)
        new = get_patch_output_size(np.empty((1, ph, pw), np.uint8), best, ChannelDimension.FIRST)
        top, left = (best[0] - new[0]) // 2, (best[1] - new[1]) // 2
        pipeline = f"{type(processor).__name__}: resize to {new[0]}x{new[1]}, pad to {best[0]}x{best[1]}"
        frame = Frame((ph, pw), (int(best[0]), int(best[1])), (new[0] / ph, new[1] / pw), (float(top), float(left)), pipeline)
        return Prepared(inputs, np.asarray(photo), frame)

    def packing(self, inputs: dict[str, Any]) -> tuple[int, int, torch.Tensor]:
        """``(rows, cols, order)``: the tile grid and, for each image token in sequence order,
        the tower token it is (``tile * s * s + patch``, tile 0 the base image) or -1 (newline),
        from the model's own ``pack_image_features`` run on indices."""
        from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape

        pixels, sizes = inputs["pixel_values"], inputs["image_sizes"]
        rows, cols = get_anyres_image_grid_shape(sizes[0].tolist(), self.model.config.image_grid_pinpoints, self.tile)
        count = rows * cols + 1
        if pixels.shape[1] < count:
            raise InputError(
                f"the processor returned {pixels.shape[1]} tiles but the model packs {rows}x{cols} + the base image; pass the model's own processor"
            )
        index = torch.arange(count * self.side**2, dtype=torch.float32).view(count, self.side**2, 1)
        pack = getattr(getattr(self.model, "model", self.model), "pack_image_features", None) or self.model.pack_image_features
        kwargs: dict[str, Any] = {"image_newline": torch.tensor([-1.0])}
        if "vision_feature_select_strategy" in inspect.signature(pack).parameters:
            kwargs["vision_feature_select_strategy"] = self.strategy
        try:
            with torch.no_grad():
                packed = pack([index], sizes, **kwargs)[0][0][:, 0]
        except (RuntimeError, ValueError) as error:
            raise InputError(
                f"{self.family}'s pack_image_features does not take {self.side}x{self.side} tokens a tile ({error}); a tower with a CLS token "
                "needs vision_feature_select_strategy='default'; pass layout= by hand otherwise"
            ) from None
        if not torch.equal(packed, packed.round()):
            raise InputError(
                f"{self.family} interpolates this photo's tile grid (vision_aspect_ratio {getattr(self.model.config, 'vision_aspect_ratio', '?')}): "
                "its image tokens mix patches, no layout can place them; pass a smaller photo or fewer image_grid_pinpoints"
            )
        return rows, cols, packed.long()

    def image_tokens(self, inputs: dict[str, Any], frame: Any = None) -> ImageTokens:
        ids = inputs.get("input_ids")
        if not isinstance(ids, torch.Tensor) or ids.shape[0] != 1 or "image_sizes" not in inputs:
            raise InputError(f"{self.family} needs input_ids, pixel_values and image_sizes of one prompt from its processor")
        rows, cols, order = self.packing(inputs)
        positions = (ids[0] == self.image_token_id).nonzero().flatten().tolist()
        if len(positions) != len(order):
            raise InputError(
                f"the sequence holds {len(positions)} image tokens (id {self.image_token_id}) but the model packs {len(order)} for this photo; "
                "pass one image, one image placeholder and the model's own processor (patch_size, vision_feature_select_strategy as its config)"
            )
        s, width = self.side, cols * self.side
        kept = [int(t) for t in order if t >= s * s]
        cell = [((t // (s * s) - 1) // cols * s + t % (s * s) // s) * width + (t // (s * s) - 1) % cols * s + t % s for t in kept]
        ys, xs = [c // width for c in cell], [c % width for c in cell]
        top, bottom, left, right = min(ys), max(ys) + 1, min(xs), max(xs) + 1
        base = {}
        for y in range(top, bottom):
            for x in range(left, right):
                i, j = (y - top) * s // (bottom - top), (x - left) * s // (right - left)
                base.setdefault(i * s + j, []).append(y * width + x)
        lookup = dict(zip(kept, cell))
        cells = tuple(tuple(base.get(int(t), ())) if 0 <= t < s * s else ((lookup[int(t)],) if t >= 0 else ()) for t in order)
        return ImageTokens(positions, (rows * s, width), 0, (rows * self.tile, cols * self.tile), cells)

    def reshape(self, tokens: ImageTokens) -> Reshape:
        rows, cols = tokens.input_size[0] // self.tile, tokens.input_size[1] // self.tile
        box = self._thumbnail_box(tokens)
        return Tiles(rows, cols, tuple(range(1, rows * cols + 1)), 0, rows * cols + 1, None, box)

    @staticmethod
    def _thumbnail_box(tokens: ImageTokens) -> tuple[float, float, float, float]:
        """The unpadded part of the grid (every token's cells lie in it) as fractions of the grid."""
        (h, w), covered = tokens.grid, [c for cells in tokens.cells or () for c in cells]
        ys, xs = [c // w for c in covered] or [0, h - 1], [c % w for c in covered] or [0, w - 1]
        return (min(ys) / h, min(xs) / w, (max(ys) + 1) / h, (max(xs) + 1) / w)
