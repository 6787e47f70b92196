"""Classification targets: a class logit, a class probability, a raw output score."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import TargetError
from .base import Target, logits_of

__all__ = ["ClassLogit", "ClassProbability", "RawScore", "TopClasses"]


def _checked_logits(output: Any, index: int) -> torch.Tensor:
    logits = logits_of(output)
    if logits.ndim != 2:
        raise TargetError(f"class targets need (B, num_classes) logits, got shape {tuple(logits.shape)}; pass a task target (mmcam.targets) or a callable")
    if not -logits.shape[1] <= index < logits.shape[1]:
        raise TargetError(f"class index {index} is out of range for {logits.shape[1]} classes; pass an index in 0..{logits.shape[1] - 1}")
    return logits


class ClassLogit(Target):
    """The pre-softmax score of class ``index``: ``y^c`` in Grad-CAM (arXiv:1610.02391)."""

    def __init__(self, index: int):
        self.index = int(index)

    def __call__(self, output: Any) -> torch.Tensor:
        return _checked_logits(output, self.index)[:, self.index]

    def __repr__(self) -> str:
        return f"ClassLogit({self.index})"


class ClassProbability(Target):
    """The softmax probability of class ``index``."""

    def __init__(self, index: int):
        self.index = int(index)

    def __call__(self, output: Any) -> torch.Tensor:
        return _checked_logits(output, self.index).softmax(-1)[:, self.index]

    def __repr__(self) -> str:
        return f"ClassProbability({self.index})"


class RawScore(Target):
    """The model's raw output as the score: ``(B,)``, ``(B, 1)`` or column ``index`` of ``(B, N)``."""

    def __init__(self, index: int | None = None):
        self.index = index

    def __call__(self, output: Any) -> torch.Tensor:
        out = logits_of(output)
        if self.index is not None:
            return _checked_logits(out, self.index)[:, self.index]
        if out.ndim == 1:
            return out
        if out.ndim == 2 and out.shape[1] == 1:
            return out[:, 0]
        raise TargetError(f"RawScore() needs a (B,) or (B, 1) output, got {tuple(out.shape)}; pass index=")

    def __repr__(self) -> str:
        return f"RawScore({self.index})"


class TopClasses(Target):
    """The logits of each image's ``k`` highest classes, as ``(B, k)`` — k maps at once."""

    def __init__(self, k: int = 5):
        self.k = int(k)

    def __call__(self, output: Any) -> torch.Tensor:
        logits = logits_of(output)
        return logits.topk(min(self.k, logits.shape[1]), dim=1).values

    def __repr__(self) -> str:
        return f"TopClasses({self.k})"
