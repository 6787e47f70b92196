"""Interventional agreement: does a map rank the objects as the model's own score does when
each object is taken out of the input?

FunnyBirds (Hesse et al., ICCV 2023, https://arxiv.org/abs/2308.06248) defines the ground
truth of an explanation by intervention: remove a part, re-render, and see how much the
explained score changes. Given, per explained item, the map's mass on each object
``m_j = Σ_{p ∈ object j} L(p)`` and the score change ``e_j = |s(x) − s(x without j)|``:

- :func:`top_object_agreement`: 1 where the object with the most map mass is the object whose
  removal changes the score most (ties share the hit, as in the pointing game);
- :func:`spearman_rho` / :func:`kendall_tau`: rank agreement of ``m`` and ``e`` over the
  objects (Spearman's ρ with average ranks; Kendall's τ-b, which corrects for ties).

Which object the model relies on (``argmax e``) is the model's property, the same for every
map; the map is judged against it, not against the annotation.
"""

from __future__ import annotations

import math

import torch

from .localization import average_ranks

__all__ = ["object_mass", "top_object_agreement", "spearman_rho", "kendall_tau", "argmax_set"]


def object_mass(maps: torch.Tensor, objects: torch.Tensor) -> torch.Tensor:
    """``(K, M)``: each of ``K`` maps' (negative parts clipped) total on each of ``M`` masks."""
    return (maps.float().clamp_min(0)[:, None] * objects.bool()[None].float()).flatten(2).sum(2)


def argmax_set(values: torch.Tensor, rtol: float = 1e-6) -> torch.Tensor:
    """Bool mask of the entries equal to the maximum (within ``rtol`` of its magnitude)."""
    top = values.max()
    return values >= top - rtol * top.abs().clamp_min(1e-12)


def top_object_agreement(mass: torch.Tensor, effect: torch.Tensor) -> float:
    """Share of the map's top objects (ties: all of them) that are among the objects of the
    largest effect; NaN with fewer than two objects."""
    if mass.numel() < 2:
        return math.nan
    tops = argmax_set(mass)
    return float((tops & argmax_set(effect)).sum() / tops.sum())


def spearman_rho(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's ρ of two vectors (Pearson's r of their average ranks); NaN when either is
    constant or has fewer than three entries."""
    if a.numel() < 3:
        return math.nan
    ra, rb = average_ranks(a.double()[None])[0], average_ranks(b.double()[None])[0]
    ra, rb = ra - ra.mean(), rb - rb.mean()
    norm = (ra.norm() * rb.norm()).item()
    return float((ra @ rb).item() / norm) if norm > 0 else math.nan


def kendall_tau(a: torch.Tensor, b: torch.Tensor) -> float:
    """Kendall's τ-b, ``(C − D) / sqrt((n0 − n1)(n0 − n2))`` over all pairs (``n1``, ``n2``: pairs
    tied in ``a``, in ``b``); NaN when either vector is constant or has fewer than two entries."""
    if a.numel() < 2:
        return math.nan
    da = torch.sign(a.double()[:, None] - a.double()[None])
    db = torch.sign(b.double()[:, None] - b.double()[None])
    upper = torch.triu(torch.ones_like(da, dtype=torch.bool), 1)
    s = float((da * db)[upper].sum())
    n0 = int(upper.sum())
    n1, n2 = int(((da == 0) & upper).sum()), int(((db == 0) & upper).sum())
    denominator = math.sqrt((n0 - n1) * (n0 - n2))
    return s / denominator if denominator > 0 else math.nan
