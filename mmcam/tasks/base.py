"""A task, defined once in batched form; one image is a batch of one.

Every task is a :class:`Task`: ``read(path)`` and ``prepare(image)`` run in a DataLoader
worker (the photo through the model family's own pipeline), ``explain(batch)`` explains a
list of prepared photos with one forward per group of stackable inputs and returns one
explanation per photo, in the photo's coordinates. The single-image ``explain_*`` calls are
``task(image)``; ``mmcam batch`` runs the same objects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..adapters.base import Family, Prepared
from ..engine.guard import untouched
from ..explain import TaskExplanation
from ..io import load_image
from ..targets.base import Target

__all__ = ["Task", "ImageItems", "stack", "groups", "device_of"]


class Task:
    """One task on one model family (see the module docstring). ``batched``: whether
    ``explain`` stacks photos with equal input shapes into one forward."""

    name = "task"
    batched = True
    family: Family

    def read(self, path: str) -> Any:
        """The file at ``path`` as the viewer shows it (in a worker)."""
        return load_image(path)

    def prepare(self, image: Any) -> Prepared:
        """One photo through the family's own pipeline (in a worker)."""
        return self.family.prepare(load_image(image))

    def explain(self, batch: list[Prepared]) -> list[TaskExplanation]:
        """One explanation per prepared photo. The model is left exactly as found, also by the
        task's own passes outside the engine (prediction forwards, ``generate()``, eval-mode
        toggles), and concurrent calls on one model take turns (:func:`mmcam.engine.guard.untouched`)."""
        with untouched(self.family.module):
            return self.run(batch)

    def run(self, batch: list[Prepared]) -> list[TaskExplanation]:
        raise NotImplementedError

    def __call__(self, image: Any) -> TaskExplanation:
        return self.explain([self.prepare(image)])[0]

    def groups(self, batch: list[Prepared]) -> list[list[int]]:
        """Positions of the photos explained together (equal input shapes, if batched)."""
        return groups(batch) if self.batched else [[i] for i in range(len(batch))]


def groups(batch: list[Prepared]) -> list[list[int]]:
    """Positions of the prepared photos whose inputs stack, in first-seen order."""
    found: dict[Any, list[int]] = {}
    for i, prepared in enumerate(batch):
        found.setdefault(prepared.signature(), []).append(i)
    return list(found.values())


def device_of(model: Any) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def stack(prepared: list[Prepared], device: Any) -> Any:
    """The inputs of ``prepared`` (equal shapes) as one batch on ``device``."""
    first = prepared[0].inputs
    if isinstance(first, torch.Tensor):
        return torch.cat([p.inputs for p in prepared]).to(device)
    return {k: torch.cat([p.inputs[k] for p in prepared]).to(device) if isinstance(v, torch.Tensor) else v for k, v in first.items()}


class ImageItems(Target):
    """Image ``b``'s items of a batch as ``(N, K)`` columns, K the batch's largest count.

    ``decide(output)`` returns every image's kept items (a list of sized objects) and runs on
    the first output scored (the explained forward), exactly once; ``score(output, kept, b,
    K)`` returns image b's ``(N, K)`` columns, padded (the task drops the padding)."""

    def __init__(self, decision: "Decision", b: int):
        self.decision, self.b = decision, b

    def __call__(self, output: Any) -> torch.Tensor:
        kept = self.decision(output)
        return self.decision.score(output, kept[self.b], self.b, max(len(k) for k in kept))

    def __repr__(self) -> str:
        kept = self.decision.kept
        return f"{self.decision.label}(image={self.b}" + ("" if kept is None else f", kept={len(kept[self.b])}") + ")"


class Decision:
    """The kept items of a batch, decided once on the explained forward's output."""

    def __init__(self, decide: Callable[[Any], list[Any]], score: Callable[..., torch.Tensor], label: str = "KeptItems"):
        self.decide, self.score, self.label = decide, score, label
        self.kept: list[Any] | None = None

    def __call__(self, output: Any) -> list[Any]:
        if self.kept is None:
            self.kept = self.decide(output)
        return self.kept

    def targets(self, count: int) -> list[list[ImageItems]]:
        """One per-image target list for each of ``count`` images."""
        return [[ImageItems(self, b)] for b in range(count)]
