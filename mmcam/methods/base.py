"""The method protocol: a weighting rule over one layer's activations and gradients.

Shapes, for one layer with ``S = h * w`` positions (spatial axes flattened):
``acts`` is ``(B, C, S)``, ``grads`` is ``(B, K, C, S)`` (``None`` for gradient-free
methods) and a method returns the map before ReLU, ``(B, K, S)``. The engine owns hooks,
ReLU, fusion, normalisation and upsampling; a method owns only its weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

__all__ = ["Context", "Method", "WeightMethod", "ElementwiseMethod"]


@dataclass
class Context:
    """What a method may ask the engine for beyond ``acts`` and ``grads``."""

    model: nn.Module
    inputs: Any  # mmcam.engine.inputs.Inputs
    targets: Any  # mmcam.engine.targets.TargetSet
    layer: tuple[str, nn.Module]
    grid: tuple[int, int]
    channel_dim: int
    scores: torch.Tensor  # (B, K), the explained scalars of the unperturbed forward
    batch_size: int
    rescore: Callable[..., torch.Tensor]  # (inputs, rows, edit=None) -> (N, K) without grad
    progress: bool | None = None


class Method:
    """Base class: subclasses set ``name`` and override :meth:`cam` (or a helper below)."""

    name: ClassVar[str] = ""
    needs_grads: ClassVar[bool] = True

    def cam(self, acts: torch.Tensor, grads: torch.Tensor | None, ctx: Context) -> torch.Tensor:
        raise NotImplementedError

    def contributions(self, acts: torch.Tensor, grads: torch.Tensor | None, ctx: Context) -> torch.Tensor:
        """Per-channel terms ``(B, K, C, S)`` whose channel sum is :meth:`cam` (for eigen-smoothing)."""
        raise NotImplementedError(f"{self.name} has no per-channel decomposition")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class WeightMethod(Method):
    """Methods of the form ``L^k = Σ_c α^k_c A_c``: override :meth:`weights` → ``(B, K, C)``."""

    def weights(self, acts: torch.Tensor, grads: torch.Tensor | None, ctx: Context) -> torch.Tensor:
        raise NotImplementedError

    def cam(self, acts, grads, ctx):
        return torch.einsum("bkc,bcs->bks", self.weights(acts, grads, ctx), acts)

    def contributions(self, acts, grads, ctx):
        return self.weights(acts, grads, ctx)[..., None] * acts[:, None]


class ElementwiseMethod(Method):
    """Methods that weight each position separately: override :meth:`contributions`."""

    def cam(self, acts, grads, ctx):
        return self.contributions(acts, grads, ctx).sum(2)
