"""Baseline maps to print beside every localisation number (a centre prior scores 69.6% on
VOC07's pointing game: without a baseline a number means little)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .localization import pixel_auroc, pointing_game, rank_accuracy, relevance_mass, relevance_mass_ratio

__all__ = ["centre_gaussian", "uniform", "random_maps", "BASELINES", "localization_table"]


def centre_gaussian(n: int, h: int, w: int, sigma: float = 0.25) -> torch.Tensor:
    """A Gaussian centred on the image, ``sigma`` as a fraction of the side."""
    yy = (torch.arange(h).float() + 0.5) / h - 0.5
    xx = (torch.arange(w).float() + 0.5) / w - 0.5
    g = torch.exp(-(yy[:, None] ** 2 + xx[None, :] ** 2) / (2 * sigma**2))
    return g.expand(n, h, w).clone()


def uniform(n: int, h: int, w: int) -> torch.Tensor:
    return torch.ones(n, h, w)


def random_maps(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, h, w, generator=torch.Generator().manual_seed(seed))


BASELINES: dict[str, Callable[[int, int, int], torch.Tensor]] = {"centre": centre_gaussian, "uniform": uniform, "random": random_maps}
METRICS = {
    "pointing": pointing_game,
    "mass": relevance_mass,
    "mass_ratio": relevance_mass_ratio,
    "rank_acc": rank_accuracy,
    "auroc": pixel_auroc,
}


def localization_table(maps: dict[str, torch.Tensor], masks: torch.Tensor, tolerance: int = 0) -> dict[str, dict[str, float]]:
    """Mean of every metric for each named set of maps *and* for each baseline on the same
    masks; with ``tolerance`` > 0 also ``pointing_tol``, the pointing game with that many
    pixels of tolerance (TorchRay's protocol)."""
    n, h, w = masks.shape
    rows = dict(maps)
    rows.update({f"baseline:{name}": make(n, h, w) for name, make in BASELINES.items()})
    metrics = dict(METRICS)
    if tolerance > 0:
        metrics["pointing_tol"] = lambda m, k: pointing_game(m, k, tolerance)
    return {name: {metric: round(float(fn(m, masks).mean()), 4) for metric, fn in metrics.items()} for name, m in rows.items()}
