"""The image-token layout of a generative VLM: :class:`ImageTokens` (where one image's tokens
sit in the language model's sequence and the grid they cover) and :class:`ImageLayout` (the
base every family's layout extends; build one by hand for a model mmcam doesn't know)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ...errors import InputError
from ...reshape import Reshape, Tokens
from ..base import Prepared, processor_prepare

__all__ = ["ImageTokens", "ImageLayout", "blocks_of", "prepare_with"]


@dataclass(frozen=True)
class ImageTokens:
    """One image's tokens in one sequence: ``positions`` (sequence indices, in order), the
    ``grid`` (h, w) of input patches they cover (row-major, after ``prefix`` tokens), and the
    model ``input_size`` (H, W) the grid divides. ``cells``: for a layout whose tokens are not
    one row-major grid (tiles, a thumbnail, row-end tokens), the grid cells (``row * w + col``)
    each token after the prefix covers: one for a tile's token, a block for a thumbnail's token,
    none for a newline token."""

    positions: list[int]
    grid: tuple[int, int]
    prefix: int
    input_size: tuple[int, int]
    cells: tuple[tuple[int, ...], ...] | None = None

    def fold(self, values: torch.Tensor) -> torch.Tensor:
        """Per-token values ``(..., len(positions))`` on the grid ``(..., h, w)``: the prefix
        dropped; with ``cells``, each token's value added into every cell it covers."""
        values = values[..., self.prefix :]
        (h, w) = self.grid
        if self.cells is None:
            return values.reshape(*values.shape[:-1], h, w)
        if not any(self.cells):
            raise InputError(
                "these image tokens cover no region of the image (a Q-Former's query tokens each read every patch): their values "
                "cannot be placed on it (method='logit-lens'); use a CAM method, which maps at the vision tower's patches"
            )
        rows = [i for i, cells in enumerate(self.cells) for _ in cells]
        cols = [c for cells in self.cells for c in cells]
        spread = torch.zeros(len(self.cells), h * w, dtype=values.dtype, device=values.device)
        spread[rows, cols] = 1.0
        out = values @ spread
        return out.reshape(*values.shape[:-1], h, w)

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
    #: per-token inputs the answer tokens take another value in than 0 (PaliGemma's suffix)
    answer_token_types: ClassVar[dict[str, int]] = {}

    def prepare(self, processor: Any, photo: Any, prompt: str) -> Prepared:
        """The processor's inputs for ``photo`` and ``prompt``, with the frame photo -> input."""
        return processor_prepare(processor, photo, text=prompt)

    def _ids_pixels(self, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """``input_ids``, ``pixel_values`` and the image tokens' positions in the first sequence."""
        ids, pixels = inputs.get("input_ids"), inputs.get("pixel_values")
        if not isinstance(ids, torch.Tensor) or not isinstance(pixels, torch.Tensor):
            raise InputError(f"{self.family} needs input_ids and pixel_values from its processor; pass the model's own processor (e.g. its AutoProcessor)")
        return ids, pixels, (ids[0] == self.image_token_id).nonzero().flatten().tolist()

    def image_tokens(self, inputs: dict[str, Any], frame: Any = None) -> ImageTokens:
        """The single image's tokens in ``inputs`` (a batch of one sequence); ``frame``: the
        :meth:`prepare` frame, for layouts that read the tile split from it."""
        ids, pixels, positions = self._ids_pixels(inputs)
        if pixels.ndim != 4 or pixels.shape[0] != 1 or ids.shape[0] != 1:
            raise InputError(
                f"one image and one prompt at a time: got pixel_values {tuple(pixels.shape)} and input_ids {tuple(ids.shape)}; "
                "put exactly one image placeholder in the prompt and pass one image"
            )
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


def blocks_of(model: nn.Module, depth: int) -> str | None:
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


def prepare_with(processor: Any, photo: Any, prompt: str, family: str) -> dict[str, torch.Tensor]:
    """``processor(images=photo, text=prompt)`` as a dict of tensors; a processor failure (e.g. a
    prompt whose placeholder count does not match the images) is the caller's input."""
    try:
        out = processor(images=photo, text=prompt, return_tensors="pt")
    except Exception as error:  # noqa: BLE001 - any processor failure is the caller's input
        raise InputError(
            f"the processor ({type(processor).__name__}) rejected the image and prompt: {error}. Pass one image, a prompt holding "
            f"its image placeholder once, and the model's own processor ({family})"
        ) from None
    return {k: v for k, v in dict(out).items() if isinstance(v, torch.Tensor)}
