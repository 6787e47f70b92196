"""``method="gae"`` for generative VLMs: Chefer et al.'s attention relevance through the
language model, read at each answer word's rows and the image tokens' columns.

Chefer, Gur & Wolf, *Generic Attention-model Explainability for Interpreting Bi-Modal and
Encoder-Decoder Transformers*, ICCV 2021 — https://arxiv.org/abs/2103.15679 (eqs. 5–6).

The image's tokens and the text share one token stream in the language model, so the
single-stream rule applies to the decoder's self-attention maps ``A_l`` (heads × L × L) of the
teacher-forced forward of prompt + answer, with the gradients ``∇A_l`` of each word's score
(the summed log-probability of its tokens, :class:`mmcam.targets.CaptionTokens`)::

    Ā_l = E_h[(∇A_l ⊙ A_l)⁺]        R = (I + Ā_L) ⋯ (I + Ā_1)   (R ← R + Ā_l R, R⁰ = I)

Word ``w``'s map is ``Σ_{p ∈ w} R[p, image]``: the rows of the positions that predict its
tokens (position ``T - 1 + i`` predicts answer token ``i``), the columns of the image tokens,
placed on the input grid through the family's layout (:meth:`ImageTokens.fold`: tiles,
thumbnails and merged patches where they belong), ReLU, upsampled and min-max scaled. The rows
are carried from the last layer to the first (:func:`mmcam.methods.attention.relevance_rows`),
so no ``L x L`` relevance matrix is formed; all words' gradients come from one batched
vector-Jacobian product.

For the call the attention implementation is ``"eager"`` (fused kernels return no
probabilities; put back exactly after) and no parameter requires grad: the language model's
input embeddings are a leaf of the graph, so nothing before the language model (vision tower,
projector) is traced. Works for a layout whose language model is a standard transformers
decoder that returns ``attentions`` with ``output_attentions=True`` (LLaVA, Qwen2-VL, ...);
not for Q-Former layouts, whose query tokens cover no region of the image.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..adapters.vlm import ImageTokens
from ..engine.attention import _gradients, eager_attention
from ..engine.combine import normalize, upsample
from ..engine.guard import untouched
from ..engine.hooks import frozen_parameters
from ..errors import ForwardError, MethodError
from ..methods.attention import relevance_rows
from ..targets import CaptionTokens

__all__ = ["GAE", "lm_relevance", "gae_maps"]

#: the registered name this task routes to :func:`gae_maps`
GAE = "gae"


def _word_rows(target: CaptionTokens) -> list[list[int]]:
    return [[target.positions[i] for i in group] for group in target.groups]


def lm_relevance(
    model: nn.Module, forced: dict[str, torch.Tensor], target: CaptionTokens, grad_mode: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """``(relevance (K, L), scores (K,), logits (L, V), attention layers)`` of one teacher-forced forward
    ``forced`` (a batch of one sequence of ``L`` tokens): row k is ``Σ_{p ∈ word k} R_k[p]``
    over every position of the sequence (see the module docstring); the model is left as found."""
    getter = getattr(model, "get_input_embeddings", None)
    embeddings = getter() if callable(getter) else None
    if not isinstance(embeddings, nn.Module):
        raise MethodError(
            f"{type(model).__name__} has no input embeddings (get_input_embeddings()); method 'gae' needs a transformers VLM whose "
            "language model returns attentions with output_attentions=True. Use a CAM method (layercam, gradcam, ...) or 'tam'"
        )

    def leaf(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        return output.detach().requires_grad_(output.is_floating_point())

    with untouched(model), frozen_parameters(model), eager_attention(model), torch.enable_grad():
        handle = embeddings.register_forward_hook(leaf)
        try:
            output = model(**forced, output_attentions=True)
        except (RuntimeError, ValueError, TypeError, IndexError) as error:
            raise ForwardError(f"{type(model).__name__}'s teacher-forced forward with output_attentions=True failed: {error}") from error
        finally:
            handle.remove()
        attentions = list(getattr(output, "attentions", None) or [])
        length = forced["input_ids"].shape[1]
        if not attentions or any(not isinstance(a, torch.Tensor) or a.ndim != 4 or tuple(a.shape[-2:]) != (length, length) for a in attentions):
            raise MethodError(
                f"{type(model).__name__} returned no full self-attention maps over its {length} tokens with output_attentions=True "
                f"(got {[tuple(a.shape) for a in attentions if isinstance(a, torch.Tensor)]}); method 'gae' needs a standard "
                "transformers decoder. Use a CAM method (layercam, gradcam, ...) or 'tam'"
            )
        scores = target(output)  # (1, K)
        grads = _gradients(scores, attentions, grad_mode)
    with torch.no_grad():
        relevance = relevance_rows([a.detach() for a in attentions], grads, _word_rows(target))[:, 0]
    return relevance, scores.detach()[0], output.logits.detach()[0].float(), len(attentions)


def gae_maps(model: nn.Module, forced: dict[str, torch.Tensor], tokens: ImageTokens, target: CaptionTokens):
    """What ``GenerationTask`` needs for ``method="gae"``: ``(maps (K, H, W) at the input size,
    scores (K,), logits (L, V), layer names)``: each word's relevance at the image tokens'
    columns, folded on the grid, ReLU, upsampled and min-max scaled."""
    if tokens.cells is not None and not any(tokens.cells):
        raise MethodError("these image tokens (a Q-Former's queries) cover no region of the image: method 'gae' cannot place them on it; use a CAM method")
    relevance, scores, logits, depth = lm_relevance(model, forced, target)
    grid = tokens.fold(relevance[:, tokens.positions]).clamp(min=0)  # (K, h, w)
    maps = normalize(upsample(grid[None], tokens.input_size))[0]
    return maps, scores, logits, [f"language-model self-attention x{depth}"]
