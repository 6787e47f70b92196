"""Cheaper teacher-forced passes for per-word maps, with the same maps.

* :func:`kept_logits`: a causal VLM's forward computes the LM head on the answer's positions
  only (``logits_to_keep``): those rows are the same numbers, and the batched backward of K
  words no longer multiplies ``K × L × vocab`` cotangents (every image and prompt position)
  with the head.
* :class:`GenerateThenForce`: a ``VisionEncoderDecoderModel`` captioner's image encoder runs
  **once** per call: ``generate()`` (no-grad) reads the encoder output of the explained
  forward, and the teacher-forced decoder reads the same output. Before, ``generate()`` ran
  the encoder and the explained forward ran it again. The hooked encoder layer fires once,
  inside the explained forward, so its activations and gradients are those of the two-pass
  call; the caption is ``generate()``'s on the same encoder output. Its teacher-forced decoder
  runs with :func:`~mmcam.adapters.cross_attention.low_rank_cross_attention` (GPT-2 decoders:
  the encoder-side backward of the cross-attention through its T query rows, ~5x fewer
  multiply-adds; the keys and values ``generate()`` projected from the same encoder output are
  read, not projected again) and without a key/value cache (nothing reads it); where the decoder's logits are
  its linear head's output, the caption's word scores take the head's backward on the T scored
  rows once (:func:`head_rows`) instead of once per word. Scores bit for bit, maps to float32
  round-off (``tests/adapters/test_cross_attention.py``).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from ..targets.base import logits_of
from ..targets.text import CaptionTokens
from .cross_attention import cached_keys_values, low_rank_cross_attention
from .hf_text import TeacherForced, TextDecoding, teacher_forced

__all__ = ["kept_logits", "GenerateThenForce", "shares_encoder", "head_rows"]


def kept_logits(model: nn.Module, method: str, count: int, forward_only: tuple[str, ...] = ()) -> dict[str, int]:
    """``{"logits_to_keep": count}`` for a gradient or CAM method (not ``forward_only`` ones,
    which read the logits at the image positions, nor attention methods) where ``model.forward``
    takes it; else ``{}``. With it, logit row ``i`` predicts answer token ``i``."""
    from .. import methods

    if method in forward_only or getattr(methods.get(method), "attention", False):
        return {}
    return {"logits_to_keep": count} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}


def shares_encoder(model: nn.Module, method: str) -> bool:
    """Whether :class:`GenerateThenForce` serves this call: a ``VisionEncoderDecoderModel`` and a
    method that takes one backward and no extra forwards (not perturbation or attention methods)."""
    from .. import methods

    chosen = methods.get(method)
    return type(model).__name__ == "VisionEncoderDecoderModel" and chosen.needs_grads and not getattr(chosen, "attention", False)


class GenerateThenForce(nn.Module):
    """A view of a ``VisionEncoderDecoderModel`` (its own children under their own names, nothing
    copied) whose ``forward(pixel_values)`` runs the encoder once, ``generate(encoder_outputs=...)``
    under no-grad, cuts the text at its first stop token (:func:`~mmcam.adapters.hf_text.teacher_forced`)
    and returns the teacher-forced decoder's ``{"logits": ...}`` on the same encoder output (GPT-2
    cross-attention routed through :func:`~mmcam.adapters.cross_attention.low_rank_cross_attention`).
    :attr:`target` scores the caption generated in that forward (``forced`` holds its tokens)."""

    def __init__(self, model: nn.Module, decoding: TextDecoding, tokenizer: Any, **generate: Any):
        super().__init__()
        object.__setattr__(self, "_wrapped", model)  # not a child: layer names stay the model's own
        for name, child in model.named_children():
            self.add_module(name, child)
        self.config = model.config
        self.training = model.training  # the flag only: .train() would recurse into the model's modules
        self._decoding, self._tokenizer, self._generate = decoding, tokenizer, generate
        self.forced: TeacherForced | None = None
        self.head: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # (hidden, head weight, logits) of the forward
        self.target = _ForcedTarget(self)

    def forward(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        model = self._wrapped
        encoded = model.encoder(pixel_values=pixel_values, return_dict=True)
        with torch.no_grad():
            generated = model.generate(encoder_outputs=encoded, return_dict_in_generate=True, **self._generate)
        ids = generated.sequences[0]
        self.forced = teacher_forced(self._decoding, self._tokenizer, ids)
        head = model.decoder.get_output_embeddings() if hasattr(model.decoder, "get_output_embeddings") else None
        seen: dict[str, torch.Tensor] = {}
        handle = head.register_forward_hook(lambda _m, args, out: seen.update(hidden=args[0], logits=out)) if isinstance(head, nn.Linear) else None
        try:
            with low_rank_cross_attention(model.decoder, cached_keys_values(getattr(generated, "cache", None))):  # only while the graph is built
                out = model(encoder_outputs=encoded, decoder_input_ids=self.forced.decoder_ids.to(ids.device), use_cache=False)
        finally:
            if handle is not None:
                handle.remove()
        # the logits are the head's output itself (no scaling after it): the target may take the head's rows
        self.head = (seen["hidden"], head.weight, out.logits) if seen.get("logits") is out.logits else None
        return {"logits": out.logits}


def head_rows(target: CaptionTokens, hidden: torch.Tensor, weight: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``target(logits)`` for ``logits = hidden Wᵀ (+ b)`` (a linear LM head), with the same values
    and the head's backward on the T scored rows once instead of once per word.

    ``d log p(y_t) / d h_t = W_{y_t} − p_t W`` (``p_t`` the softmax of row ``t``) does not depend on the
    word, so it is formed once (``T × V × D``) and each score is ``log p(y_t)`` (the value, detached,
    computed as :class:`~mmcam.targets.CaptionTokens` does) plus ``(h_t − h_t.detach()) · slope_t``,
    which is zero in value and has exactly that gradient. The ordinary backward multiplies every
    word's ``(T, V)`` cotangent with ``W``: ``K × T × V × D``."""
    positions, tokens = target.positions, target.token_ids
    with torch.no_grad():
        log_probs = logits.log_softmax(-1)[:, positions, tokens]  # (B, T): CaptionTokens' own values
        probs = logits[:, positions].softmax(-1)
        slope = weight[tokens] - torch.matmul(probs.to(weight.dtype), weight)  # (B, T, D)
    rows = hidden[:, positions]
    per_token = log_probs + ((rows - rows.detach()) * slope).sum(-1).to(log_probs.dtype)
    return torch.stack([per_token[:, g].sum(1) for g in target.groups], 1)


class _ForcedTarget:
    """The caption target of the view's last forward (:class:`mmcam.targets.CaptionTokens`)."""

    def __init__(self, view: GenerateThenForce):
        self.view = view

    def __call__(self, output: Any) -> torch.Tensor:
        if self.view.forced is None:
            raise RuntimeError("the caption target is read after the view's forward")
        target, head = self.view.forced.target, self.view.head
        if head is not None and type(target) is CaptionTokens and target.log_prob and target.text_length is None and logits_of(output) is head[2]:
            return head_rows(target, *head)
        return target(output)

    def __repr__(self) -> str:
        return repr(self.view.forced.target) if self.view.forced is not None else "CaptionTokens(generated in the forward)"
