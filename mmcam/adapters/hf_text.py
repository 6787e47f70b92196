"""HF vision-language families: generate text, then re-run it as one teacher-forced forward.

``generate()`` runs under no-grad, so text is generated first and then fed back as decoder
input in a single forward whose logits give every token's log-probability at once. The
families differ in where the logits are and where the text starts:

* ``VisionEncoderDecoderModel``: ``decoder_input_ids``, logits cover the text.
* ``BlipForConditionalGeneration``: ``input_ids`` starting with the text config's BOS
  (``[DEC]``), the caption ends at SEP.
* ``GitForCausalLM``: ``input_ids`` starting with BOS; the logits cover the *image tokens
  first*, then the text, so positions count from the end (``text_length``).
* ``BlipForQuestionAnswering``: the question through ``input_ids``, the answer through
  ``decoder_input_ids``; its ``forward()`` returns no logits, so the engine runs a
  :class:`DecoderLogits` view of the model that returns the text decoder's logits.

The default layer is found by structure: the vision tower is the first submodule whose
``main_input_name`` is ``pixel_values``; inside it, :func:`mmcam.engine.layers.default_layers`
picks the last block's pre-attention norm (``layer_norm1``, ``layernorm_before``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..engine import CAM, Explanation
from ..engine.layers import default_layers
from ..errors import InputError, TargetError
from ..targets import CaptionTokens
from .base import Prepared, processor_prepare

__all__ = [
    "processor_inputs",
    "run_cam",
    "chosen_layers",
    "require_attention_family",
    "CAPTIONERS",
    "ANSWER_GENERATORS",
    "DecoderLogits",
    "TextDecoding",
    "decoding_for",
    "vision_tower",
    "vision_layers",
    "merge_subwords",
    "TeacherForced",
    "teacher_forced",
]

CAPTIONERS = ("VisionEncoderDecoderModel", "BlipForConditionalGeneration", "GitForCausalLM")
ANSWER_GENERATORS = ("BlipForQuestionAnswering",)


def processor_inputs(processor: Any, image: Any, **text: Any) -> Prepared:
    """``processor(images=image, **text)`` as a dict of tensors with the photo and its frame
    (:func:`mmcam.adapters.base.processor_prepare`). Errors become :class:`InputError`."""
    from ..io import load_image

    prepared = processor_prepare(processor, load_image(image), **text)
    if not isinstance(prepared.inputs, dict) or "pixel_values" not in prepared.inputs:
        raise InputError(
            f"the processor ({type(processor).__name__}) returned no (B, 3, H, W) pixel_values; pass the "
            "model's image+text processor (e.g. BlipProcessor, GitProcessor, CLIPProcessor, not its tokenizer)"
        )
    return prepared


def run_cam(model: nn.Module, module: nn.Module, layers: Any, method: Any, inputs: Any, targets: list, **call: Any) -> Explanation:
    """``CAM(module, layers, method)(inputs, targets)`` with ``model``'s token layout (``module``
    is ``model`` or a thin view of it that returns the text decoder's logits)."""
    from ..reshape import Auto

    return CAM(module, layers, method=method, reshape=Auto(model))(inputs, targets, **call)


def chosen_layers(layers: Any, method: Any, default: Callable[[], Any]) -> Any:
    """``layers`` when given; ``None`` for an attention method (``"gae"`` reads every attention
    layer); else ``default()`` (the structural choice, computed only when needed)."""
    from .. import methods

    if layers is not None or getattr(methods.get(method), "attention", False):
        return layers
    return default()


def require_attention_family(method: Any, family: str, supported: tuple[str, ...]) -> None:
    """An attention method (``"gae"``) on a family whose outputs don't carry the attention
    maps it needs fails here, naming the families that do."""
    from .. import methods
    from ..errors import MethodError

    if getattr(methods.get(method), "attention", False) and family not in supported:
        offered = f"it supports {', '.join(supported)}" if supported else ("it explains captions (VisionEncoderDecoder, BLIP), ViLT answers and ViT classes")
        raise MethodError(
            f"method {methods.get(method).name!r} needs the model's attention maps in its own outputs, which {family} does not give "
            f"here; {offered}. Use a CAM method (gradcam, layercam, scorecam, ...) for {family}"
        )


def vision_tower(model: nn.Module) -> tuple[str, nn.Module]:
    """``(name, module)`` of the image encoder: the first submodule (not the model itself)
    whose ``main_input_name`` is ``pixel_values``."""
    for name, module in model.named_modules():
        if name and getattr(module, "main_input_name", None) == "pixel_values":
            return name, module
    raise InputError(
        f"found no vision encoder (a submodule taking pixel_values) in {type(model).__name__}; "
        "pass layers= (a layer of the image encoder, e.g. its last block's pre-attention norm)"
    )


def vision_layers(model: nn.Module, pixel_values: torch.Tensor) -> list[str]:
    """Default layer(s) for a vision-language model: chosen inside its vision tower by structure."""
    name, tower = vision_tower(model)
    return [f"{name}.{layer}" for layer in default_layers(tower, {"pixel_values": pixel_values})]


class DecoderLogits(nn.Module):
    """A view of ``model`` whose forward returns ``{"logits": decoder logits}``.

    It registers the model's own children under their own names (same parameters, same
    layer names, nothing copied), runs ``model(**inputs)`` and reads the logits of
    ``model.<decoder>`` through a forward hook that lives for that one call.
    """

    def __init__(self, model: nn.Module, decoder: str):
        super().__init__()
        object.__setattr__(self, "_wrapped", model)  # not a child: names stay the model's own
        self._decoder = decoder
        for name, child in model.named_children():
            self.add_module(name, child)
        self.config = getattr(model, "config", None)
        self.training = model.training  # the flag only: .train() would recurse into the model's modules

    def forward(self, **inputs: Any) -> dict[str, torch.Tensor]:
        seen: list[torch.Tensor] = []

        def keep(module: nn.Module, args: Any, output: Any) -> None:
            seen.append(output.logits if hasattr(output, "logits") else output[0])

        handle = self._wrapped.get_submodule(self._decoder).register_forward_hook(keep)
        try:
            self._wrapped(**inputs)
        finally:
            handle.remove()
        return {"logits": seen[-1]}


@dataclass
class TextDecoding:
    """How one family generates its text and re-runs it teacher-forced.

    ``module`` is what the engine runs; ``start`` the first token of every decoder sequence;
    ``stops`` the tokens that end the text; ``ids_key`` the forward argument for the text;
    ``image_tokens_first``: the logits hold the image tokens before the text (GIT).
    """

    family: str
    model: nn.Module
    module: nn.Module
    start: int
    stops: frozenset[int]
    ids_key: str
    image_tokens_first: bool = False

    def generate(self, inputs: dict[str, torch.Tensor], **kwargs: Any) -> torch.Tensor:
        """Greedy (or the model's generation config) text for one image, 1-D, under no-grad."""
        with torch.no_grad():
            return self.model.generate(**inputs, **kwargs)[0]

    def forward_inputs(self, inputs: dict[str, torch.Tensor], decoder_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        return {**inputs, self.ids_key: decoder_ids}


def _supported(kinds: tuple[str, ...]) -> str:
    return ", ".join(kinds)


def decoding_for(model: nn.Module, kinds: tuple[str, ...] = CAPTIONERS) -> TextDecoding:
    """The :class:`TextDecoding` of a supported HF model (``kinds``: the families the caller accepts)."""
    family = type(model).__name__
    if family not in kinds:
        raise InputError(
            f"{family} is not a supported family here; supported: {_supported(kinds)}. For another "
            "model, run generate() yourself and call mmcam.CAM(model, layers=<a vision-encoder layer>) "
            "on the teacher-forced inputs with targets=[mmcam.targets.CaptionTokens(positions, token_ids)]"
        )
    config = model.config
    if family == "VisionEncoderDecoderModel":
        start = config.decoder_start_token_id
        stops = {config.eos_token_id, config.pad_token_id}
        return TextDecoding(family, model, model, start, _ids(stops), "decoder_input_ids")
    if family == "GitForCausalLM":
        start = getattr(model.generation_config, "bos_token_id", None) or config.bos_token_id
        stops = {config.eos_token_id, config.pad_token_id, getattr(model.generation_config, "eos_token_id", None)}
        return TextDecoding(family, model, model, start, _ids(stops), "input_ids", image_tokens_first=True)
    # BLIP: BOS is the text config's [DEC] token, the text ends at SEP
    text = config.text_config
    stops = {text.sep_token_id, text.pad_token_id}
    if family == "BlipForConditionalGeneration":
        return TextDecoding(family, model, model, text.bos_token_id, _ids(stops), "input_ids")
    return TextDecoding(family, model, DecoderLogits(model, "text_decoder"), text.bos_token_id, _ids(stops), "decoder_input_ids")


def _ids(values: set) -> frozenset[int]:
    out: set[int] = set()
    for v in values:
        if isinstance(v, (list, tuple)):
            out.update(int(x) for x in v)
        elif v is not None:
            out.add(int(v))
    return frozenset(out)


def merge_subwords(tokens: list[str]) -> list[list[int]]:
    """Group token indices into words: WordPiece ``##x`` continues a word; byte-level BPE
    ``Ġx`` and SentencePiece ``▁x`` start one (word-level vocabularies: one token a word)."""
    groups: list[list[int]] = []
    markers = any(t.startswith(("Ġ", "▁")) for t in tokens)
    for i, tok in enumerate(tokens):
        starts = tok.startswith(("Ġ", "▁")) if markers else not tok.startswith("##")
        if groups and not starts:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def _clean(token: str) -> str:
    return token.lstrip("Ġ▁").removeprefix("##")


@dataclass
class TeacherForced:
    """One text, ready for the single teacher-forced forward.

    ``decoder_ids`` ``(1, T)`` is fed to the model; ``token_ids`` are the text's tokens (the
    ones explained), ``tokens`` their strings, ``words`` the merged words, ``target`` a
    :class:`CaptionTokens` giving each word's summed log-probability.
    """

    decoder_ids: torch.Tensor
    token_ids: list[int]
    tokens: list[str]
    words: list[str]
    groups: list[list[int]]
    target: CaptionTokens


def text_ids(decoding: TextDecoding, tokenizer: Any, text: str) -> torch.Tensor:
    """``[start, *tokens(text)]`` for a user-given caption or answer."""
    body = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not body:
        raise InputError("the text is empty; pass some words, or None to let the model generate them")
    return torch.tensor([decoding.start, *body])


def teacher_forced(decoding: TextDecoding, tokenizer: Any, ids: torch.Tensor, whole: bool = False) -> TeacherForced:
    """Cut ``ids`` (generated or given, with or without the start token) at its first stop
    token and build the teacher-forced decoder input and the per-word target.

    ``whole=True`` gives one group for the whole text (a VQA answer's log-probability).
    """
    ids = ids.detach().cpu().flatten()
    if len(ids) == 0 or int(ids[0]) != decoding.start:
        ids = torch.cat([torch.tensor([decoding.start]), ids])
    body: list[int] = []
    for t in range(1, len(ids)):
        if int(ids[t]) in decoding.stops:
            break  # the text ends at the first special token (EOS/SEP, padding)
        body.append(t)
    if not body:
        raise TargetError("the model generated no words: nothing to explain")
    token_ids = [int(ids[t]) for t in body]
    tokens = list(tokenizer.convert_ids_to_tokens(token_ids))
    groups = merge_subwords(tokens)
    words = ["".join(_clean(tokens[i]) for i in g) for g in groups]
    if whole:
        groups, words = [list(range(len(token_ids)))], [" ".join(words)]
    decoder_ids = ids[None, : body[-1]]  # position t predicts token t + 1
    length = decoder_ids.shape[1] if decoding.image_tokens_first else None
    target = CaptionTokens([t - 1 for t in body], token_ids, groups, text_length=length)
    return TeacherForced(decoder_ids, token_ids, tokens, words, groups, target)


def generated_argmax(logits: torch.Tensor, decoding: TextDecoding, positions: list[int]) -> list[int]:
    """The teacher-forced forward's argmax at each explained position, over the tokens the
    model's generation config allows (``suppress_tokens`` masked)."""
    logits = logits.clone()
    suppress = {  # BLIP generates through its text decoder's own generation config
        int(t) for m in decoding.model.modules() for t in (getattr(getattr(m, "generation_config", None), "suppress_tokens", None) or [])
    }
    if suppress:
        logits[..., sorted(suppress)] = -float("inf")
    return [int(logits[p].argmax()) for p in positions]
