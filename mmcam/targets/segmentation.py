"""Segmentation targets: the logits of a class summed over a region (Seg-Grad-CAM,
Vinogradova et al. 2020, https://arxiv.org/abs/2002.11434)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import TargetError
from .base import Target, logits_of

__all__ = ["SegmentationRegion", "segmentation_logits"]


def segmentation_logits(output: Any) -> torch.Tensor:
    """``(B, C, h, w)`` logits from HF (``.logits``), torchvision (``["out"]``) or a tensor."""
    try:
        logits = logits_of(output, "out")
    except TargetError:
        logits = logits_of(output)
    if logits.ndim != 4:
        raise TargetError(f"segmentation targets need (B, C, h, w) logits, got {tuple(logits.shape)}; pass a semantic segmenter's output or a callable target")
    return logits


class SegmentationRegion(Target):
    """``Σ_{p ∈ region} y^c_p`` for each class in ``classes`` → ``(B, K)``.

    ``mask`` (``(H, W)`` or ``(B, H, W)``, any resolution; resized to the logits by nearest
    neighbour) fixes the region; without it the region is where the model predicts the
    class (argmax, taken from the output itself, without gradient).
    """

    def __init__(self, classes: "int | Sequence[int]", mask: torch.Tensor | None = None):
        self.classes = [int(classes)] if isinstance(classes, int) else [int(c) for c in classes]
        self.mask = mask

    def region(self, logits: torch.Tensor) -> torch.Tensor:
        """``(B, K, h, w)`` float masks at the logits' resolution."""
        if self.mask is not None:
            mask = torch.as_tensor(self.mask, dtype=torch.float32, device=logits.device)
            mask = mask[None] if mask.ndim == 2 else mask
            mask = F.interpolate(mask[:, None], size=logits.shape[-2:], mode="nearest")
            return mask.expand(logits.shape[0], len(self.classes), -1, -1)
        pred = logits.detach().argmax(1)
        return torch.stack([(pred == c).float() for c in self.classes], 1)

    def __call__(self, output: Any) -> torch.Tensor:
        logits = segmentation_logits(output)
        for c in self.classes:
            if not 0 <= c < logits.shape[1]:
                raise TargetError(f"class {c} is out of range for {logits.shape[1]} classes; pass 0..{logits.shape[1] - 1}")
        picked = logits[:, self.classes]
        return (picked * self.region(logits)).flatten(2).sum(-1)

    def __repr__(self) -> str:
        return f"SegmentationRegion({self.classes}{', mask' if self.mask is not None else ''})"
