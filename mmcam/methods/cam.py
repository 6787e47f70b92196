"""CAM: the classifier's own weights on a global-average-pooled feature map."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import MethodError
from .base import Context, WeightMethod

__all__ = ["ClassActivationMap"]


class ClassActivationMap(WeightMethod):
    """CAM (Zhou et al., CVPR 2016, https://arxiv.org/abs/1512.04150).

    For a network ending in ``GAP → Linear``: ``L^c = Σ_k w^c_k A_k`` with ``w^c`` the
    linear layer's row for class ``c``. Targets must be class targets (``ClassLogit`` /
    ``ClassProbability`` or a class index). ``fc`` defaults to the model's last
    ``nn.Linear`` whose ``in_features`` equals the layer's channel count.
    Grad-CAM generalises it: on such a network the two maps are equal up to a factor.
    """

    name = "cam"
    needs_grads = False

    def __init__(self, fc: nn.Linear | None = None):
        self.fc = fc

    def weights(self, acts: torch.Tensor, grads: torch.Tensor | None, ctx: Context) -> torch.Tensor:
        channels = acts.shape[1]
        fc = self.fc or _final_linear(ctx.model, channels)
        if fc.in_features != channels:
            raise MethodError(f"the linear layer takes {fc.in_features} features but the layer has {channels} channels")
        index = []
        for b in range(acts.shape[0]):
            row = []
            for t in ctx.targets.items(b):
                if not hasattr(t, "index") or not isinstance(t.index, int):
                    raise MethodError(f"cam needs class targets (a class index or ClassLogit), got {t!r}; use gradcam for other targets")
                row.append(t.index)
            index.append(row)
        return fc.weight[torch.tensor(index, device=fc.weight.device)].to(acts.dtype)


def _final_linear(model: nn.Module, channels: int) -> nn.Linear:
    found = [m for m in model.modules() if isinstance(m, nn.Linear) and m.in_features == channels]
    if not found:
        raise MethodError(
            f"cam needs a final nn.Linear with {channels} inputs after global average pooling; "
            "none found. Pass ClassActivationMap(fc=model.your_head) or use gradcam"
        )
    return found[-1]
