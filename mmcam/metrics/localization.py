"""Localisation metrics of maps against ground-truth masks, batched in torch.

All take ``maps`` ``(N, H, W)`` (non-negative) and ``masks`` ``(N, H, W)`` (bool) and return
one value per sample ``(N,)``. Baselines for every number are in :mod:`mmcam.metrics.baselines`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import InputError

__all__ = ["pointing_game", "relevance_mass", "relevance_mass_ratio", "rank_accuracy", "pixel_auroc"]


def _check(maps: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if maps.shape != masks.shape or maps.ndim != 3:
        raise InputError(f"maps and masks must both be (N, H, W), got {tuple(maps.shape)} and {tuple(masks.shape)}")
    return maps.float(), masks.bool()


def pointing_game(maps: torch.Tensor, masks: torch.Tensor, tolerance: int = 0) -> torch.Tensor:
    """Pointing game (Zhang et al., ECCV 2016, https://arxiv.org/abs/1608.00507): 1 where the
    map's maximum lies in the mask dilated by ``tolerance`` pixels (a disc), else 0. A maximum
    shared by several pixels scores the share of them that hit (the expected hit under random
    tie-breaking), so a constant map scores the (dilated) mask's share of the image."""
    maps, masks = _check(maps, masks)
    if tolerance > 0:
        r = tolerance
        yy, xx = torch.meshgrid(torch.arange(-r, r + 1), torch.arange(-r, r + 1), indexing="ij")
        disc = ((yy**2 + xx**2) <= r * r).float()[None, None].to(maps.device)
        masks = F.conv2d(masks[:, None].float(), disc, padding=r)[:, 0] > 0
    flat = maps.flatten(1)
    peaks = flat == flat.max(1, keepdim=True).values
    return (peaks & masks.flatten(1)).sum(1).float() / peaks.sum(1).float()


def relevance_mass(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Share of the map's total inside the mask, ``Σ_mask L / Σ L`` (energy-based pointing game,
    Score-CAM; relevance mass accuracy, CLEVR-XAI). An all-zero map scores the chance value."""
    maps, masks = _check(maps, masks)
    total = maps.flatten(1).sum(1)
    inside = (maps * masks).flatten(1).sum(1)
    share = masks.flatten(1).float().mean(1)
    return torch.where(total > 0, inside / total.clamp_min(1e-12), share)


def relevance_mass_ratio(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """:func:`relevance_mass` divided by the mask's share of the image: 1.0 is chance."""
    _, masks = _check(maps, masks)
    return relevance_mass(maps, masks) / masks.flatten(1).float().mean(1).clamp_min(1e-12)


def rank_accuracy(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Relevance rank accuracy (CLEVR-XAI, Arras et al. 2022, https://arxiv.org/abs/2003.07258):
    ``|top-K pixels ∩ mask| / K`` with K = the mask's area; 0 for an empty mask. Pixels tied
    with the K-th largest value fill the remaining top-K slots in proportion (the expected
    value under random tie-breaking), so a constant map scores the mask's share of the image."""
    maps, masks = _check(maps, masks)
    flat, m = maps.flatten(1), masks.flatten(1)
    k = m.sum(1)
    ordered = flat.sort(dim=1, descending=True).values
    kth = ordered.gather(1, (k - 1).clamp_min(0)[:, None])  # the K-th largest value
    above, tied = flat > kth, flat == kth
    slots = (k - above.sum(1)).float()
    hits = (above & m).sum(1).float() + slots * (tied & m).sum(1).float() / tied.sum(1).clamp_min(1).float()
    return torch.where(k > 0, hits / k.clamp_min(1).float(), torch.zeros_like(hits))


def pixel_auroc(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Area under the ROC curve of the map's values as a detector of mask pixels
    (Mann–Whitney U with average ranks for ties: ``(R⁺ − P(P+1)/2) / (P·N)``, R⁺ the rank sum
    of the P mask pixels, N outside; 0.5 = chance, 1 = perfect, 0.5 for an empty or full mask)."""
    maps, masks = _check(maps, masks)
    flat, positive = maps.flatten(1), masks.flatten(1)
    ranks = average_ranks(flat)
    n_pos = positive.sum(1).double()
    n_neg = (~positive).sum(1).double()
    u = (ranks * positive).sum(1) - n_pos * (n_pos + 1) / 2
    valid = (n_pos > 0) & (n_neg > 0)
    return torch.where(valid, u / (n_pos * n_neg).clamp_min(1), torch.full_like(u, 0.5)).float()


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks along the last dimension of ``(N, L)``, ties sharing their average rank
    (batched: a tie group spans ``searchsorted`` left..right in the sorted row)."""
    v = values.double()
    ordered = v.sort(dim=-1).values.contiguous()
    left = torch.searchsorted(ordered, v.contiguous(), right=False)
    right = torch.searchsorted(ordered, v.contiguous(), right=True)
    return (left + right + 1).double() / 2
