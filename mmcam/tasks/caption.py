"""Per-word caption maps: ``explain_caption``.

``generate()`` runs under no-grad, so the caption is generated first and then re-run as one
teacher-forced forward; every word's log-probability is a target and all words' maps come
from that single forward (one batched backward). Sub-word tokens are merged into words (a
word's score is the sum of its tokens' log-probabilities).

Supported: HF ``VisionEncoderDecoderModel`` (any vision encoder + text decoder). The map is
taken at the vision encoder's last block (pre-attention norm), where the decoder's
cross-attention reads the patch tokens.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..adapters.layers import default_layers
from ..engine import CAM
from ..errors import InputError, TargetError
from ..explain import TaskExplanation, prepare_image
from ..render.overlay import overlay, save_png
from ..targets import CaptionTokens

__all__ = ["CaptionExplanation", "explain_caption", "merge_subwords"]


@dataclass
class CaptionExplanation(TaskExplanation):
    """``items`` are the caption's words; ``maps[k]`` the map of word k."""

    task: str = "caption"
    tokens: list[str] = field(default_factory=list)

    @property
    def caption(self) -> str:
        return " ".join(self.items)

    def save(self, out_dir: "str | Path", stem: str = "explanation", scale: int = 1) -> list[Path]:
        """Also writes ``{stem}_strip.png``: one thumbnail per word, in caption order."""
        paths = super().save(out_dir, stem, scale)
        if self.items:
            from ..render.text import caption_strip

            paths.append(save_png(caption_strip(self.image, self.maps, self.items), Path(out_dir) / f"{stem}_strip.png"))
        return paths


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


def _encoder_layers(model: nn.Module, pixel_values: torch.Tensor) -> list[str]:
    encoder = getattr(model, "encoder", None)
    if encoder is None:
        raise InputError(
            f"explain_caption supports HF VisionEncoderDecoderModel; {type(model).__name__} has no .encoder. "
            "Pass layers= (a vision-encoder layer) and build the target with mmcam.targets.CaptionTokens"
        )
    return [f"encoder.{name}" for name in default_layers(encoder, {"pixel_values": pixel_values})]


def explain_caption(
    model: nn.Module,
    processor: Any,
    image: Any,
    caption: str | None = None,
    *,
    method: str = "gradcam",
    layers: Any = None,
    max_length: int | None = None,
) -> CaptionExplanation:
    """One map per word of the model's caption (or of ``caption``, teacher-forced)."""
    if type(model).__name__ != "VisionEncoderDecoderModel" and layers is None:
        raise InputError(
            f"explain_caption supports HF VisionEncoderDecoderModel; got {type(model).__name__}. For other "
            "captioners pass layers= and use mmcam.CAM with mmcam.targets.CaptionTokens"
        )
    inputs, shown = prepare_image(image, processor)
    pixel_values = inputs["pixel_values"] if isinstance(inputs, dict) else inputs
    tokenizer = getattr(processor, "tokenizer", processor)
    start = model.config.decoder_start_token_id
    if caption is None:
        with torch.no_grad():
            kwargs = {"max_length": max_length} if max_length else {}
            ids = model.generate(pixel_values=pixel_values, **kwargs)[0]
    else:
        body = tokenizer(caption, add_special_tokens=False)["input_ids"]
        if not body:
            raise InputError("the caption is empty; pass some words or caption=None to generate one")
        ids = torch.tensor([start, *body, model.config.eos_token_id])
    if ids[0].item() != start:
        ids = torch.cat([torch.tensor([start]), ids])
    special = {model.config.pad_token_id, model.config.eos_token_id, start}
    body_positions = []
    for t in range(1, len(ids)):
        if int(ids[t]) in special:
            break  # the caption ends at the first special token (EOS, padding)
        body_positions.append(t)
    if not body_positions:
        raise TargetError("the model generated no words: nothing to explain")
    decoder_input = ids[None, : body_positions[-1]]  # position t predicts token t + 1
    token_ids = [int(ids[t]) for t in body_positions]
    tokens = tokenizer.convert_ids_to_tokens(token_ids)
    groups = merge_subwords(tokens)
    words = ["".join(_clean(tokens[i]) for i in g) for g in groups]
    target = CaptionTokens([t - 1 for t in body_positions], token_ids, groups)
    chosen = layers if layers is not None else _encoder_layers(model, pixel_values)
    forward_inputs = {"pixel_values": pixel_values, "decoder_input_ids": decoder_input}
    exp = CAM(model, chosen, method=method)(forward_inputs, [target])
    logits = exp.output.logits[0]
    predicted = [int(logits[t - 1].argmax()) for t in body_positions]
    return CaptionExplanation(
        image=shown,
        maps=exp.maps[0],
        items=words,
        scores=exp.scores[0],
        method=exp.method,
        layers=exp.layers,
        meta={
            "caption": " ".join(words),
            "generated": caption is None,
            "token_ids": token_ids,
            "teacher_forced_argmax_matches": predicted == token_ids,
            "word_log_probs": [round(float(s), 5) for s in exp.scores[0]],
        },
        tokens=tokens,
    )
