"""LeGrad (``method="legrad"``): the sensitivity of each layer's prediction to that layer's
attention map, for ViT classifiers and CLIP.

Bousselham, Boggust, Chaybouti, Strobelt & Kuehne, *LeGrad: An Explainability Method for
Vision Transformers via Feature Formation Sensitivity*, 2024 — https://arxiv.org/abs/2404.03214

For every layer ``l`` the model's own read-out (final norm, pooling token, head / projection)
is applied to that layer's output tokens ``z^l``, giving the layer's score ``s^l`` (the score
the model would produce if it stopped at layer l). The map is::

    E^l = mean_{heads h} mean_{rows i} ReLU(∂s^l / ∂A^l)[h, i, :]        (A^l: H × N × N)
    E   = mean_{l ≥ start} E^l        restricted to the patch tokens, on the patch grid

(the gradient alone, not gradient × attention; every query row, CLS included, is averaged).

The explained score of a target is read on the model's output (a class logit, CLIP's
``logits_per_image``); to carry it to layer ``l`` the target's gradient with respect to that
output at the explained forward, ``v = ∂score/∂output``, is the fixed read-out:
``s^l = ⟨v, head(z^l)⟩``. For the targets that select output entries (a class logit, the
top-k classes, an image-text similarity) this is exactly the target on layer l's output, with
the classes chosen on the model's own output (not re-chosen per layer); for a non-linear
target it is its linearisation at the explained forward.

Supported: Hugging Face ViT-style classifiers whose logits are ``classifier(layernorm(z)[:, 0])``
(ViT, DeiT without teacher) and ``CLIPModel`` (``exp(τ) · cos(proj(post_layernorm(z[:, 0])),
t)``); the read-out is checked to reproduce the model's own output on the explained forward.
Use ``explain_classification(vit, image, method="legrad")``,
``explain_similarity(clip, processor, image, texts, method="legrad")`` or
``mmcam.CAM(model, method="legrad")``. ``LeGrad(start=-2)`` uses only the last two layers
(the reference implementation's default for large OpenCLIP models).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ..errors import ForwardError, GradientError, MethodError, MMCamError
from .base import Method

__all__ = ["LeGrad", "readout", "legrad_map"]

Head = Callable[[torch.Tensor], dict[str, torch.Tensor]]


class LeGrad(Method):
    """Bousselham et al.'s LeGrad (see the module docstring); ``start``: first layer used
    (negative counts from the last; default 0, every layer)."""

    name: ClassVar[str] = "legrad"
    attention: ClassVar[bool] = True

    def __init__(self, start: int = 0):
        self.start = int(start)

    def cam(self, acts, grads, ctx):
        raise MethodError("'legrad' builds its maps from every layer's attention; run it through a task call or mmcam.CAM")

    def run_attention(self, model: Any, reshape: Any, grad_mode: str, batch: Any, targets: Any, size: "tuple[int, int] | None") -> Any:
        return explain_legrad(model, self, reshape, batch, targets, size)

    def __repr__(self) -> str:
        return f"LeGrad(start={self.start})"


def readout(model: Any, output: Any) -> tuple[list[torch.Tensor], list[torch.Tensor], Head]:
    """``(attentions, layer outputs, head)`` of one forward run with ``output_attentions`` and
    ``output_hidden_states``: attention map ``l`` ``(B, H, N, N)``, the tokens ``z^l`` leaving
    layer ``l`` ``(B, N, d)``, and ``head(z)`` → the output fields the model computes from its
    last layer's tokens."""
    vision = getattr(output, "vision_model_output", None)
    if vision is not None and hasattr(model, "visual_projection") and hasattr(model, "logit_scale"):
        tower, text = model.vision_model, output.text_embeds.detach()
        scale = model.logit_scale.exp()
        bias = getattr(model, "logit_bias", None)
        if bias is not None:
            raise MethodError(
                f"LeGrad here reads CLIP's CLS-token pooling; {type(model).__name__} pools otherwise (SigLIP's attention pooling). Use 'gradcam' or 'gae'"
            )

        def clip_head(z: torch.Tensor) -> dict[str, torch.Tensor]:
            image = F.normalize(model.visual_projection(tower.post_layernorm(z[:, 0])), dim=-1)
            return {"image_embeds": image, "logits_per_image": scale * image @ text.T}

        return list(vision.attentions), list(vision.hidden_states[1:]), clip_head
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    classifier, norm = getattr(model, "classifier", None), getattr(base, "layernorm", None)
    if isinstance(classifier, torch.nn.Module) and isinstance(norm, torch.nn.Module) and getattr(output, "hidden_states", None):

        def vit_head(z: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"logits": classifier(norm(z)[:, 0])}

        return list(output.attentions), list(output.hidden_states[1:]), vit_head
    raise MethodError(
        f"method 'legrad' reads each layer's prediction through the model's own head; it knows HF ViT-style classifiers "
        f"(classifier(layernorm(z)[:, 0])) and CLIPModel, not {type(model).__name__}. Use 'gae' or a CAM method"
    )


def _grads(scores: torch.Tensor, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """``(K, *t.shape)`` per tensor (zeros where unused), the graph kept for the next layer."""
    from ..engine.gradients import batched_grads, looped_grads

    try:
        grads = batched_grads(scores, tensors, retain=True) if scores.shape[1] > 1 else looped_grads(scores, tensors)
    except RuntimeError:
        grads = looped_grads(scores, tensors)
    return [g if g is not None else t.new_zeros((scores.shape[1], *t.shape)) for t, g in zip(tensors, grads)]


def legrad_map(
    attentions: list[torch.Tensor], layer_outputs: list[torch.Tensor], head: Head, readout_vectors: dict[str, torch.Tensor], start: int = 0
) -> torch.Tensor:
    """``(K, B, N)``: ``mean_l mean_{h,i} ReLU(∂s^l/∂A^l)`` with ``s^l = Σ_f ⟨v_f, head(z^l)_f⟩``
    (``readout_vectors`` ``{field: (K, B, ...)}``), for the layers from ``start``."""
    layers = list(range(len(attentions)))[start:]
    if not -len(attentions) <= start < len(attentions):
        raise MethodError(f"start={start} leaves no layer of {len(attentions)}; pass 0 (every layer) or -n for the last n")
    total = None
    for layer in layers:
        fields = head(layer_outputs[layer])
        s = sum((v * fields[name][None]).flatten(2).sum(-1) for name, v in readout_vectors.items())  # (K, B)
        grad = _grads(s.T, [attentions[layer]])[0]  # (K, B, H, N, N)
        e = grad.clamp(min=0).mean(2).mean(2)  # heads, then query rows
        total = e if total is None else total + e
    return total / len(layers)


def explain_legrad(model: Any, method: LeGrad, reshape: Any, batch: Any, targets: Any, size: "tuple[int, int] | None") -> Any:
    """One forward with attentions and hidden states, the read-out vectors, each layer's
    gradient (one batched vector-Jacobian product per layer), then the CAM engine's
    upsampling and normalisation."""
    from ..engine.attention import eager_attention, token_explanation
    from ..engine.explanation import Explanation, detached
    from ..engine.guard import forward_message, transient_capture_hooks
    from ..engine.hooks import frozen_parameters

    if not hasattr(model, "set_attn_implementation"):
        raise MethodError(
            f"method 'legrad' reads every layer's attention probabilities and prediction; {type(model).__name__} is not a Hugging Face "
            "ViT-style classifier or CLIPModel. Use a CAM method (gradcam, layercam, ...)"
        )
    with eager_attention(model), transient_capture_hooks(model), frozen_parameters(model, requires_grad=True), torch.enable_grad():
        try:
            value = batch.value
            output = (
                model(**value, output_attentions=True, output_hidden_states=True)
                if isinstance(value, dict)
                else model(value, output_attentions=True, output_hidden_states=True)
            )
        except MMCamError:
            raise
        except (RuntimeError, ValueError, TypeError, IndexError, KeyError, AttributeError) as error:
            raise ForwardError(forward_message(model, batch, error)) from error
        attentions, layer_outputs, head = readout(model, output)
        fields = head(layer_outputs[-1])
        for name, value in fields.items():  # the read-out is the model's own
            theirs = getattr(output, name)
            if theirs.shape != value.shape or not torch.allclose(theirs, value, rtol=1e-4, atol=1e-5):
                raise MethodError(
                    f"{type(model).__name__}'s {name} is not the read-out LeGrad knows (head(last layer) differs from the output); use 'gae' or a CAM method"
                )
        if not targets.resolved:
            targets.resolve_default(output)
        scores = targets.scores(output)
        k, b = scores.shape[1], scores.shape[0]
        titles = [f"attention x{len(attentions[method.start :])} (LeGrad)"]
        if k == 0:
            zeros = scores.new_zeros((b, 0, *(size or (1, 1))))
            return Explanation(zeros, zeros, scores.detach(), method.name, titles, [[] for _ in range(b)], detached(output))
        # v = ∂score/∂(each read-out field), the fields taken as independent leaves (CLIP's
        # logits_per_image is computed from image_embeds: the graph would count it twice)
        leaf = copy.copy(output)
        for name in fields:
            setattr(leaf, name, getattr(output, name).detach().requires_grad_(True))
        leaf_scores = targets.scores(leaf)
        if not leaf_scores.requires_grad:
            raise GradientError(f"the explained scores read none of {', '.join(fields)}; LeGrad carries those fields to every layer")
        vectors = {n: v.detach() for n, v in zip(fields, _grads(leaf_scores, [getattr(leaf, n) for n in fields]))}
        relevance = legrad_map(attentions, layer_outputs, head, vectors, method.start).detach()  # (K, B, N)
    return token_explanation(relevance, reshape, size, scores.detach(), method.name, titles, targets, output)
