"""Qwen2-VL, Qwen2.5-VL and Qwen3-VL: dynamic resolution from ``image_grid_thw``, one language-model
token per ``merge x merge`` window of patches.

The vision tower takes the processor's flattened patches (window by window: each ``merge x
merge`` window row-major, windows row-major) and its merger emits one token per window, which
the language model reads row-major over ``(h / merge, w / merge)``. Qwen2.5-VL's tower also
runs *window attention*: before its first block it permutes the merge windows into attention
windows (``get_vision_window_index``: ``window_size / patch_size / merge`` merged cells a side)
and undoes it only after the merger (``merged[argsort(window_index)]``), so its blocks and its
merger hold the cells in window order; :class:`MergedPatches` ``order`` puts them back.
Qwen3-VL has no window attention, and adds *deepstack* features: some middle blocks' tokens,
merged by their own mergers, are added to the first language-model layers' hidden states at
the image tokens. The default layer (the last block, which the main merger reads) sees only
the main path; pass ``layers=[the deepstack blocks..., the last block]`` to fuse them.
"""

from __future__ import annotations

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

__all__ = ["MergedPatches", "Qwen2VLLayout", "Qwen25VLLayout", "Qwen3VLLayout"]


@dataclass
class MergedPatches(Reshape):
    """Qwen-VL vision tokens, 2-D ``(N, D)`` (no batch axis) over a ``grid`` (h, w) of patches:
    the blocks hold them merge-window by merge-window (each ``merge x merge`` window row-major),
    the merger one token per window. ``order[j]``: the merged cell (row-major over ``(h / merge,
    w / merge)``) of the hooked tensor's window ``j`` (``None``: row-major, Qwen2-VL and Qwen3-VL;
    Qwen2.5-VL's window-attention order otherwise). ``merged`` (blocks or merger) is read from
    the hooked tensor itself (:meth:`for_tensor`); stacked copies ``(n * N, D)`` (the engine's
    per-target gradients) fold to ``(n, D, ., .)``."""

    grid: tuple[int, int]
    merge: int
    merged: bool | None = None
    order: tuple[int, ...] | None = None
    channel_dim = -1

    def for_tensor(self, t: torch.Tensor, input_size: Any) -> "MergedPatches":
        if self.merged is not None:
            return self
        (h, w), m = self.grid, self.merge
        count = t.shape[-2] if t.ndim >= 2 else -1
        if count not in (h * w, (h // m) * (w // m)):
            raise InputError(
                f"Qwen-VL vision tokens must be ({h * w} or {(h // m) * (w // m)}, D) for a {h}x{w} patch grid, got {tuple(t.shape)}; hook a vision block or the merger"
            )
        return MergedPatches(self.grid, m, count != h * w, self.order)

    def __call__(self, t: torch.Tensor, input_size: Any) -> torch.Tensor:
        if self.merged is None:
            return self.for_tensor(t, input_size)(t, input_size)
        (h, w), m = self.grid, self.merge
        cells, d = (h // m) * (w // m), t.shape[-1]
        units = t.reshape(-1, cells, 1 if self.merged else m * m, d)  # (n, window, patch in window, D)
        if self.order is not None:
            units = units[:, torch.argsort(torch.tensor(self.order, device=t.device))]
        if self.merged:
            return units[:, :, 0].transpose(1, 2).reshape(-1, d, h // m, w // m)
        windows = units.reshape(-1, h // m, w // m, m, m, d)  # (n, window row, window col, row in, col in, D)
        return windows.permute(0, 5, 1, 3, 2, 4).reshape(-1, d, h, w)


class Qwen2VLLayout(ImageLayout):
    """``Qwen2VLForConditionalGeneration``: dynamic resolution. The processor resizes the photo
    (aspect kept, sides multiples of ``patch_size * merge_size``) and returns flattened patches
    with ``image_grid_thw`` = (1, h, w) patches; the language model gets one token per
    ``merge x merge`` window, so a non-square photo gives a non-square grid. Default layer:
    the last vision block (the merger reads it), through :class:`MergedPatches`."""

    def __init__(self, model: nn.Module):
        config = model.config
        vision = config.vision_config
        super().__init__(int(config.image_token_id), int(vision.patch_size), None, type(model).__name__)
        self.merge, self.depth = int(vision.spatial_merge_size), int(vision.depth)

    def prepare(self, processor: Any, photo: Any, prompt: str) -> Prepared:
        inputs = prepare_with(processor, photo, prompt, "Qwen2VLProcessor")
        if "image_grid_thw" not in inputs:
            raise InputError(f"the processor ({type(processor).__name__}) returned no image_grid_thw; pass the model's own processor (Qwen2VLProcessor)")
        _, h, w = (int(v) for v in inputs["image_grid_thw"][0])
        size = (h * self.patch_size, w * self.patch_size)
        ph, pw = photo.size[1], photo.size[0]
        return Prepared(inputs, np.asarray(photo), Frame.resize((ph, pw), size, f"{type(processor).__name__}: resize to {size[0]}x{size[1]}"))

    def image_tokens(self, inputs: dict[str, Any], frame: Any = None) -> ImageTokens:
        ids, thw = inputs.get("input_ids"), inputs.get("image_grid_thw")
        if not isinstance(ids, torch.Tensor) or not isinstance(thw, torch.Tensor):
            raise InputError(f"{self.family} needs input_ids and image_grid_thw from its processor; pass the model's own processor")
        if thw.shape[0] != 1 or ids.shape[0] != 1:
            raise InputError(
                f"one image and one prompt at a time: got {thw.shape[0]} images and {ids.shape[0]} prompts; put exactly one image placeholder in the prompt"
            )
        t, h, w = (int(v) for v in thw[0])
        positions = (ids[0] == self.image_token_id).nonzero().flatten().tolist()
        grid = (h // self.merge, w // self.merge)
        if t != 1 or len(positions) != grid[0] * grid[1]:
            raise InputError(
                f"the sequence holds {len(positions)} image tokens (id {self.image_token_id}) but image_grid_thw {[t, h, w]} at merge "
                f"{self.merge} gives {t * grid[0] * grid[1]}; pass one still image through the model's own processor (merge_size as in its config)"
            )
        return ImageTokens(positions, grid, 0, (h * self.patch_size, w * self.patch_size))

    def reshape(self, tokens: ImageTokens) -> Reshape:
        return MergedPatches((tokens.grid[0] * self.merge, tokens.grid[1] * self.merge), self.merge, order=self.window_order(tokens))

    def window_order(self, tokens: ImageTokens) -> tuple[int, ...] | None:
        """The merged cell of each of the vision blocks' windows (``None``: row-major)."""
        return None

    def default_layers(self, model: nn.Module) -> list[str]:
        if self.layers:
            return list(self.layers)
        blocks = blocks_of(model, self.depth)
        if blocks is None:
            raise InputError(f"found no vision blocks in {self.family}; pass layers= (e.g. 'model.visual.blocks.<i>')")
        return [f"{blocks}.{self.depth - 1}"]


class Qwen25VLLayout(Qwen2VLLayout):
    """``Qwen2_5_VLForConditionalGeneration``: :class:`Qwen2VLLayout` plus the vision tower's
    window-attention order (the model's own ``get_vision_window_index`` from ``window_size``,
    ``patch_size`` and ``spatial_merge_size``), which its blocks and merger hold the cells in."""

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self.window = int(model.config.vision_config.window_size)

    def window_order(self, tokens: ImageTokens) -> tuple[int, ...]:
        from transformers.vision_utils import get_vision_window_index

        thw = torch.tensor([[1, tokens.grid[0] * self.merge, tokens.grid[1] * self.merge]])
        index, _ = get_vision_window_index(thw, spatial_merge_size=self.merge, window_size=self.window, patch_size=self.patch_size)
        return tuple(int(i) for i in index)


class Qwen3VLLayout(Qwen2VLLayout):
    """``Qwen3VLForConditionalGeneration``: :class:`Qwen2VLLayout` (no window attention; the
    deepstack blocks are listed in ``deepstack_blocks`` for ``layers=``)."""

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self.deepstack = [int(i) for i in getattr(model.config.vision_config, "deepstack_visual_indexes", ())]

    def deepstack_blocks(self, model: nn.Module) -> list[str]:
        """The blocks whose tokens the deepstack mergers read (``layers=`` names)."""
        blocks = blocks_of(model, self.depth)
        return [] if blocks is None else [f"{blocks}.{i}" for i in self.deepstack]
