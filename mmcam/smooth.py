"""Smoothing as wrappers around an explainer, not flags on every method.

* :class:`TTA` — test-time augmentation: explain flipped copies of the input, map each
  explanation back and average (Jacob Gildenblat's ``aug_smooth`` in pytorch-grad-cam).
* Eigen-smoothing is a method wrapper: :class:`mmcam.methods.EigenSmooth`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch

from .engine import CAM, Explanation
from .engine.combine import normalize
from .engine.inputs import Inputs
from .errors import InputError

__all__ = ["TTA"]

_FLIPS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]] = {
    "identity": (lambda x: x, lambda m: m),
    "hflip": (lambda x: x.flip(-1), lambda m: m.flip(-1)),
    "vflip": (lambda x: x.flip(-2), lambda m: m.flip(-2)),
}


class TTA:
    """Average a CAM over augmented inputs: ``M = mean_t T⁻¹(CAM(T(x)))``.

    ``transforms`` names from ``identity``, ``hflip``, ``vflip``, or ``(forward, inverse)``
    pairs acting on the image tensor and on ``(B, K, H, W)`` maps. Targets must not depend
    on the augmentation (class targets do; box targets do not).
    """

    def __init__(self, cam: CAM, transforms: Sequence[Any] = ("identity", "hflip")):
        self.cam = cam
        self.transforms = []
        for t in transforms:
            if isinstance(t, str):
                if t not in _FLIPS:
                    raise InputError(f"unknown transform {t!r}; pass one of {sorted(_FLIPS)} or a (forward, inverse) pair")
                t = _FLIPS[t]
            self.transforms.append(t)

    def __call__(self, inputs: Any, targets: Any = None, **kwargs: Any) -> Explanation:
        batch = Inputs(inputs)
        if batch.image is None:
            raise InputError("TTA augments the image tensor; pass it as the input or under 'pixel_values'")
        rows = torch.arange(batch.batch_size)
        results = []
        for forward, inverse in self.transforms:
            exp = self.cam(batch.take(rows, image=forward(batch.image)).value, targets, **kwargs)
            if targets is None:  # keep the first view's default classes for every view
                targets = exp.resolved_targets
            results.append((exp, inverse))
        maps = normalize(torch.stack([inv(e.maps) for e, inv in results]).mean(0))
        raw = torch.stack([inv(e.raw) for e, inv in results]).mean(0)
        first = results[0][0]
        return replace(first, maps=maps, raw=raw, method=f"{first.method}+tta")
