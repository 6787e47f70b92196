"""The target protocol: a callable ``output -> scores`` of shape ``(B,)`` or ``(B, K)``.

A target knows the task, nothing about CAM methods. Any callable works; subclassing
:class:`Target` adds composition: ``a + b``, ``a - b`` ("why A and not B"), ``2.0 * a``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..errors import TargetError

__all__ = ["Target", "Sum", "Difference", "Scaled", "logits_of"]


class Target:
    """Base class of mmcam's targets; subclasses implement ``__call__(output)``."""

    def __call__(self, output: Any) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __add__(self, other: "Target") -> "Target":
        return Sum(self, other)

    def __sub__(self, other: "Target") -> "Target":
        return Difference(self, other)

    def __mul__(self, factor: float) -> "Target":
        return Scaled(self, float(factor))

    __rmul__ = __mul__


class Sum(Target):
    """The sum of several targets' scores (same shape)."""

    def __init__(self, *parts: Any):
        self.parts = parts

    def __call__(self, output: Any) -> torch.Tensor:
        return torch.stack([p(output) for p in self.parts]).sum(0)

    def __repr__(self) -> str:
        return " + ".join(map(repr, self.parts))


class Difference(Target):
    """``a(output) - b(output)``: the contrastive "why A rather than B" target."""

    def __init__(self, a: Any, b: Any):
        self.a, self.b = a, b

    def __call__(self, output: Any) -> torch.Tensor:
        return self.a(output) - self.b(output)

    def __repr__(self) -> str:
        return f"({self.a!r} - {self.b!r})"


class Scaled(Target):
    def __init__(self, target: Any, factor: float):
        self.target, self.factor = target, factor

    def __call__(self, output: Any) -> torch.Tensor:
        return self.factor * self.target(output)

    def __repr__(self) -> str:
        return f"{self.factor} * {self.target!r}"


def logits_of(output: Any, key: str = "logits") -> torch.Tensor:
    """The logits tensor of a model output: a tensor, ``output.logits`` / ``output["logits"]``,
    or the first element of a tuple."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping) and key in output:
        return output[key]
    if hasattr(output, key) and isinstance(getattr(output, key), torch.Tensor):
        return getattr(output, key)
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TargetError(f"cannot find {key!r} in a model output of type {type(output).__name__}; pass a target callable that picks the score from this output")
