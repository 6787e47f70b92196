"""Gradients of K score columns w.r.t. hooked tensors, as ``(K, *tensor.shape)`` per tensor:
batched (one vector-Jacobian product with ``is_grads_batched``) or looped (one backward per
column). Which is faster depends on the model; :class:`mmcam.engine.CAM` measures both."""

from __future__ import annotations

import torch

__all__ = ["batched_grads", "looped_grads"]


def batched_grads(scores: torch.Tensor, leaves: list[torch.Tensor], retain: bool = False) -> list[torch.Tensor]:
    """One vector-Jacobian product for all K columns (``is_grads_batched``): ``(K, *leaf.shape)``
    per leaf, ``None`` where a leaf is unused. ``retain`` keeps the graph (e.g. to fall back
    to the loop if this raises)."""
    k = scores.shape[1]
    eye = torch.eye(k, dtype=scores.dtype, device=scores.device)
    seeds = eye[:, None, :].expand(k, scores.shape[0], k).contiguous()
    return list(torch.autograd.grad(scores, leaves, grad_outputs=seeds, is_grads_batched=True, allow_unused=True, retain_graph=retain))


def looped_grads(scores: torch.Tensor, leaves: list[torch.Tensor]) -> list[torch.Tensor | None]:
    """One retained-graph ``autograd.grad`` per column, stacked to ``(K, *leaf.shape)`` per
    leaf (``None`` where a leaf is unused); works for every op, at K backward passes."""
    k = scores.shape[1]
    per_target = [torch.autograd.grad(scores[:, j].sum(), leaves, retain_graph=j < k - 1, allow_unused=True) for j in range(k)]
    out: list[torch.Tensor | None] = []
    for i in range(len(leaves)):
        column = [g[i] for g in per_target]
        out.append(None if any(g is None for g in column) else torch.stack(column))
    return out
