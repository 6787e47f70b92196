"""Generative vision-language models: where an image's tokens sit in the language model's
sequence, and which region of the model input each one covers.

A generative VLM (LLaVA and its kin) encodes the image with a vision tower, projects the
patch features to the language model's width and writes them into the text sequence where
the processor expanded the image placeholder (``<image>`` repeated once per image token,
``config.image_token_id``). An :class:`ImageLayout` holds the facts that say how to read
that back, taken from the model's config and the processor's outputs, never from constants:

* the **positions** of the image's tokens in the sequence (``input_ids == image_token_id``);
* the **grid** they cover: the model input (``pixel_values``' height and width) divided by
  the vision tower's patch size, row-major;
* the **prefix**: image tokens before the grid (a CLS token the tower adds and
  ``vision_feature_select_strategy="full"`` keeps; ``"default"`` drops it);
* the default **layer**: the vision-tower block whose output the model feeds to the
  projector (``vision_feature_layer``), else the projector itself.

Supported: LLaVA (:class:`LlavaLayout`: a square grid, CLS dropped) and Qwen2-VL
(:class:`Qwen2VLLayout`: dynamic resolution from ``image_grid_thw``, 2x2-merged patches,
:class:`MergedPatches` undoes the processor's merge-window token order).
:func:`layout_for` returns the layout of a supported model; for another causal VLM that takes
``input_ids`` / ``pixel_values``, build one by hand:
``ImageLayout(image_token_id=..., patch_size=..., layers=["<a vision-tower block>"])``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..reshape import Reshape, Tokens
from .base import Prepared, processor_prepare
from .frame import Frame

__all__ = ["ImageTokens", "ImageLayout", "LlavaLayout", "Qwen2VLLayout", "MergedPatches", "layout_for", "is_generative_vlm", "GENERATIVE_VLMS"]

GENERATIVE_VLMS = ("LlavaForConditionalGeneration", "Qwen2VLForConditionalGeneration")


@dataclass(frozen=True)
class ImageTokens:
    """One image's tokens in one sequence: ``positions`` (sequence indices, in order), the
    ``grid`` (h, w) of input patches they cover (row-major, after ``prefix`` tokens), and the
    model ``input_size`` (H, W) the grid divides."""

    positions: list[int]
    grid: tuple[int, int]
    prefix: int
    input_size: tuple[int, int]

    @property
    def patch_positions(self) -> list[int]:
        """Sequence positions of the grid's tokens (prefix dropped), row-major."""
        return self.positions[self.prefix :]

    def region(self, index: int) -> tuple[int, int, int, int]:
        """The ``(top, left, bottom, right)`` input pixels grid token ``index`` covers."""
        (h, w), (H, W) = self.grid, self.input_size
        row, col = divmod(index, w)
        return (row * H // h, col * W // w, (row + 1) * H // h, (col + 1) * W // w)


@dataclass
class ImageLayout:
    """The image-token layout of a causal VLM (see the module docstring). Build one by hand for
    a model mmcam doesn't know: ``image_token_id`` (the expanded placeholder's id),
    ``patch_size`` (input pixels per image token, along each axis) and ``layers`` (the layer(s)
    to hook, e.g. a vision-tower block whose tokens are ``prefix + h * w`` patches)."""

    image_token_id: int
    patch_size: int
    layers: list[str] | None = None
    family: str = "ImageLayout"

    def prepare(self, processor: Any, photo: Any, prompt: str) -> Prepared:
        """The processor's inputs for ``photo`` and ``prompt``, with the frame photo -> input."""
        return processor_prepare(processor, photo, text=prompt)

    def image_tokens(self, inputs: dict[str, Any]) -> ImageTokens:
        """The single image's tokens in ``inputs`` (a batch of one sequence)."""
        ids, pixels = inputs.get("input_ids"), inputs.get("pixel_values")
        if not isinstance(ids, torch.Tensor) or not isinstance(pixels, torch.Tensor):
            raise InputError("a generative VLM needs input_ids and pixel_values from its processor; pass the model's own processor (e.g. LlavaProcessor)")
        if pixels.ndim != 4 or pixels.shape[0] != 1 or ids.shape[0] != 1:
            raise InputError(
                f"one image and one prompt at a time: got pixel_values {tuple(pixels.shape)} and input_ids {tuple(ids.shape)}; "
                "put exactly one image placeholder in the prompt and pass one image"
            )
        positions = (ids[0] == self.image_token_id).nonzero().flatten().tolist()
        H, W = (int(s) for s in pixels.shape[-2:])
        grid = (H // self.patch_size, W // self.patch_size)
        prefix = len(positions) - grid[0] * grid[1]
        if prefix < 0 or not positions:
            raise InputError(
                f"the sequence holds {len(positions)} image tokens (id {self.image_token_id}) but a {H}x{W} input at patch "
                f"size {self.patch_size} has {grid[0] * grid[1]} patches; the processor's image-token count must match the model "
                "(LlavaProcessor: patch_size, vision_feature_select_strategy and num_additional_image_tokens as in the model's config)"
            )
        return ImageTokens(positions, grid, prefix, (H, W))

    def reshape(self, tokens: ImageTokens) -> Reshape:
        """Vision-tower or projector tokens ``(1, N, D)``: the last ``h * w`` are the grid
        (``N - h * w`` prefix tokens, e.g. the tower's CLS, come first)."""
        return Tokens(grid=tokens.grid)

    def default_layers(self, model: nn.Module) -> list[str]:
        if self.layers:
            return list(self.layers)
        raise InputError(f"{self.family} names no default layer; pass layers= (a vision-tower block or the projector)")


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
        blocks = _blocks(model, self.depth)
        if isinstance(self.feature_layer, int) and blocks is not None:
            index = self.feature_layer if self.feature_layer >= 0 else self.depth + 1 + self.feature_layer
            if index >= 1:  # hidden_states[0] is the embeddings' output, [i] block i - 1's
                return [f"{blocks}.{index - 1}"]
        if projector is None:
            raise InputError(f"found no vision-tower blocks or projector in {self.family}; pass layers=")
        return [projector]


@dataclass
class MergedPatches(Reshape):
    """Qwen2-VL's vision tokens, 2-D ``(N, D)`` (no batch axis) over a ``grid`` (h, w) of
    patches: the blocks hold them merge-window by merge-window (each ``merge x merge`` window
    row-major, windows row-major: the image processor's order), the merger one token per window
    (row-major over ``(h / merge, w / merge)``, the language model's order). ``merged`` (which
    of the two) is read from the hooked tensor itself (:meth:`for_tensor`); stacked copies
    ``(n * N, D)`` (the engine's per-target gradients) fold to ``(n, D, ., .)``."""

    grid: tuple[int, int]
    merge: int
    merged: bool | None = None
    channel_dim = -1

    def for_tensor(self, t: torch.Tensor, input_size: Any) -> "MergedPatches":
        if self.merged is not None:
            return self
        (h, w), m = self.grid, self.merge
        count = t.shape[-2] if t.ndim >= 2 else -1
        if count not in (h * w, (h // m) * (w // m)):
            raise InputError(
                f"Qwen2-VL vision tokens must be ({h * w} or {(h // m) * (w // m)}, D) for a {h}x{w} patch grid, got {tuple(t.shape)}; hook a vision block or the merger"
            )
        return MergedPatches(self.grid, m, count != h * w)

    def __call__(self, t: torch.Tensor, input_size: Any) -> torch.Tensor:
        if self.merged is None:
            return self.for_tensor(t, input_size)(t, input_size)
        (h, w), m = self.grid, self.merge
        if self.merged:
            return t.reshape(-1, (h // m) * (w // m), t.shape[-1]).transpose(1, 2).reshape(-1, t.shape[-1], h // m, w // m)
        windows = t.reshape(-1, h // m, w // m, m, m, t.shape[-1])  # (n, window row, window col, row in, col in, D)
        return windows.permute(0, 5, 1, 3, 2, 4).reshape(-1, t.shape[-1], h, w)


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
        try:
            out = processor(images=photo, text=prompt, return_tensors="pt")
        except Exception as error:  # noqa: BLE001 - any processor failure is the caller's input
            raise InputError(
                f"the processor ({type(processor).__name__}) rejected the image and prompt: {error}. Pass the model's own processor (Qwen2VLProcessor)"
            ) from None
        inputs = {k: v for k, v in dict(out).items() if isinstance(v, torch.Tensor)}
        if "image_grid_thw" not in inputs:
            raise InputError(f"the processor ({type(processor).__name__}) returned no image_grid_thw; pass Qwen2VLProcessor")
        _, h, w = (int(v) for v in inputs["image_grid_thw"][0])
        size = (h * self.patch_size, w * self.patch_size)
        ph, pw = photo.size[1], photo.size[0]
        return Prepared(inputs, np.asarray(photo), Frame.resize((ph, pw), size, f"{type(processor).__name__}: resize to {size[0]}x{size[1]}"))

    def image_tokens(self, inputs: dict[str, Any]) -> ImageTokens:
        ids, thw = inputs.get("input_ids"), inputs.get("image_grid_thw")
        if not isinstance(ids, torch.Tensor) or not isinstance(thw, torch.Tensor):
            raise InputError("Qwen2-VL needs input_ids and image_grid_thw from its processor; pass Qwen2VLProcessor")
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
                f"{self.merge} gives {t * grid[0] * grid[1]}; pass one still image through Qwen2VLProcessor (merge_size as in the model's config)"
            )
        return ImageTokens(positions, grid, 0, (h * self.patch_size, w * self.patch_size))

    def reshape(self, tokens: ImageTokens) -> Reshape:
        return MergedPatches((tokens.grid[0] * self.merge, tokens.grid[1] * self.merge), self.merge)

    def default_layers(self, model: nn.Module) -> list[str]:
        if self.layers:
            return list(self.layers)
        blocks = _blocks(model, self.depth)
        if blocks is None:
            raise InputError(f"found no vision blocks in {self.family}; pass layers= (e.g. 'model.visual.blocks.<i>')")
        return [f"{blocks}.{self.depth - 1}"]


def _blocks(model: nn.Module, depth: int) -> str | None:
    """The name of the vision tower's block list: the first ``ModuleList`` of ``depth`` blocks
    inside the vision tower (the submodule built from the model's ``vision_config``, or else
    the one taking ``pixel_values``)."""
    vision = getattr(model.config, "vision_config", None)
    for name, module in model.named_modules():
        if name and (getattr(module, "config", None) is vision or getattr(module, "main_input_name", None) == "pixel_values"):
            for sub, child in module.named_modules():
                if isinstance(child, nn.ModuleList) and len(child) == depth:
                    return f"{name}.{sub}"
            return None
    return None


def is_generative_vlm(model: Any) -> bool:
    return type(model).__name__ in GENERATIVE_VLMS


def layout_for(model: nn.Module, layout: ImageLayout | None = None) -> ImageLayout:
    """``layout`` if given, else the layout of a supported generative VLM."""
    if layout is not None:
        return layout
    family = type(model).__name__
    if family == "LlavaForConditionalGeneration":
        return LlavaLayout(model)
    if family == "Qwen2VLForConditionalGeneration":
        return Qwen2VLLayout(model)
    raise InputError(
        f"{family} is not a supported generative VLM; supported: {', '.join(GENERATIVE_VLMS)}. For another causal VLM "
        "(one that takes input_ids + pixel_values and expands an image placeholder), pass its image-token positions by hand: "
        "layout=mmcam.adapters.vlm.ImageLayout(image_token_id=<the placeholder's id>, patch_size=<pixels per image token>, "
        "layers=['<a vision-tower block>'])"
    )
