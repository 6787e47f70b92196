"""AttnLRP (``method="attnlrp"``): layer-wise relevance propagation with attention-aware rules,
for Hugging Face ViT-style classifiers.

Achtibat, Hatefi, Dreyer, Jain, Wiegand, Lapuschkin & Samek, *AttnLRP: Attention-Aware
Layer-Wise Relevance Propagation for Transformers*, ICML 2024 — https://arxiv.org/abs/2402.05602

The explained score ``f`` is redistributed backwards, layer by layer, so that each input
token receives a share ``R_n`` of it. The rules (written here in the Gradient × Input form
the paper's efficient implementation uses: every rule becomes a modified local gradient,
and ``R = x ⊙ ∂̃f/∂x`` at any tensor ``x``):

* linear layers (ε-rule, ε → 0; the bias keeps its share): ``R_x = x ⊙ Wᵀ(R_z / z)`` — the
  ordinary gradient;
* element-wise non-linearities (GELU, ReLU, tanh; identity rule, eq. 9): ``R_in = R_out``,
  i.e. the local gradient ``φ(x) / x``;
* LayerNorm (identity rule on the normalisation): the standard deviation is a constant,
  ``y = (x − μ) / sg(σ) · w + b`` — mean-centring and scaling stay linear;
* matrix products of two inputs (uniform rule, eq. 7): each factor takes half,
  ``A·V`` and ``Q·Kᵀ`` — the gradients reaching the value projection are halved and those
  reaching the query and key projections quartered (half of ``A``'s half);
* softmax (Prop. 3.1, deep Taylor decomposition at the input, bias absorbed):
  ``R_S = S ⊙ (R_A − A ⊙ Σ_j R_A)`` — the ordinary gradient.

The map of a target is ``R_n = Σ_d h⁰_{n,d} · ∂̃f/∂h⁰_{n,d}`` at the encoder's input tokens
``h⁰`` (patch embeddings plus position embeddings), the patch tokens folded onto the grid.
Relevance is *conserved* through every rule but two: biases keep ``b ⊙ ∂̃f/∂z`` and the softmax
keeps ``Σ R_A − Σ R_S`` (Prop. 3.1); the tests check ``Σ_n R_n`` + those terms ``= f``.

The model is left as found: the rules are forward hooks that return the module's own output
value with the rule's gradient (``y + (r(x) − sg(r(x)))``), removed after the call. Supported:
HF ViT-style image classifiers (ViT, DeiT), ViLT answers (``ViltForQuestionAnswering``:
its text and image tokens enter one encoder; the map keeps the image tokens) — models with
separate ``q_proj``/``k_proj``/``v_proj`` or ``query``/``key``/``value`` projections and a
``classifier`` head — and ``VisionEncoderDecoderModel`` captions (the rules run through the
image encoder *and* the text decoder, cross-attention included; the map is at the image
encoder's input tokens). GPT-2 decoders fuse the projections in one ``c_attn`` (query | key |
value; key | value in cross-attention, beside ``q_attn``): each slice gets its factor
(¼, ¼, ½). Use ``explain_classification(vit, image, method="attnlrp")``,
``explain_vqa(vilt, processor, image, question, method="attnlrp")``,
``explain_caption(captioner, processor, image, method="attnlrp")`` or
``mmcam.CAM(vit, method="attnlrp")``.

``method="attnlrp-shift"`` (:class:`ShiftedAttnLRP`) is the same relevance averaged over the
image moved by sub-patch shifts, exactly as ``gae-shift`` averages ``gae``
(:func:`mmcam.engine.attention.over_shifts`): ``phases`` shifts per axis (default 3: ``0, p/3,
2p/3`` of a ``p``-pixel patch), every moved image explained with the unshifted pass's
targets, each map moved back, the ``phases²`` maps averaged and min-max scaled,
``M = normalize(1/n² Σ unshift(M_lrp(shift(x))))``. Cost: ``phases²`` forwards + batched
backwards under the rules. The patent notice below applies to it as to ``attnlrp``.

**Patent notice.** Layer-wise relevance propagation is covered by patents held by
Fraunhofer-Gesellschaft (the LRP method family; the authors' reference implementation, LXT,
is released under the Clear BSD License, which states that *no patent rights* are granted
with it). This implementation was written from the paper; it grants no patent rights either.
Check the patent situation for your use, in particular commercial use.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import ForwardError, MethodError, MMCamError
from .base import Method

__all__ = ["AttnLRP", "ShiftedAttnLRP", "lrp_rules", "token_relevance"]

_ACTIVATIONS = ("GELU", "GELUActivation", "NewGELUActivation", "QuickGELUActivation", "FastGELUActivation", "ReLU", "Tanh", "SiLU", "SiLUActivation")
_QK, _V = ("q_proj", "k_proj", "query", "key"), ("v_proj", "value")
_FUSED = ("c_attn", "q_attn")  # GPT-2's Conv1D projections (query|key|value fused; see _fused_factors)
_ENCODER_DECODER = ("VisionEncoderDecoderModel",)  # captioners: the image tokens are the encoder's input


class AttnLRP(Method):
    """Achtibat et al.'s AttnLRP (see the module docstring, with its patent notice)."""

    name: ClassVar[str] = "attnlrp"
    attention: ClassVar[bool] = True  # relevance of the encoder's input tokens, not a hooked layer
    phases: int = 1  # input shifts per axis (ShiftedAttnLRP)

    def cam(self, acts, grads, ctx):
        raise MethodError(f"{self.name!r} propagates relevance through the whole transformer; run it through explain_classification or mmcam.CAM")

    def run_attention(self, model: Any, reshape: Any, grad_mode: str, batch: Any, targets: Any, size: "tuple[int, int] | None") -> Any:
        from ..engine.attention import over_shifts

        return over_shifts(lambda b, t: explain_attnlrp(model, self, reshape, b, t, size), self, batch, targets, size)


class ShiftedAttnLRP(AttnLRP):
    """AttnLRP averaged over sub-patch input shifts (``method="attnlrp-shift"``; see the module
    docstring, with its patent notice). ``phases``: shifts per axis (``phases²`` passes; 1 is
    plain ``attnlrp``)."""

    name: ClassVar[str] = "attnlrp-shift"

    def __init__(self, phases: int = 3):
        if int(phases) < 1:
            raise MethodError(f"ShiftedAttnLRP needs phases >= 1 (shifts per axis; 1 is plain attnlrp), got {phases}")
        self.phases = int(phases)

    def __repr__(self) -> str:
        return f"ShiftedAttnLRP(phases={self.phases})"


class _Scale(torch.autograd.Function):
    """Identity forward; the gradient times ``factor`` (the uniform rule of a product)."""

    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


def _with_gradient(value: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """``value`` exactly, with ``surrogate``'s gradient."""
    return value.detach() + (surrogate - surrogate.detach())


def _layer_norm_rule(module: nn.LayerNorm, args: tuple, output: torch.Tensor) -> torch.Tensor:
    x = args[0]
    dims = tuple(range(-len(module.normalized_shape), 0))
    mean = x.mean(dims, keepdim=True)
    std = (x.var(dims, unbiased=False, keepdim=True) + module.eps).sqrt()
    y = (x - mean) / std.detach()
    if module.weight is not None:
        y = y * module.weight
    if module.bias is not None:
        y = y + module.bias
    return _with_gradient(output, y)


def _identity_rule(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    x = args[0]
    stable = x + torch.where(x >= 0, 1e-12, -1e-12)
    return _with_gradient(output, x * (output / stable).detach())


def _fused_factors(model: nn.Module, name: str, leaf: str) -> "tuple[float, ...] | None":
    """The uniform rule's factor of each slice of a fused GPT-2-style projection (``c_attn``
    splits into query, key, value — or key, value beside a separate ``q_attn`` in
    cross-attention; ``q_attn`` is the query), read from the parent attention module."""
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    split, width = getattr(parent, "split_size", None), getattr(model.get_submodule(name), "nf", None)
    if not isinstance(split, int) or not isinstance(width, int) or split <= 0:
        return None
    if leaf == "q_attn":
        return (0.25,)
    return {3: (0.25, 0.25, 0.5), 2: (0.25, 0.5)}.get(width // split) if width % split == 0 else None


def lrp_rules(model: nn.Module) -> list[Any]:
    """Install the rules as forward hooks on ``model``; returns the handles (remove them after).
    Raises if the model has no separate query/key/value projections."""
    handles, projections = [], 0
    try:
        for name, module in model.named_modules():
            leaf = name.rpartition(".")[2]
            if isinstance(module, nn.LayerNorm):
                handles.append(module.register_forward_hook(_layer_norm_rule))
            elif type(module).__name__ in _ACTIVATIONS and not any(True for _ in module.parameters()):
                handles.append(module.register_forward_hook(_identity_rule))
            elif isinstance(module, nn.Linear) and leaf in _QK + _V:
                factor = 0.25 if leaf in _QK else 0.5
                handles.append(module.register_forward_hook(lambda m, a, out, f=factor: _Scale.apply(out, f)))
                projections += 1
            elif leaf in _FUSED and (factors := _fused_factors(model, name, leaf)) is not None:
                handles.append(
                    module.register_forward_hook(lambda m, a, out, f=factors: _Scale.apply(out, out.new_tensor(f).repeat_interleave(out.shape[-1] // len(f))))
                )
                projections += 1
    except BaseException:
        for handle in handles:
            handle.remove()
        raise
    if projections == 0:
        for handle in handles:
            handle.remove()
        raise MethodError(
            f"method 'attnlrp' needs separate query/key/value projections (q_proj/k_proj/v_proj or query/key/value); "
            f"{type(model).__name__} has none. Use 'gae' or a CAM method"
        )
    return handles


def explain_attnlrp(model: Any, method: AttnLRP, reshape: Any, batch: Any, targets: Any, size: "tuple[int, int] | None") -> Any:
    """One forward under the rules, the K targets' relevance at the encoder's input tokens from
    one batched backward, then the CAM engine's upsampling and normalisation."""
    from ..engine.attention import token_explanation
    from ..engine.explanation import Explanation, detached

    captioner = any(cls.__name__ in _ENCODER_DECODER for cls in type(model).__mro__)
    if not ((captioner or isinstance(getattr(model, "classifier", None), nn.Module)) and hasattr(model, "set_attn_implementation")):
        raise MethodError(
            f"method 'attnlrp' explains Hugging Face ViT-style image classifiers, ViLT answers and VisionEncoderDecoder captions here; got {type(model).__name__}. Use 'gae' or a CAM method"
        )
    relevance, scores, output = token_relevance(model, batch, targets)
    k, b = scores.shape[1], scores.shape[0]
    titles = [f"encoder input tokens (AttnLRP, {sum(isinstance(m, nn.LayerNorm) for m in model.modules())} LayerNorms)"]
    if k == 0:
        zeros = scores.new_zeros((b, 0, *(size or (1, 1))))
        return Explanation(zeros, zeros, scores, method.name, titles, [[] for _ in range(b)], detached(output))
    return token_explanation(relevance, reshape, size, scores, method.name, titles, targets, output)


def token_relevance(model: Any, batch: Any, targets: Any) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """``(relevance (K, B, N), scores (B, K), output)``: the signed AttnLRP relevance of every
    encoder input token (CLS included) for each of the K targets, from one forward under the
    rules and one batched backward."""
    from ..engine.guard import forward_message, transient_capture_hooks
    from ..engine.hooks import frozen_parameters
    from .legrad import _grads

    with transient_capture_hooks(model), frozen_parameters(model, requires_grad=True), torch.enable_grad():
        handles = lrp_rules(model)
        try:
            value = batch.value
            output = model(**value, output_hidden_states=True) if isinstance(value, dict) else model(value, output_hidden_states=True)
        except MMCamError:
            raise
        except (RuntimeError, ValueError, TypeError, IndexError, KeyError, AttributeError) as error:
            raise ForwardError(forward_message(model, batch, error)) from error
        finally:
            for handle in handles:
                handle.remove()
        hidden = getattr(output, "encoder_hidden_states", None) or output.hidden_states  # a captioner: its image encoder's
        tokens_in = hidden[0]  # (B, N, d): the encoder's input tokens
        if not targets.resolved:
            targets.resolve_default(output)
        scores = targets.scores(output)
        if scores.shape[1] == 0:
            return scores.new_zeros((0, scores.shape[0], tokens_in.shape[1])), scores.detach(), output
        grad = _grads(scores, [tokens_in])[0]  # (K, B, N, d)
        return (grad * tokens_in.detach()).sum(-1).detach(), scores.detach(), output
