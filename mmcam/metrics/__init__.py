"""Explanation quality: localisation against exact masks, with baselines beside every number."""
from .baselines import BASELINES, centre_gaussian, localization_table, random_maps, uniform
from .localization import pixel_auroc, pointing_game, rank_accuracy, relevance_mass, relevance_mass_ratio

__all__ = [
    "pointing_game", "relevance_mass", "relevance_mass_ratio", "rank_accuracy", "pixel_auroc",
    "centre_gaussian", "uniform", "random_maps", "BASELINES", "localization_table",
]
