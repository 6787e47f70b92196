"""Tiled image-token layouts: the processor cuts the resized photo into square tiles (and adds a
thumbnail of the whole photo), the vision tower encodes each tile as one image of a batch, and
the language model reads the tiles' tokens one tile after another. :class:`Tiles` stitches a
hooked layer's per-tile tokens back into one grid over the resized photo; the thumbnail's
tokens are upsampled over the same grid as further channels, so a channel-weighted CAM sums
the tiles' map and the thumbnail's map, each with its own channel weights.

Idefics3 / SmolVLM (:class:`Idefics3Layout`): ``image_splitting`` resizes the photo so each side
is a multiple of the tile size (``max_image_size``), cuts ``rows x cols`` tiles row-major and
appends the whole image resized to one tile; the connector's *pixel shuffle* folds each
``scale_factor x scale_factor`` block of patches into one token (row-major on the coarser grid).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ...errors import InputError
from ...reshape import Reshape
from ..base import Prepared
from ..frame import Frame
from .base import ImageLayout, ImageTokens, blocks_of, prepare_with

__all__ = ["Tiles", "tile_cells", "Idefics3Layout"]


@dataclass
class Tiles(Reshape):
    """Per-tile tokens ``(n * count, N, D)`` (``count`` tower images per photo, stacked ``n``
    times for per-target gradients) to ``(n, G * D, rows * s, cols * s)``: tower image
    ``local[r * cols + c]`` at tile (r, c) of the stitched grid, each tile's ``s * s`` tokens
    row-major after ``prefix`` tokens (``None``: read from the tensor, ``N - isqrt(N)^2``, e.g. a
    CLS token; ``s`` likewise: patches or merged tokens), then, when ``thumbnail`` is set, that
    tower image's ``s x s`` grid resampled (nearest) over ``box`` (top, left, bottom, right, as
    fractions of the stitched grid; default all of it) as ``D`` more channels (``G`` = 2), zero
    outside the box. ``rows = cols = 0``: the thumbnail alone."""

    rows: int
    cols: int
    local: tuple[int, ...]
    thumbnail: int | None
    count: int
    prefix: int | None = 0
    box: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
    channel_dim = -1

    def side(self, t: torch.Tensor) -> tuple[int, int]:
        """``(prefix, s)`` for the hooked tensor."""
        count = t.shape[-2] if t.ndim == 3 else 0
        side = math.isqrt(max(count, 0))
        prefix = count - side * side if self.prefix is None else self.prefix
        side = math.isqrt(max(count - prefix, 0))
        if t.ndim != 3 or side < 1 or side * side != count - prefix or t.shape[0] % self.count:
            raise InputError(
                f"tiled vision tokens must be ({self.count} tiles x k, prefix + s*s tokens, D), got {tuple(t.shape)}; "
                "hook a vision-tower block or the projector / connector"
            )
        return prefix, side

    def __call__(self, t: torch.Tensor, input_size: Any) -> torch.Tensor:
        (prefix, s), d = self.side(t), t.shape[-1]
        x = t[:, prefix:].reshape(-1, self.count, s, s, d)
        parts = []
        if self.rows:
            tiles = x[:, list(self.local)].reshape(-1, self.rows, self.cols, s, s, d)
            parts.append(tiles.permute(0, 5, 1, 3, 2, 4).reshape(-1, d, self.rows * s, self.cols * s))
        if self.thumbnail is not None:
            h, w = max(self.rows, 1) * s, max(self.cols, 1) * s
            top, left, bottom, right = round(self.box[0] * h), round(self.box[1] * w), round(self.box[2] * h), round(self.box[3] * w)
            whole = x[:, self.thumbnail].permute(0, 3, 1, 2)
            canvas = whole.new_zeros(whole.shape[0], d, h, w)
            canvas[:, :, top:bottom, left:right] = torch.nn.functional.interpolate(whole, size=(bottom - top, right - left), mode="nearest")
            parts.append(canvas)
        return torch.cat(parts, 1)


def tile_cells(rows: int, cols: int, side: int, order: list[str]) -> tuple[tuple[int, ...], ...]:
    """The grid cells of each language-model token of a tiled image, in sequence order:
    ``order`` lists the sequence's pieces, ``"tile r c"`` (``side * side`` tokens, row-major),
    ``"thumbnail"`` (``side * side`` tokens, each over a ``rows x cols`` block of cells) or
    ``"newline"`` (one token over no cell)."""
    width, (rf, cf) = max(cols, 1) * side, (max(rows, 1), max(cols, 1))
    out: list[tuple[int, ...]] = []
    for piece in order:
        kind, *where = piece.split()
        if kind == "newline":
            out.append(())
            continue
        for i in range(side):
            for j in range(side):
                if kind == "tile":
                    r, c = int(where[0]), int(where[1])
                    out.append(((r * side + i) * width + c * side + j,))
                else:
                    out.append(tuple((i * rf + a) * width + j * cf + b for a in range(rf) for b in range(cf)))
    return tuple(out)


class Idefics3Layout(ImageLayout):
    """``Idefics3ForConditionalGeneration`` and ``SmolVLMForConditionalGeneration``: ``rows x
    cols`` tiles of ``vision_config.image_size`` pixels and the thumbnail (the image processor's
    own ``get_number_of_image_patches`` for the photo's size, checked against the tiles it
    returned), ``(image_size / patch_size / scale_factor)^2`` tokens per tile, all stitched over
    the resized photo (:class:`Tiles`). Default layer: the vision encoder's last block."""

    def __init__(self, model: nn.Module):
        config = model.config
        vision = config.vision_config
        super().__init__(int(config.image_token_id), int(vision.patch_size), None, type(model).__name__)
        self.tile, self.scale, self.depth = int(vision.image_size), int(config.scale_factor), int(vision.num_hidden_layers)
        self.side = self.tile // self.patch_size // self.scale
        self.markers: dict[int, tuple[int, int]] = {}  # <row_r_col_c> token id -> (r, c), from the processor's tokenizer

    def prepare(self, processor: Any, photo: Any, prompt: str) -> Prepared:
        inputs = prepare_with(processor, photo, prompt, "Idefics3Processor / SmolVLMProcessor")
        pixels = inputs.get("pixel_values")
        if not isinstance(pixels, torch.Tensor) or pixels.ndim != 5 or pixels.shape[0] != 1:
            shape = None if pixels is None else tuple(pixels.shape)
            raise InputError(f"{self.family} explains one photo at a time: the processor returned pixel_values {shape}, expected (1, tiles, 3, H, W)")
        ph, pw = photo.size[1], photo.size[0]
        images = getattr(processor, "image_processor", processor)
        _, rows, cols = images.get_number_of_image_patches(ph, pw)
        if not getattr(images, "do_image_splitting", True):
            rows = cols = 0
        count = rows * cols + 1
        if pixels.shape[1] != count or pixels.shape[-1] != self.tile:
            raise InputError(
                f"the processor returned {pixels.shape[1]} tiles of {pixels.shape[-1]} px for a {ph}x{pw} photo, but its image processor "
                f"computes {rows}x{cols} tiles + the thumbnail of {self.tile} px (vision_config.image_size); put one image placeholder "
                "in the prompt, pass one image and the model's own processor (max_image_size = the vision tower's image_size)"
            )
        self.markers.update(_markers(processor, rows, cols))
        size = (max(rows, 1) * self.tile, max(cols, 1) * self.tile)
        frame = Frame.resize((ph, pw), size, f"{type(processor).__name__}: resize to {size[0]}x{size[1]}, {rows}x{cols} tiles + thumbnail")
        return Prepared(inputs, np.asarray(photo), frame)

    def image_tokens(self, inputs: dict[str, Any], frame: Any = None) -> ImageTokens:
        ids = inputs.get("input_ids")
        if not isinstance(ids, torch.Tensor):
            raise InputError(f"{self.family} needs input_ids from its processor; pass the model's own processor")
        found = [self.markers[t] for t in set(ids[0].tolist()) if t in self.markers]
        rows, cols = (max(r for r, _ in found), max(c for _, c in found)) if found else (0, 0)
        positions = (ids[0] == self.image_token_id).nonzero().flatten().tolist()
        expected = (rows * cols + 1) * self.side**2
        if ids.shape[0] != 1 or len(positions) != expected:
            raise InputError(
                f"the sequence holds {len(positions)} image tokens (id {self.image_token_id}) but {rows}x{cols} tiles + the thumbnail at "
                f"{self.side}x{self.side} tokens each make {expected}; pass one image and a prompt with one image placeholder, "
                "through the model's own processor (image_seq_len as the model's config gives)"
            )
        order = [f"tile {r} {c}" for r in range(rows) for c in range(cols)] + ["thumbnail"]
        grid = (max(rows, 1) * self.side, max(cols, 1) * self.side)
        return ImageTokens(positions, grid, 0, (max(rows, 1) * self.tile, max(cols, 1) * self.tile), tile_cells(rows, cols, self.side, order))

    def reshape(self, tokens: ImageTokens) -> Reshape:
        rows, cols = tokens.input_size[0] // self.tile, tokens.input_size[1] // self.tile
        if len(tokens.positions) == self.side**2:
            rows = cols = 0
        return Tiles(rows, cols, tuple(range(rows * cols)), rows * cols, rows * cols + 1)

    def default_layers(self, model: nn.Module) -> list[str]:
        if self.layers:
            return list(self.layers)
        blocks = blocks_of(model, self.depth)
        if blocks is None:
            raise InputError(f"found no vision blocks in {self.family}; pass layers= (e.g. 'model.vision_model.encoder.layers.<i>')")
        return [f"{blocks}.{self.depth - 1}"]


def _markers(processor: Any, rows: int, cols: int) -> dict[int, tuple[int, int]]:
    """The token id of each tile's ``<row_r_col_c>`` marker (1-based in the text, 0-based here +1:
    the tile count), read from the processor's tokenizer."""
    tokenizer = getattr(processor, "tokenizer", processor)
    unknown = getattr(tokenizer, "unk_token_id", None)
    out = {}
    for r in range(rows):
        for c in range(cols):
            token = tokenizer.convert_tokens_to_ids(f"<row_{r + 1}_col_{c + 1}>")
            if isinstance(token, int) and token != unknown:
                out[token] = (r + 1, c + 1)
    if rows and len(out) != rows * cols:
        raise InputError(f"the processor's tokenizer has no <row_r_col_c> tile markers for {rows}x{cols} tiles; pass the model's own processor")
    return out
