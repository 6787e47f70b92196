"""Baseline maps to print beside every localisation number (a centre prior scores 69.6% on
VOC07's pointing game: without a baseline a number means little)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .localization import pixel_auroc, pointing_game, rank_accuracy, relevance_mass, relevance_mass_ratio

__all__ = ["centre_gaussian", "uniform", "random_maps", "sobel_edges", "BASELINES", "IMAGE_BASELINES", "localization_table"]


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


def sobel_edges(image: torch.Tensor, n: int = 1) -> torch.Tensor:
    """An edge detector as a map (the "edge detector" baseline of Adebayo et al. 2018,
    https://arxiv.org/abs/1810.03292): the Sobel gradient magnitude of the image ``(C, H, W)``
    summed over channels, ``Σ_c sqrt(G_x² + G_y²)`` with ``G_x = [[-1,0,1],[-2,0,2],[-1,0,1]] * I_c``
    and ``G_y = G_xᵀ * I_c`` (edges replicated at the border), repeated for ``n`` items."""
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    kernels = torch.stack([kx, kx.T])[:, None]  # (2, 1, 3, 3)
    x = image.detach().float()[:, None]  # (C, 1, H, W): each channel on its own
    g = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernels)  # (C, 2, H, W)
    edges = g.pow(2).sum(1).sqrt().sum(0)
    return edges.expand(n, *edges.shape).clone()


BASELINES: dict[str, Callable[[int, int, int], torch.Tensor]] = {"centre": centre_gaussian, "uniform": uniform, "random": random_maps}
#: Baselines made from the input itself: ``make(pixels (C, H, W), n) -> (n, H, W)``.
IMAGE_BASELINES: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {"sobel": sobel_edges}
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
