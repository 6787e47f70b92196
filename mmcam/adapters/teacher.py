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
  call; the caption is ``generate()``'s on the same encoder output.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from .hf_text import TeacherForced, TextDecoding, teacher_forced

__all__ = ["kept_logits", "GenerateThenForce", "shares_encoder"]


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
    and returns the teacher-forced decoder's ``{"logits": ...}`` on the same encoder output.
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
        self.target = _ForcedTarget(self)

    def forward(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        model = self._wrapped
        encoded = model.encoder(pixel_values=pixel_values, return_dict=True)
        with torch.no_grad():
            ids = model.generate(encoder_outputs=encoded, **self._generate)[0]
        self.forced = teacher_forced(self._decoding, self._tokenizer, ids)
        out = model(encoder_outputs=encoded, decoder_input_ids=self.forced.decoder_ids.to(ids.device))
        return {"logits": out.logits}


class _ForcedTarget:
    """The caption target of the view's last forward (:class:`mmcam.targets.CaptionTokens`)."""

    def __init__(self, view: GenerateThenForce):
        self.view = view

    def __call__(self, output: Any) -> torch.Tensor:
        if self.view.forced is None:
            raise RuntimeError("the caption target is read after the view's forward")
        return self.view.forced.target(output)

    def __repr__(self) -> str:
        return repr(self.view.forced.target) if self.view.forced is not None else "CaptionTokens(generated in the forward)"
