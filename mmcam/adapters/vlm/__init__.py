"""Generative vision-language models: where an image's tokens sit in the language model's
sequence, and which region of the model input each one covers.

A generative VLM (LLaVA and its kin) encodes the image with a vision tower, projects the
patch features to the language model's width and writes them into the text sequence where
the processor expanded the image placeholder (``<image>`` repeated once per image token,
``config.image_token_id``). An :class:`ImageLayout` holds the facts that say how to read
that back, taken from the model's config and the processor's outputs, never from constants:

* the **positions** of the image's tokens in the sequence (``input_ids == image_token_id``);
* the **grid** they cover: the model input divided by the vision tower's patch size (merged,
  pooled or pixel-shuffled where the family does), row-major, or stitched from tiles;
* the **prefix**: image tokens before the grid (a CLS token the tower adds);
* the default **layer**: the vision-tower block whose output the model feeds to the
  projector, else the projector itself;
* the **reshape** from that layer's tokens to the grid (tiles back in their places, a
  thumbnail over the whole grid, window orders undone).

:func:`layout_for` returns the layout of a supported model (:data:`GENERATIVE_VLMS`); for
another causal VLM that takes ``input_ids`` / ``pixel_values``, build one by hand:
``ImageLayout(image_token_id=..., patch_size=..., layers=["<a vision-tower block>"])``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ...errors import InputError
from .anyres import AnyResLayout
from .base import ImageLayout, ImageTokens
from .gemma import Gemma3Layout, PaliGemmaLayout
from .internvl import InternVLLayout
from .llava import LlavaLayout
from .qformer import QFormerLayout
from .qwen import MergedPatches, Qwen2VLLayout, Qwen3VLLayout, Qwen25VLLayout
from .seq2seq import Florence2Layout, decoder_inputs, decoder_prefix, generated_answer, is_encoder_decoder
from .tiles import Idefics3Layout, Tiles

__all__ = [
    "ImageTokens",
    "ImageLayout",
    "LlavaLayout",
    "AnyResLayout",
    "Qwen2VLLayout",
    "Qwen25VLLayout",
    "Qwen3VLLayout",
    "Idefics3Layout",
    "InternVLLayout",
    "PaliGemmaLayout",
    "Gemma3Layout",
    "QFormerLayout",
    "Florence2Layout",
    "decoder_prefix",
    "decoder_inputs",
    "generated_answer",
    "is_encoder_decoder",
    "MergedPatches",
    "Tiles",
    "layout_for",
    "is_generative_vlm",
    "GENERATIVE_VLMS",
]

#: model class name -> its layout
LAYOUTS: dict[str, type[ImageLayout]] = {
    "LlavaForConditionalGeneration": LlavaLayout,
    "LlavaNextForConditionalGeneration": AnyResLayout,
    "LlavaOnevisionForConditionalGeneration": AnyResLayout,
    "Qwen2VLForConditionalGeneration": Qwen2VLLayout,
    "Qwen2_5_VLForConditionalGeneration": Qwen25VLLayout,
    "Qwen3VLForConditionalGeneration": Qwen3VLLayout,
    "Idefics3ForConditionalGeneration": Idefics3Layout,
    "SmolVLMForConditionalGeneration": Idefics3Layout,
    "InternVLForConditionalGeneration": InternVLLayout,
    "PaliGemmaForConditionalGeneration": PaliGemmaLayout,
    "Gemma3ForConditionalGeneration": Gemma3Layout,
    "Blip2ForConditionalGeneration": QFormerLayout,
    "InstructBlipForConditionalGeneration": QFormerLayout,
    "Florence2ForConditionalGeneration": Florence2Layout,
}
GENERATIVE_VLMS = tuple(LAYOUTS)


def is_generative_vlm(model: Any) -> bool:
    return type(model).__name__ in LAYOUTS


def layout_for(model: nn.Module, layout: ImageLayout | None = None) -> ImageLayout:
    """``layout`` if given, else the layout of a supported generative VLM."""
    if layout is not None:
        return layout
    family = type(model).__name__
    if family in LAYOUTS:
        return LAYOUTS[family](model)
    raise InputError(
        f"{family} is not a supported generative VLM; supported: {', '.join(GENERATIVE_VLMS)}. For another causal VLM "
        "(one that takes input_ids + pixel_values and expands an image placeholder), pass its image-token positions by hand: "
        "layout=mmcam.adapters.vlm.ImageLayout(image_token_id=<the placeholder's id>, patch_size=<pixels per image token>, "
        "layers=['<a vision-tower block>'])"
    )
