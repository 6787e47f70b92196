"""Sanity checks for saliency maps (Adebayo et al., NeurIPS 2018, https://arxiv.org/abs/1810.03292).

*Cascading model-parameter randomization*: re-initialise the model's layers from the top
(the output head) down, one stage at a time and cumulatively, and compare each map with the
trained model's map by the Spearman rank correlation of ``|map|``. A method that explains the
*model* must decorrelate (Grad-CAM does); one that mostly reflects the *input* does not
(Guided Backprop is the known failure). *Random-target test*: the map of a different
class / word / answer / box must differ from the explained one's.

The user's model is never modified: randomization runs on a deep copy.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InputError
from .localization import average_ranks

__all__ = ["spearman", "randomization_stages", "cascading_randomization", "RandomizationResult", "PASS_THRESHOLD"]

#: Spearman of |map| at full randomization below which a method "passes" (the issue's bar).
PASS_THRESHOLD = 0.3


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each pair of rows ``(N, ...)`` (flattened): Pearson of the
    average ranks (ties share theirs); 0 where either row is constant. Batched."""
    a, b = a.flatten(1), b.flatten(1)
    if a.shape != b.shape:
        raise InputError(f"spearman needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    den = ra.norm(dim=1) * rb.norm(dim=1)
    return torch.where(den > 0, (ra * rb).sum(1) / den.clamp_min(1e-300), torch.zeros_like(den)).float()


def randomization_stages(model: nn.Module, n_stages: int = 6) -> list[list[str]]:
    """Groups of parameterised module names, output side first, for cascading randomization:
    the modules that own parameters, in reverse registration order (which follows the forward
    order in torchvision and transformers models), split into at most ``n_stages`` groups; the
    first group is the last module alone (the head)."""
    owners = [name for name, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]
    if not owners:
        raise InputError("the model has no parameters to randomize")
    owners = owners[::-1]
    stages = [[owners[0]]]
    rest = owners[1:]
    n = max(1, min(n_stages - 1, len(rest)))
    for i in range(n):
        chunk = rest[i * len(rest) // n : (i + 1) * len(rest) // n]
        if chunk:
            stages.append(chunk)
    return stages


def _reinitialize(module: nn.Module) -> None:
    if hasattr(module, "reset_parameters"):
        module.reset_parameters()
        return
    for p in module.parameters(recurse=False):  # e.g. HF embeddings / position codes held directly
        nn.init.normal_(p, std=0.02)


@dataclass
class RandomizationResult:
    """``spearman[s]``: mean Spearman of |map| between the trained model and the model with
    stages ``0..s`` randomized (``stages[s]`` names them), ``per_map[s]`` the values of each
    map; ``passes``: the last mean is below :data:`PASS_THRESHOLD`."""

    stages: list[list[str]]
    spearman: list[float]
    per_map: list[list[float]]

    @property
    def final(self) -> float:
        return self.spearman[-1]

    @property
    def passes(self) -> bool:
        return self.final < PASS_THRESHOLD


def cascading_randomization(
    model: nn.Module,
    explain: Callable[[nn.Module], torch.Tensor],
    *,
    n_stages: int = 6,
    seed: int = 0,
) -> RandomizationResult:
    """Run ``explain(model_copy) -> maps (N, H, W)`` on the trained model and after each
    cumulative randomization stage (see :func:`randomization_stages`); report Spearman of
    ``|map|`` with the trained maps. ``explain`` must keep its targets fixed (the same class,
    word, answer) so only the parameters change."""
    work = copy.deepcopy(model)
    reference = explain(work).detach().abs()
    stages = randomization_stages(work, n_stages)
    modules = dict(work.named_modules())
    per_map = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for stage in stages:
            with torch.no_grad():
                for name in stage:
                    _reinitialize(modules[name])
            per_map.append(spearman(reference, explain(work).detach().abs()).tolist())
    return RandomizationResult(stages, [round(sum(v) / len(v), 4) for v in per_map], per_map)
