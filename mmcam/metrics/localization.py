"""Localisation metrics of maps against ground-truth masks, batched in torch.

All take ``maps`` ``(N, H, W)`` (non-negative) and ``masks`` ``(N, H, W)`` (bool) and return
one value per sample ``(N,)``. Baselines for every number are in :mod:`mmcam.metrics.baselines`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["pointing_game", "relevance_mass", "relevance_mass_ratio", "rank_accuracy", "pixel_auroc"]


def _check(maps: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if maps.shape != masks.shape or maps.ndim != 3:
        raise ValueError(f"maps and masks must both be (N, H, W), got {tuple(maps.shape)} and {tuple(masks.shape)}")
    return maps.float(), masks.bool()


def pointing_game(maps: torch.Tensor, masks: torch.Tensor, tolerance: int = 0) -> torch.Tensor:
    """Pointing game (Zhang et al., ECCV 2016, https://arxiv.org/abs/1608.00507): 1 where the
    map's maximum lies in the mask dilated by ``tolerance`` pixels (a disc), else 0. Ties in
    the maximum: the first position in row-major order."""
    maps, masks = _check(maps, masks)
    if tolerance > 0:
        r = tolerance
        yy, xx = torch.meshgrid(torch.arange(-r, r + 1), torch.arange(-r, r + 1), indexing="ij")
        disc = ((yy**2 + xx**2) <= r * r).float()[None, None].to(maps.device)
        masks = F.conv2d(masks[:, None].float(), disc, padding=r)[:, 0] > 0
    peak = maps.flatten(1).argmax(1)
    return masks.flatten(1).gather(1, peak[:, None])[:, 0].float()


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
    """Relevance rank accuracy (CLEVR-XAI): ``|top-K pixels ∩ mask| / K`` with K = mask area."""
    maps, masks = _check(maps, masks)
    flat, m = maps.flatten(1), masks.flatten(1)
    out = torch.zeros(maps.shape[0], device=maps.device)
    for i in range(maps.shape[0]):
        k = int(m[i].sum())
        if k:
            out[i] = m[i][flat[i].topk(k).indices].float().mean()
    return out


def pixel_auroc(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Area under the ROC curve of the map's values as a detector of mask pixels
    (Mann–Whitney U with average ranks for ties; 0.5 = chance, 1 = perfect)."""
    maps, masks = _check(maps, masks)
    out = torch.full((maps.shape[0],), 0.5, device=maps.device)
    for i in range(maps.shape[0]):
        values, positive = maps[i].flatten(), masks[i].flatten()
        n_pos, n_neg = int(positive.sum()), int((~positive).sum())
        if n_pos == 0 or n_neg == 0:
            continue
        ranks = _average_ranks(values)
        out[i] = (ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return out


def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks, ties sharing their average rank."""
    sorted_values, order = values.sort()
    ranks = torch.empty_like(values, dtype=torch.float64)
    _, inverse, counts = torch.unique_consecutive(sorted_values, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    average = ends - (counts.double() - 1) / 2
    ranks[order] = average[inverse]
    return ranks
