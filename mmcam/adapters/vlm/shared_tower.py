"""One vision-tower pass per explained call of a causal VLM: ``generate()`` and the teacher-forced
forward read the same image features.

Before, ``explain_generation`` ran ``generate()`` (the vision tower + projector, then the language
model) and then the explained forward, which ran the tower again on the same pixels. For a
SmolVLM-256M-shaped Idefics3 the SigLIP tower on 5 tiles is ~80 % of ``generate()``'s time
(docs/vlm.md), so the second pass was most of the overhead. transformers' own ``generate()``
computes the features before the prefill with the base model's ``get_image_features`` and
hands them to the forward as ``mm_encoder_outputs={"image": ...}``; every supported causal
family's forward takes that argument instead of ``pixel_values``. Here:

1. :func:`image_features` calls ``base_model.get_image_features`` with the inputs its signature
   names (as ``generate()`` does), once, with autograd on: a CAM layer hooked inside the tower or
   projector fires there, and the graph runs from that layer (the prefix cut) to the features.
2. ``generate()`` gets :func:`with_features` inputs: ``pixel_values`` replaced by the features,
   detached (its prefill and decode steps are what they were: the same features, the same
   other inputs, so the same tokens).
3. The teacher-forced forward gets the same features, on the graph: the hooked layer's
   activations and gradients are those of the two-pass call.

:class:`SharedTower` is that call as a per-call view for :class:`mmcam.CAM` (as
:class:`mmcam.adapters.teacher.GenerateThenForce` is for a ``VisionEncoderDecoderModel``);
:func:`shares_tower` says where it applies: a gradient CAM method (one backward, no extra
forwards), hooked layers outside the language model, a model whose forward takes
``mm_encoder_outputs`` and whose base model has ``get_image_features``. Nothing of the model is
changed: no hook, attribute or cache is added (the features live in the view, one call long).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["PIXEL_KEYS", "shares_tower", "image_features", "with_features", "SharedTower"]

#: the image inputs ``generate()`` replaces by ``mm_encoder_outputs`` (transformers' names)
PIXEL_KEYS = ("pixel_values", "pixel_values_images", "image_patches")


def _base(model: nn.Module) -> nn.Module | None:
    base = getattr(model, "base_model", None)
    return base if callable(getattr(base, "get_image_features", None)) else None


def supports_features(model: nn.Module) -> bool:
    """Whether ``model`` takes precomputed image features: its forward has ``mm_encoder_outputs``,
    it reads images, its base model (a submodule) has ``get_image_features`` and its
    ``generate()`` is transformers' own, which hands ``mm_encoder_outputs`` to the prefill."""
    from transformers import GenerationMixin

    base = _base(model)
    if getattr(model.config, "is_encoder_decoder", False) or base is None or base is model:
        return False
    if getattr(type(model), "generate", None) is not GenerationMixin.generate:  # BLIP-2's own generate() takes pixel_values
        return False
    takes = "mm_encoder_outputs" in inspect.signature(model.forward).parameters
    return takes and "image" in tuple(getattr(model, "input_modalities", ()) or ())


def _language_model(model: nn.Module) -> list[nn.Module]:
    getter = getattr(model, "get_decoder", None)
    decoder = getter() if callable(getter) else None
    head = getattr(model, "lm_head", None)
    return [m for m in (decoder, head) if isinstance(m, nn.Module)]


def shares_tower(model: nn.Module, method: str, layers: list[tuple[str, nn.Module]]) -> bool:
    """Whether :class:`SharedTower` serves this call: :func:`supports_features`, a method that
    takes one backward and no extra forwards (not perturbation or attention methods), and no
    hooked layer in or around the language model (``get_decoder()``, ``lm_head``: they run again
    in every ``generate()`` step); the layouts' default layers are in the tower or projector."""
    from ... import methods

    chosen = methods.get(method)
    if not supports_features(model) or not chosen.needs_grads or getattr(chosen, "attention", False):
        return False
    text = {id(m) for m in _language_model(model)}
    if not text:
        return False
    inside = {id(m) for t in _language_model(model) for m in t.modules()}
    return all(id(module) not in inside and not any(id(m) in text for m in module.modules()) for _, module in layers)


def image_features(model: nn.Module, inputs: dict[str, Any]) -> Any:
    """``base_model.get_image_features`` on the inputs its signature names (``pixel_values``,
    ``image_grid_thw``, ``pixel_attention_mask``, ...), as ``generate()`` calls it."""
    base = _base(model)
    names = inspect.signature(base.get_image_features).parameters
    return base.get_image_features(**{k: v for k, v in inputs.items() if k in names and k != "kwargs"}, return_dict=True)


def _detached(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, (list, tuple)) and not hasattr(value, "keys"):
        return type(value)(_detached(v) for v in value)
    if hasattr(value, "keys"):  # a ModelOutput
        return type(value)(**{k: _detached(v) for k, v in value.items()})
    return value


def with_features(inputs: dict[str, Any], features: Any, detach: bool = False) -> dict[str, Any]:
    """``inputs`` with the pixels replaced by ``mm_encoder_outputs={"image": features}`` (a new
    dict each call: the forward may fill it); the other inputs (``image_grid_thw`` for M-RoPE
    positions, masks, token types) kept."""
    out = {k: v for k, v in inputs.items() if k not in PIXEL_KEYS}
    out["mm_encoder_outputs"] = {"image": _detached(features) if detach else features}
    return out


class SharedTower(nn.Module):
    """A view of a causal VLM (its own children under their own names, nothing copied) whose
    ``forward(**inputs)`` runs :func:`image_features` once, ``generate(inputs)`` on them detached
    (``generate``: inputs -> answer token ids), ``force(inputs, answer_ids)`` -> the teacher-forced
    inputs (pixels still in them) and the model on those with the features on the graph; returns
    ``{"logits": ...}``. :attr:`answer_ids` and :attr:`target` (``target_for(answer_ids)``) hold
    that forward's answer and target; :attr:`lazy_target` reads the latter for :class:`mmcam.CAM`."""

    def __init__(
        self,
        model: nn.Module,
        generate: Callable[[dict[str, Any]], list[int]],
        force: Callable[[dict[str, Any], list[int]], dict[str, Any]],
        target_for: Callable[[list[int]], Any],
    ):
        super().__init__()
        object.__setattr__(self, "_wrapped", model)  # not a child: layer names stay the model's own
        for name, child in model.named_children():
            self.add_module(name, child)
        self.config = model.config
        self.training = model.training  # the flag only: .train() would recurse into the model's modules
        self._generate, self._force, self._target_for = generate, force, target_for
        self.answer_ids: list[int] | None = None
        self.target: Any = None
        self.lazy_target = _LazyTarget(self)

    def forward(self, **inputs: Any) -> dict[str, torch.Tensor]:
        model = self._wrapped
        features = image_features(model, inputs)
        with torch.no_grad():
            self.answer_ids = self._generate(with_features(inputs, features, detach=True))
        self.target = self._target_for(self.answer_ids)
        out = model(**with_features(self._force(inputs, self.answer_ids), features))
        return {"logits": out.logits}


class _LazyTarget:
    """The target of the view's last forward."""

    def __init__(self, view: SharedTower):
        self.view = view

    def __call__(self, output: Any) -> torch.Tensor:
        if self.view.target is None:
            raise RuntimeError("the answer's target is read after the view's forward")
        return self.view.target(output)

    def __repr__(self) -> str:
        return repr(self.view.target) if self.view.target is not None else "CaptionTokens(generated in the forward)"
