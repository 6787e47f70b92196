"""Per-word caption maps: ``explain_caption``.

``generate()`` runs under no-grad, so the caption is generated first and then re-run as one
teacher-forced forward; every word's log-probability is a target and all words' maps come
from that single forward (one batched backward). Sub-word tokens are merged into words (a
word's score is the sum of its tokens' log-probabilities).

Supported (see :mod:`mmcam.adapters.hf_text`): HF ``VisionEncoderDecoderModel`` (any vision
encoder + text decoder), ``BlipForConditionalGeneration`` and ``GitForCausalLM`` (whose
logits hold the image tokens before the text). The map is taken at the vision encoder's
last block (pre-attention norm), found by structure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from ..adapters.base import Family, Prepared
from ..adapters.hf_text import (
    CAPTIONERS,
    chosen_layers,
    decoding_for,
    generated_argmax,
    merge_subwords,
    processor_inputs,
    require_attention_family,
    run_cam,
    teacher_forced,
    text_ids,
    vision_layers,
)
from ..adapters.teacher import GenerateThenForce, shares_encoder
from ..adapters.vlm import is_generative_vlm
from ..errors import InputError
from .base import Task
from .generation import GenerationExplanation, GenerationTask, chat_prompt
from .words import WordsExplanation

__all__ = ["CaptionExplanation", "CaptionTask", "explain_caption", "merge_subwords", "CAPTION_PROMPT"]

#: what a generative VLM is asked for a caption
CAPTION_PROMPT = "Describe the image."
#: VisionEncoderDecoder's default: ``gae`` averaged over 3 x 3 sub-patch input shifts (9 passes;
#: zoo:captioner caption words 0.941 / 0.790 pointing with / without the shifts, docs/quality.md)
DEFAULT_METHOD = "gae-shift"


@dataclass
class CaptionExplanation(WordsExplanation):
    """``items`` are the caption's words; ``maps[k]`` the map of word k (``save`` adds a strip)."""

    task: str = "caption"

    @property
    def caption(self) -> str:
        return " ".join(self.items)


class CaptionTask(Task):
    """Every word of each photo's caption (see :func:`explain_caption`); one photo per forward
    (each caption is generated on its own before the teacher-forced pass)."""

    name = "caption"
    batched = False

    def __init__(
        self, model: nn.Module, processor: Any, caption: str | None = None, *, method: str | None = None, layers: Any = None, max_length: int | None = None
    ):
        if processor is None:
            raise InputError("the caption task needs the model's processor (e.g. --model zoo:captioner, or a directory saved with its processor)")
        self.decoding = decoding_for(model, CAPTIONERS)
        self.method = method or (DEFAULT_METHOD if layers is None and self.decoding.family == "VisionEncoderDecoderModel" else "gradcam")
        require_attention_family(self.method, self.decoding.family, ("VisionEncoderDecoderModel", "BlipForConditionalGeneration"))
        if caption is not None and not caption.strip():
            raise InputError("the caption is empty; pass some words or caption=None to generate one")
        self.model, self.processor, self.caption, self.layers, self.max_length = model, processor, caption, layers, max_length
        self.family = Family(model, processor)

    def prepare(self, image: Any) -> Prepared:
        return processor_inputs(self.processor, image)

    def run(self, batch: list[Prepared]) -> list[CaptionExplanation]:
        return [self._one(prepared) for prepared in batch]

    def _one(self, prepared: Prepared) -> CaptionExplanation:
        model, decoding, method = self.model, self.decoding, self.method
        pixel_values = prepared.inputs["pixel_values"]
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        generate = {"max_length": self.max_length} if self.max_length else {}
        chosen = chosen_layers(self.layers, method, lambda: vision_layers(model, pixel_values))
        if self.caption is None and shares_encoder(model, method):  # one encoder pass for generate() and the maps
            view = GenerateThenForce(model, decoding, tokenizer, **generate)
            exp = run_cam(model, view, chosen, method, {"pixel_values": pixel_values}, [view.target])
            forced = view.forced
        else:
            ids = decoding.generate({"pixel_values": pixel_values}, **generate) if self.caption is None else text_ids(decoding, tokenizer, self.caption)
            forced = teacher_forced(decoding, tokenizer, ids)
            forward_inputs = decoding.forward_inputs({"pixel_values": pixel_values}, forced.decoder_ids)
            exp = run_cam(model, decoding.module, chosen, method, forward_inputs, [forced.target])
        logits = exp.output["logits"] if isinstance(exp.output, dict) else exp.output.logits
        offset = logits.shape[1] - forced.decoder_ids.shape[1]  # GIT: image tokens come first
        predicted = generated_argmax(logits[0], decoding, [p + offset for p in forced.target.positions])
        return CaptionExplanation(
            image=prepared.photo,
            maps=prepared.frame.maps_to_photo(exp.maps[0]),
            items=forced.words,
            scores=exp.scores[0],
            method=exp.method,
            layers=exp.layers,
            meta={
                "caption": " ".join(forced.words),
                "family": decoding.family,
                "generated": self.caption is None,
                "token_ids": forced.token_ids,
                "teacher_forced_argmax_matches": predicted == forced.token_ids,
                "word_log_probs": [round(float(s), 5) for s in exp.scores[0]],
                "pipeline": prepared.frame.to_meta(),
            },
            tokens=forced.tokens,
        )


def explain_caption(
    model: nn.Module,
    processor: Any,
    image: Any,
    caption: str | None = None,
    *,
    method: str | None = None,
    layers: Any = None,
    max_length: int | None = None,
    prompt: str | None = None,
) -> "CaptionExplanation | GenerationExplanation":
    """One map per word of the model's caption (or of ``caption``, teacher-forced).

    The caption is generated under no-grad (greedy unless the model's generation config says
    otherwise), then fed back in **one** teacher-forced forward; word ``w``'s score is
    ``Σ_{t ∈ w} log p(token_t | tokens_<t, image)`` (sub-word tokens merged) and all words'
    maps come from one batched backward. ``model``: ``VisionEncoderDecoderModel``,
    ``BlipForConditionalGeneration`` or ``GitForCausalLM`` with its processor. ``method``:
    default ``"gae-shift"`` for VisionEncoderDecoder (gradient-weighted attention relevance
    through the cross-attention, averaged over 3 x 3 sub-patch shifts of the image, 9 forwards +
    backwards: :class:`mmcam.methods.attention.ShiftedAttention`; on the zoo it points at the
    word's object 0.94 of the time, one pass of ``"gae"`` 0.79, Grad-CAM 0.24; ``"attnlrp"``
    0.85; ``"attnlrp-shift"`` (the same 9 shifts) points less often than the default on
    ``mmcam evaluate``'s 60 scenes, 0.874 vs 0.918, with a higher interventional top object, 0.909
    vs 0.873; both opt-in as LRP carries a patent notice — :mod:`mmcam.methods.attnlrp`,
    docs/methods.md), ``"gradcam"`` for BLIP and GIT or when ``layers`` are given (BLIP also takes
    ``"gae"``: its text decoder's self- and cross-attentions; no trained BLIP was measured
    here, so it is not BLIP's default); ``layers`` overrides a CAM method's default layer (the
    vision encoder's last pre-attention norm).

    A generative VLM (``LlavaForConditionalGeneration``) answers ``prompt`` (default
    :data:`CAPTION_PROMPT`, through the processor's chat template) and its answer's words are
    explained by :func:`mmcam.tasks.generation.explain_generation`.

    Example::

        exp = mmcam.explain_caption(blip, blip_processor, "photo.jpg")
        exp.items          # the words; exp.maps[k] is word k's map
        exp.save("out/")   # one overlay per word + a strip
    """
    if is_generative_vlm(model):
        question = chat_prompt(processor, prompt or CAPTION_PROMPT)
        return GenerationTask(model, processor, question, caption, method=method, layers=layers, max_new_tokens=max_length, task="caption")(image)
    return CaptionTask(model, processor, caption, method=method, layers=layers, max_length=max_length)(image)
