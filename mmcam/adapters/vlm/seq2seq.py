"""Encoder-decoder VLMs: Florence-2's image-token layout and the decoder prompt every
encoder-decoder VLM (Florence-2, BLIP-2 / InstructBLIP with Flan-T5) is teacher-forced from.

In an encoder-decoder VLM the image tokens sit in the **encoder** sequence (with the prompt's
text) and the answer is the **decoder's**: ``generate()`` starts the decoder at
``decoder_start_token_id`` (then the forced BOS, if the generation config forces one) and each
generated token is read off the decoder's logits. The teacher-forced forward that reproduces it
feeds ``decoder_input_ids = prefix + answer[:-1]``; decoder position ``len(prefix) - 1 + i``
predicts answer token ``i`` (:func:`decoder_prefix`).

Florence-2 (:class:`Florence2Layout`, Xiao et al., CVPR 2024, https://arxiv.org/abs/2311.06242):
a DaViT vision tower (convolutional stages of stride ``patch_stride[s]``, each followed by
spatial-window and channel-attention blocks), a projector that writes ``1 + h * w`` tokens
(the mean over the last stage's ``h x w`` cells, then each cell row-major) into the encoder
sequence where the processor repeated the image token, and a BART encoder-decoder. The grid is
the last stage's size, from the convolutions' arithmetic on the input
(``⌊(H + 2p − k) / s⌋ + 1`` per stage) and checked against the processor's token count.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...errors import InputError, MethodError, TargetError
from ...reshape import NCHW, Reshape, Size, Tokens
from ..base import Prepared, processor_prepare
from .base import ImageLayout, ImageTokens

__all__ = ["Florence2Layout", "decoder_prefix", "decoder_inputs", "generated_answer", "is_encoder_decoder", "strip_placeholder"]


def is_encoder_decoder(model: nn.Module) -> bool:
    """Whether ``model``'s language model is an encoder-decoder (its config or text config says)."""
    config = model.config
    return any(bool(getattr(c, "is_encoder_decoder", False)) for c in (config, getattr(config, "text_config", None)))


def decoder_prefix(model: nn.Module, forward_only: bool = False) -> list[int] | None:
    """The decoder tokens ``generate()`` starts from, ``None`` for a causal language model: the
    ``decoder_start_token_id`` (else the ``bos_token_id``, as ``generate()`` falls back) of the
    generation config ``generate()`` reads (BLIP-2 / InstructBLIP hand generation over to their
    language model's), then its ``forced_bos_token_id`` if it forces one. ``forward_only``: the
    method reads the language model's head at the image tokens (the logit lens), which an
    encoder-decoder's decoder does not hold: refused."""
    if not is_encoder_decoder(model):
        return None
    if forward_only:
        raise MethodError(
            f"{type(model).__name__} is an encoder-decoder: its image tokens are the encoder's, which the language model's head "
            "does not read, so 'logit-lens' / 'tam' have no map; use a CAM method (gradcam, layercam, ...)"
        )
    language = getattr(model, "language_model", None)
    delegates = hasattr(model.config, "use_decoder_only_language_model") and language is not None  # BLIP-2's generate() is its LM's
    config = language.generation_config if delegates else model.generation_config
    start = next((t for t in (config.decoder_start_token_id, config.bos_token_id) if t is not None), None)
    if start is None:
        raise InputError(f"{type(model).__name__} names no decoder_start_token_id; set it in the generation config generate() reads")
    forced = config.forced_bos_token_id
    return [int(start)] + ([int(forced)] if forced is not None else [])


def decoder_inputs(inputs: dict[str, torch.Tensor], decoder: list[int], more: list[int]) -> dict[str, torch.Tensor]:
    """The teacher-forced inputs of an encoder-decoder: the encoder's ``inputs`` as they are and
    ``decoder_input_ids = decoder + more`` (causal within the decoder, as in generation)."""
    return {**inputs, "decoder_input_ids": inputs["input_ids"].new_tensor([list(decoder) + list(more)])}


def generated_answer(sequence: list[int], decoder: list[int]) -> list[int]:
    """``generate()``'s decoder ``sequence`` after the ``decoder`` start tokens (refused if it
    started elsewhere: the teacher-forced forward would not be generation's)."""
    if sequence[: len(decoder)] != list(decoder):
        raise TargetError(
            f"generate() started the decoder at {sequence[: len(decoder)]}, not at {decoder} (decoder_start_token_id, then "
            "forced_bos_token_id); make the model's generation config and its language model's agree"
        )
    return sequence[len(decoder) :]


def strip_placeholder(processor: Any, prompt: str) -> str:
    """``prompt`` without its image placeholder, for processors that put the image tokens
    themselves (BLIP-2's query tokens, Florence-2's image tokens before the text)."""
    token = getattr(processor, "image_token", None)
    token = getattr(token, "content", token)
    return prompt.replace(token, " ", 1).strip() if isinstance(token, str) else prompt


class _Spatial(Reshape):
    """A DaViT block's ``(B, C, h, w)`` as is; the projector's ``(B, 1 + h * w, D)`` folded."""

    def __init__(self, grid: Size):
        self.grid = grid

    def for_tensor(self, t: torch.Tensor, input_size: Size | None) -> Reshape:
        return NCHW() if t.ndim == 4 else Tokens(grid=self.grid)

    def __call__(self, t: torch.Tensor, input_size: Size | None) -> torch.Tensor:
        return self.for_tensor(t, input_size)(t, input_size)


class Florence2Layout(ImageLayout):
    """``Florence2ForConditionalGeneration``: the image tokens (``config.image_token_id``) in the
    encoder sequence: token 0 the mean over every cell, then the last DaViT stage's ``h x w``
    cells row-major. Default layer: the tower's last block (``(B, C, h, w)``)."""

    def __init__(self, model: nn.Module):
        config, vision = model.config, model.config.vision_config
        stride = 1
        for s in vision.patch_stride:
            stride *= int(s)
        super().__init__(int(config.image_token_id), stride, None, type(model).__name__)
        self.convs = [(int(k), int(s), int(p)) for k, s, p in zip(vision.patch_size, vision.patch_stride, vision.patch_padding)]
        self.depths = [int(d) for d in vision.depths]

    def prepare(self, processor: Any, photo: Any, prompt: str) -> Prepared:
        return processor_prepare(processor, photo, text=strip_placeholder(processor, prompt))

    def grid(self, size: tuple[int, int]) -> tuple[int, int]:
        """The last stage's ``(h, w)`` for an input of ``size`` (each stage's convolution)."""
        h, w = size
        for k, s, p in self.convs:
            h, w = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        return h, w

    def image_tokens(self, inputs: dict[str, Any], frame: Any = None) -> ImageTokens:
        ids, pixels, positions = self._ids_pixels(inputs)
        H, W = (int(s) for s in pixels.shape[-2:])
        (h, w) = self.grid((H, W))
        if ids.shape[0] != 1 or pixels.shape[0] != 1 or len(positions) != 1 + h * w:
            raise InputError(
                f"the encoder sequence holds {len(positions)} image tokens (id {self.image_token_id}) but a {H}x{W} input gives "
                f"1 + {h}x{w} (the mean token and the last DaViT stage's cells); pass one image and the model's own processor "
                "(Florence2Processor, its image processor's image_seq_length as in the model)"
            )
        cells = (tuple(range(h * w)),) + tuple((c,) for c in range(h * w))
        return ImageTokens(positions, (h, w), 0, (H, W), cells)

    def reshape(self, tokens: ImageTokens) -> Reshape:
        return _Spatial(tokens.grid)

    def default_layers(self, model: nn.Module) -> list[str]:
        if self.layers:
            return list(self.layers)
        names = dict(model.named_modules())
        tower = next((n for n, m in names.items() if n.endswith("vision_tower") and isinstance(getattr(m, "blocks", None), nn.ModuleList)), None)
        last = f"{tower}.blocks.{len(self.depths) - 1}.{self.depths[-1] - 1}"
        if tower is None or last not in names:
            raise InputError(f"found no DaViT blocks in {self.family}; pass layers= (e.g. 'model.vision_tower.blocks.<stage>.<block>')")
        return [last]
