"""Gradient-weighted attention relevance ("gae") for transformers.

Chefer, Gur & Wolf, *Generic Attention-model Explainability for Interpreting Bi-Modal and
Encoder-Decoder Transformers*, ICCV 2021 — https://arxiv.org/abs/2103.15679

Instead of one layer's activations, the map is built from the attention probabilities
``A`` (heads × queries × keys) of **every** attention layer and their gradients ``∇A`` with
respect to the explained score:

* each layer's head-averaged, gradient-weighted attention (eq. 5)::

      Ā = E_h[(∇A ⊙ A)⁺]

* self-attention over one token stream, relevance ``R`` starting at the identity (eq. 6)::

      R ← R + Ā · R

* encoder-decoder (a captioner's text decoder reading the image encoder through
  cross-attention): ``R^{ii}`` is the image encoder's self-attention relevance as above;
  the text stream keeps ``R^{tt}`` (identity at the start) and ``R^{ti}`` (zeros). A
  decoder self-attention layer updates both (eqs. 6–7)::

      R^{tt} ← R^{tt} + Ā · R^{tt}        R^{ti} ← R^{ti} + Ā · R^{ti}

  and a cross-attention layer adds (eq. 10, with eqs. 8–9's normalisation
  ``R̄ = (R − I) / rowsum(R − I) + I``)::

      R^{ti} ← R^{ti} + (R̄^{tt})ᵀ · Ā · R̄^{ii}

The explained item's map is its query row: the CLS row of ``R`` (single stream: ViLT's
pooler token, a ViT's class token), or the rows of the word's tokens in ``R^{ti}``
(captions), restricted to the image tokens and folded onto the patch grid.

Use it as ``method="gae"`` in :func:`mmcam.explain_caption` (VisionEncoderDecoder, BLIP),
:func:`mmcam.explain_vqa` (ViLT), :func:`mmcam.explain_classification` (HF ViT-style
classifiers) or ``mmcam.CAM(model, method="gae")`` on a Hugging Face transformers model; it
needs no layer. The attention implementation is switched to ``"eager"`` for the call (the
fused kernels return no probabilities) and switched back after.

``method="gae-shift"`` (:class:`ShiftedAttention`) is the same relevance averaged over the image
moved by sub-patch shifts (:mod:`mmcam.engine.shifts`): one patch is the finest cell the rule
can tell apart, ``phases`` shifts per axis put the grid at ``phases²`` positions; each pass's
map is shifted back and the maps are averaged. Cost: ``phases²`` forwards + batched backwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from ..errors import MethodError
from .base import Method

__all__ = ["GenericAttention", "ShiftedAttention", "weighted_attention", "self_relevance", "relevance_rows", "normalized", "encoder_decoder_relevance"]


class GenericAttention(Method):
    """Chefer et al.'s gradient-weighted attention relevance (see the module docstring).

    ``query_rows``: the token rows whose relevance (summed) is the map of an item that names
    no position of its own. Default ``None``: the rows the model's head reads — the CLS /
    pooler token (row 0); CLS and distillation token for DeiT with a teacher head; every
    token after the CLS for a mean-pooling head (BEiT's ``use_mean_pooling``). Items that
    carry token ``positions`` (:class:`mmcam.targets.CaptionTokens`) use their own rows.
    """

    name: ClassVar[str] = "gae"
    attention: ClassVar[bool] = True  # maps come from every attention layer, not a hooked layer
    phases: int = 1  # input shifts per axis (ShiftedAttention)

    def __init__(self, query_rows: Sequence[int] | None = None):
        self.query_rows = None if query_rows is None else [int(r) for r in query_rows]
        if self.query_rows is not None and not self.query_rows:
            raise MethodError("GenericAttention needs at least one query row (e.g. (0,) for the CLS token)")

    def rows_for(self, model: Any, tokens: int) -> list[int]:
        """The query rows for ``model`` with ``tokens`` tokens (see the class docstring)."""
        if self.query_rows is not None:
            return self.query_rows
        if getattr(getattr(model, "config", None), "use_mean_pooling", False):
            return list(range(1, tokens))
        if type(model).__name__.endswith("WithTeacher"):
            return [0, 1]
        return [0]

    def cam(self, acts, grads, ctx):  # the engine routes attention methods elsewhere
        raise MethodError("'gae' builds its maps from attention probabilities; run it through mmcam.CAM or a task call")

    def __repr__(self) -> str:
        return f"GenericAttention(query_rows={self.query_rows})"


class ShiftedAttention(GenericAttention):
    """``gae`` averaged over sub-patch input shifts (``method="gae-shift"``).

    With ``p`` pixels per token, the image is moved by ``(dy, dx)`` for ``dy, dx`` in
    ``round(k p / phases)``, ``k < phases`` (edges replicated; the default 3 phases: ``0, p/3,
    2p/3``, 9 passes; 2: ``0`` and half a patch, 4 passes), each moved image explained with the unshifted pass's targets, each map
    moved back (:func:`mmcam.engine.shifts.unshifted`) and the ``phases²`` maps averaged, then
    min-max scaled. Scores and outputs are the unshifted image's. ``query_rows``: as
    :class:`GenericAttention`.
    """

    name: ClassVar[str] = "gae-shift"

    def __init__(self, query_rows: Sequence[int] | None = None, phases: int = 3):
        super().__init__(query_rows)
        if int(phases) < 1:
            raise MethodError(f"ShiftedAttention needs phases >= 1 (shifts per axis; 1 is plain gae), got {phases}")
        self.phases = int(phases)

    def __repr__(self) -> str:
        return f"ShiftedAttention(query_rows={self.query_rows}, phases={self.phases})"


def weighted_attention(attn: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``Ā = E_h[(∇A ⊙ A)⁺]``: ``attn`` ``(B, H, Q, N)``, ``grad`` ``(K, B, H, Q, N)`` →
    ``(K, B, Q, N)``."""
    return (grad * attn).clamp(min=0).mean(2)


def self_relevance(attns: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]) -> torch.Tensor:
    """``R = Π (I + Ā_l)`` applied in layer order (``R ← R + Ā R``, R⁰ = I): ``(K, B, N, N)``."""
    k, b = grads[0].shape[:2]
    n = attns[0].shape[-1]
    r = torch.eye(n, dtype=attns[0].dtype, device=attns[0].device).expand(k, b, n, n)
    for attn, grad in zip(attns, grads):
        r = r + weighted_attention(attn, grad) @ r
    return r


def relevance_rows(attns: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], rows: Sequence[Sequence[int]]) -> torch.Tensor:
    """``Σ_{r ∈ rows[k]} R_k[r]`` ``(K, B, N)``: the summed query rows of :func:`self_relevance`
    for each of the K scores, without the ``N x N`` products. ``R = (I + Ā_L) ⋯ (I + Ā_1)``, so
    a row vector ``v = Σ_r e_r`` is carried from the last layer to the first, ``v ← v + v Ā_l``
    (``O(N²)`` per layer instead of ``O(N³)``)."""
    k, b = grads[0].shape[:2]
    n = attns[0].shape[-1]
    v = torch.zeros(k, b, n, dtype=torch.float32, device=attns[0].device)
    for j, picked in enumerate(rows):
        v[j, :, list(picked)] += 1.0
    for attn, grad in zip(reversed(attns), reversed(grads)):
        v = v + (v[..., None, :] @ weighted_attention(attn.float(), grad.float()))[..., 0, :]
    return v


def normalized(r: torch.Tensor) -> torch.Tensor:
    """``R̄ = R̂ / rowsum(R̂) + I`` with ``R̂ = R − I`` (rows of ``R̂`` that sum to 0 stay 0)."""
    eye = torch.eye(r.shape[-1], dtype=r.dtype, device=r.device)
    hat = r - eye
    sums = hat.sum(-1, keepdim=True)
    return torch.where(sums > 0, hat / sums.clamp(min=torch.finfo(r.dtype).tiny), torch.zeros_like(hat)) + eye


def encoder_decoder_relevance(
    encoder: Sequence[torch.Tensor],
    encoder_grads: Sequence[torch.Tensor],
    decoder: Sequence[torch.Tensor],
    decoder_grads: Sequence[torch.Tensor],
    cross: Sequence[torch.Tensor],
    cross_grads: Sequence[torch.Tensor],
) -> torch.Tensor:
    """``R^{ti}`` ``(K, B, T, N)``: relevance of each image token ``n`` for text token ``t``
    (decoder layer ``l`` = its self-attention, then its cross-attention)."""
    if len(decoder) != len(cross):
        raise MethodError(f"got {len(decoder)} decoder self-attention and {len(cross)} cross-attention maps; gae needs one of each per decoder layer")
    r_ii = normalized(self_relevance(encoder, encoder_grads))
    k, b = cross_grads[0].shape[:2]
    t, n = cross[0].shape[-2:]
    r_tt = torch.eye(t, dtype=cross[0].dtype, device=cross[0].device).expand(k, b, t, t)
    r_ti = cross[0].new_zeros(k, b, t, n)
    for self_attn, self_grad, cross_attn, cross_grad in zip(decoder, decoder_grads, cross, cross_grads):
        a = weighted_attention(self_attn, self_grad)
        r_tt = r_tt + a @ r_tt
        r_ti = r_ti + a @ r_ti
        r_ti = r_ti + normalized(r_tt).transpose(-1, -2) @ weighted_attention(cross_attn, cross_grad) @ r_ii
    return r_ti
