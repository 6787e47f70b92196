"""Scoring one case's maps: localisation and faithfulness columns, per-row accumulation,
the sanity entries, and the per-case seeds that make shards add up to one run."""

from __future__ import annotations

import math
import zlib
from typing import Any

import torch

from ..metrics import faithfulness as faith
from ..metrics.localization import pixel_auroc, pointing_game, rank_accuracy, relevance_mass, relevance_mass_ratio
from .cases import Case

__all__ = ["torchray_tolerance", "localization_values", "faithfulness_values", "Row", "guided_gradcam", "case_seed", "sanity_entry"]


def torchray_tolerance(height: int, width: int) -> int:
    """TorchRay's pointing-game tolerance, 15 px at ImageNet's 224, scaled to the map's size."""
    return int(round(15 * min(height, width) / 224))


def localization_values(maps: torch.Tensor, case: Case, tolerance: int | None) -> dict[str, list[float]]:
    r = torchray_tolerance(*maps.shape[-2:]) if tolerance is None else tolerance
    values = {
        "pointing": pointing_game(maps, case.masks).tolist(),
        "pointing_tol": pointing_game(maps, case.masks, r).tolist(),
        "mass": relevance_mass(maps, case.masks).tolist(),
        "mass_ratio": relevance_mass_ratio(maps, case.masks).tolist(),
        "rank_acc": rank_accuracy(maps, case.masks).tolist(),
        "auroc": pixel_auroc(maps, case.masks).tolist(),
    }
    # CLEVR-XAI (Arras et al. 2022): mass and rank accuracy on the referred object vs on all objects
    every = case.masks | case.others
    values["mass_all"] = relevance_mass(maps, every).tolist()
    values["rank_all"] = rank_accuracy(maps, every).tolist()
    has_others = case.others.flatten(1).any(1)
    others = relevance_mass(maps, case.others)
    values["others_mass"] = [float(v) if ok else math.nan for v, ok in zip(others, has_others)]
    return values


def faithfulness_values(maps: torch.Tensor, case: Case, steps: int, percentages: tuple[int, ...], seed: int) -> dict[str, list[float]]:
    fn, x = case.probabilities, case.pixels
    drop, increase = faith.average_drop_increase(fn, x, maps)
    return {
        "deletion": faith.deletion(fn, x, maps, steps=steps).auc.tolist(),
        "insertion": faith.insertion(fn, x, maps, steps=steps).auc.tolist(),
        "road_morf": faith.road(fn, x, maps, order="morf", percentages=percentages, seed=seed).auc.tolist(),
        "road_lerf": faith.road(fn, x, maps, order="lerf", percentages=percentages, seed=seed).auc.tolist(),
        "avg_drop": drop.tolist(),
        "avg_increase": increase.tolist(),
    }


class Row:
    """Accumulates one table row: per column ``[sum, count]`` of the finite values, per item
    records, and the time spent making maps."""

    def __init__(self, name: str, records: list[dict[str, Any]]) -> None:
        self.name = name
        self.totals: dict[str, list[float]] = {}
        self.records = records
        self.index: dict[tuple[str, int], dict[str, Any]] = {}
        self.seconds = 0.0
        self.calls = 0

    def add(self, values: dict[str, list[float]], case: "Case | None" = None) -> None:
        for column, vs in values.items():
            acc = self.totals.setdefault(column, [0.0, 0])
            for v in vs:
                if not math.isnan(v):
                    acc[0] += float(v)
                    acc[1] += 1
        if case is not None:
            for k, item in enumerate(case.items):
                record = self.index.get((case.sample_id, k))
                if record is None:
                    record = self.index[(case.sample_id, k)] = {"row": self.name, "case": case.sample_id, "item": k, "label": item}
                    self.records.append(record)
                record.update({c: (None if math.isnan(vs[k]) else round(float(vs[k]), 6)) for c, vs in values.items() if len(vs) == len(case.items)})

    def finish(self) -> dict[str, list[float]]:
        if self.calls:
            self.totals["seconds_per_image"] = [self.seconds, self.calls]
        return self.totals


def guided_gradcam(case: Case, model: torch.nn.Module) -> torch.Tensor:
    product = case.guided(model) * case.explain(model, "gradcam")
    peak = product.flatten(1).amax(1).clamp_min(1e-12)
    return product / peak[:, None, None]


def case_seed(seed: int, case: Case) -> int:
    """A seed for one case's random draws (random baseline, ROAD noise, captum sampling) that
    does not depend on which process evaluates it."""
    return seed * 1_000_003 + zlib.crc32(case.sample_id.encode()) % 1_000_003


def sanity_entry(result: Any) -> dict[str, Any]:
    count = len(result.per_map[0])
    sums = [float(sum(v)) for v in result.per_map]
    return {"stages": result.stages, "sums": sums, "count": count, "spearman": result.spearman, "passes": result.passes}
