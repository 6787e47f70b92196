"""Explanation quality: localisation against exact masks (with baselines beside every number),
faithfulness to the model (deletion / insertion, ROAD, average drop / increase), sanity checks
(cascading randomization, Spearman of |map|) and captum attribution baselines. Batched, in
torch; ``mmcam.evaluation.evaluate`` runs them all per task."""

from .baselines import BASELINES, centre_gaussian, localization_table, random_maps, uniform
from .faithfulness import ROAD_PERCENTAGES, Curves, average_drop_increase, blur, deletion, insertion, noisy_linear_imputation, road
from .localization import average_ranks, pixel_auroc, pointing_game, rank_accuracy, relevance_mass, relevance_mass_ratio
from .sanity import PASS_THRESHOLD, RandomizationResult, cascading_randomization, randomization_stages, spearman

__all__ = [
    "pointing_game",
    "relevance_mass",
    "relevance_mass_ratio",
    "rank_accuracy",
    "pixel_auroc",
    "average_ranks",
    "centre_gaussian",
    "uniform",
    "random_maps",
    "BASELINES",
    "localization_table",
    "deletion",
    "insertion",
    "blur",
    "road",
    "noisy_linear_imputation",
    "average_drop_increase",
    "Curves",
    "ROAD_PERCENTAGES",
    "spearman",
    "cascading_randomization",
    "randomization_stages",
    "RandomizationResult",
    "PASS_THRESHOLD",
]
