"""The encoder-side backward of a text decoder's cross-attention through its T query rows.

A caption's K word scores read the encoder output ``E`` (``N × D``: 197 tokens of ViT-B/16 at
224) through every decoder layer's cross-attention. Per head ``h`` (``Q_h``: ``T × d`` queries,
``K_h = E W_k,h + b_k,h``, ``V_h = E W_v,h + b_v,h``, ``A_h = softmax(s Q_h K_hᵀ)``,
``O_h = A_h V_h``) the ordinary backward forms ``dK_h = s dS_hᵀ Q_h`` and ``dV_h = A_hᵀ dO_h``
(``N × d`` each) and then ``dE = [dK dV] [W_k W_v]ᵀ``: ``N × 2D × D`` multiply-adds per word and
layer. Both cotangents have rank ``≤ T``, so the same sum is

    dE = Σ_h (s dS_h)ᵀ (Q_h W_k,hᵀ) + A_hᵀ (dO_h W_v,hᵀ)
       = [s dS_1 … s dS_H  A_1 … A_H]ᵀ [Q_1 W_k,1ᵀ … Q_H W_k,Hᵀ  dO_1 W_v,1ᵀ … dO_H W_v,Hᵀ]

(``dS_h = A_h ⊙ (dA_h − rowsum(dA_h ⊙ A_h))``, ``dA_h = dO_h V_hᵀ``): one ``N × 2HT × D``
product, the ``Q_h W_k,hᵀ`` factor shared by every word (``T × D × D`` once). For GPT-2 small
and a 12-token caption, ``2HT = 288`` against ``2D = 1536``: ~5× fewer multiply-adds. Where
``H T ≥ D`` (long texts) the backward takes the ordinary form; both are exact.

:func:`low_rank_cross_attention` routes GPT-2's cross-attention (``transformers``'
``GPT2Attention(is_cross_attention=True)``: ``q_attn`` and the ``c_attn`` Conv1D key/value
projection) through :class:`_CrossKV` for one block of code: an instance ``forward`` on each such
module, removed after (even on error). The forward computes the very same numbers (the
module's own ``c_attn`` and attention function), so scores and captions are bit for bit those of
the ordinary path; only the backward's association order differs (maps equal to ~1e-6 of their
scale, ``tests/adapters/test_cross_attention.py``). A call the fast form does not cover takes
the module's own forward: a cache, an encoder attention mask, dropout in training mode,
``reorder_and_upcast_attn``, hooks on ``c_attn``, or parameters that require grad (the engine
freezes them: here only activations are differentiated). Other decoders keep their own path.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

__all__ = ["low_rank_cross_attention", "cross_attention_modules", "cached_keys_values"]


def cross_attention_modules(model: nn.Module) -> list[nn.Module]:
    """The GPT-2 cross-attention modules of ``model`` (empty for every other decoder)."""
    try:
        from transformers.models.gpt2.modeling_gpt2 import GPT2Attention
    except ImportError:  # pragma: no cover - transformers is a dependency of every captioner
        return []
    return [m for m in model.modules() if isinstance(m, GPT2Attention) and m.is_cross_attention and hasattr(m, "q_attn")]


def cached_keys_values(cache: Any) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """``{layer: (keys, values)}`` of the cross-attention part of a ``generate()`` cache
    (``EncoderDecoderCache``), ``{}`` for anything else."""
    layers = getattr(getattr(cache, "cross_attention_cache", None), "layers", None) or []
    pairs = [(i, getattr(layer, "keys", None), getattr(layer, "values", None)) for i, layer in enumerate(layers)]
    return {i: (k, v) for i, k, v in pairs if isinstance(k, torch.Tensor) and isinstance(v, torch.Tensor)}


@contextmanager
def low_rank_cross_attention(model: nn.Module, cached: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None) -> Iterator[int]:
    """For the block: GPT-2 cross-attention in ``model`` with the rank-``T`` encoder backward
    (module docstring); yields how many modules were routed. Each module gets an instance
    ``forward`` that falls back to its class's own when the fast form does not apply, and loses
    it after the block (an instance ``forward`` it had before is put back). ``cached``: layer ->
    ``(keys, values)`` that ``generate()`` computed from the same encoder output under no-grad
    (:func:`cached_keys_values`); the fast form reads them instead of projecting the encoder
    output again (the same numbers: its backward needs only their values)."""
    modules = cross_attention_modules(model)
    saved = [(m, m.__dict__.get("forward")) for m in modules]
    cached = cached or {}
    try:
        for module in modules:
            module.forward = _routed(module, cached.get(module.layer_idx))
        yield len(modules)
    finally:
        for module, before in saved:
            module.__dict__.pop("forward", None)
            if before is not None:
                module.forward = before


def _routed(module: nn.Module, cached: tuple[torch.Tensor, torch.Tensor] | None):
    own = type(module).forward.__get__(module)

    def forward(hidden_states, cache=None, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None, **kwargs):
        if not _fast(module, cache, encoder_hidden_states, encoder_attention_mask, kwargs):
            return own(
                hidden_states,
                cache=cache,
                attention_mask=attention_mask,
                encoder_hidden_states=encoder_hidden_states,
                encoder_attention_mask=encoder_attention_mask,
                **kwargs,
            )
        query = module.q_attn(hidden_states)
        query = query.view(*query.shape[:-1], -1, module.head_dim).transpose(1, 2)
        out = _CrossKV.apply(query, encoder_hidden_states, module, cached)
        out = module.c_proj(out.reshape(*out.shape[:-2], -1).contiguous())
        return module.resid_dropout(out), None

    return forward


def _fast(module: nn.Module, cache: Any, encoder: Any, mask: Any, kwargs: dict) -> bool:
    c_attn = module.c_attn
    return (
        torch.is_grad_enabled()
        and cache is None
        and mask is None
        and isinstance(encoder, torch.Tensor)
        and not kwargs.get("output_attentions")
        and not (module.training and module.attn_dropout.p > 0)
        and not (module.config._attn_implementation == "eager" and module.reorder_and_upcast_attn)
        and not (c_attn._forward_hooks or c_attn._forward_pre_hooks)
        and not any(p.requires_grad for p in (c_attn.weight, c_attn.bias))
    )


def _attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """The module's own attention function (sdpa, eager, ...) on these heads: ``(B, T, H, d)``."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.gpt2.modeling_gpt2 import eager_attention_forward

    interface = ALL_ATTENTION_FUNCTIONS.get_interface(module.config._attn_implementation, eager_attention_forward)
    out, _ = interface(module, query, key, value, None, dropout=0.0, scaling=module.scaling)
    return out


class _CrossKV(torch.autograd.Function):
    """``(query (B, H, T, d), encoder (B, N, D)) -> (B, T, H, d)``: the module's key/value
    projection of ``encoder`` and its attention, with the rank-``T`` backward to ``encoder``."""

    @staticmethod
    def forward(ctx, query: torch.Tensor, encoder: torch.Tensor, module: nn.Module, cached: Any) -> torch.Tensor:
        want = (query.shape[0], query.shape[1], encoder.shape[1], query.shape[3])
        if cached is not None and all(c.shape == want and c.dtype == encoder.dtype and c.device == encoder.device for c in cached):
            key, value = cached  # generate()'s projection of this very encoder output
        else:
            key, value = module.c_attn(encoder).split(module.split_size, dim=2)
            shape = (*key.shape[:-1], -1, module.head_dim)
            key, value = key.view(shape).transpose(1, 2), value.view(shape).transpose(1, 2)
        ctx.save_for_backward(query, key, value, module.c_attn.weight)
        ctx.scaling = module.scaling
        return _attention(module, query, key, value)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        # under is_grads_batched (torch's legacy vmap) ``grad`` carries the K words as a hidden batch
        # dimension: only 2-D ``mm`` with the batched operand on either side is used (bmm / matmul
        # against an unbatched 3-D operand copy it K times or loop over the words); the saved
        # tensors are unbatched, so what depends on them alone (attention, Q_h W_k,hᵀ) is formed once
        query, key, value, weight = ctx.saved_tensors
        s = ctx.scaling
        b, heads, t, d = query.shape
        dim = heads * d
        low_rank = heads * t < dim
        attn = torch.softmax(torch.matmul(query, key.transpose(-1, -2)) * s, dim=-1)  # (B, H, T, N)
        w_k = weight[:, :dim].t().reshape(heads, d, -1)  # Conv1D: y = x W + b, W (D_in, 2D): W_k,hᵀ is (d, D_in)
        w_v = weight[:, dim : 2 * dim].t().reshape(heads, d, -1)
        g = grad.transpose(1, 2)  # (B, H, T, d)
        d_query, d_encoder = [], []
        for i in range(b):
            d_logits, q_parts, v_parts = [], [], []
            for h in range(heads):
                g_h, a_h = g[i, h], attn[i, h]
                d_attn = torch.mm(g_h, value[i, h].t())  # (T, N)
                d_log = a_h * (d_attn - (d_attn * a_h).sum(-1, keepdim=True)) * s  # d score / d (Q Kᵀ)
                d_logits.append(d_log)
                if ctx.needs_input_grad[0]:
                    d_query.append(torch.mm(d_log, key[i, h]))
                if low_rank:  # (T, D_in) factors: Q_h W_k,hᵀ (the same for every word), dO_h W_v,hᵀ
                    q_parts.append(torch.mm(query[i, h], w_k[h]))
                    v_parts.append(torch.mm(g_h, w_v[h]))
                else:  # dK_h, dV_h (N, d)
                    q_parts.append(torch.mm(d_log.t(), query[i, h]))
                    v_parts.append(torch.mm(a_h.t(), g_h))
            if not ctx.needs_input_grad[1]:
                continue
            if low_rank:  # dE = [s dS_h]ᵀ [Q_h W_k,hᵀ] + [A_h]ᵀ [dO_h W_v,hᵀ], heads stacked along the T rows
                part_k = torch.mm(torch.cat(d_logits, 0).t(), torch.cat(q_parts, 0))
                part_v = torch.mm(attn[i].reshape(heads * t, -1).t(), torch.cat(v_parts, 0))
                d_encoder.append(part_k + part_v)
            else:  # dE = [dK dV] [W_k W_v]ᵀ
                d_encoder.append(torch.mm(torch.cat(q_parts + v_parts, 1), weight[:, : 2 * dim].t()))
        dq = torch.stack(d_query).reshape(b, heads, t, d) if d_query else None
        de = torch.stack(d_encoder) if d_encoder else None
        return dq, de, None, None
