"""Detection targets: one scalar per kept box, addressed by its raw prediction index.

A detector predicts many candidates (anchors for YOLO, queries for DETR) and keeps a few.
The score to explain for kept box k is the class **logit** of its raw candidate: sigmoid
probabilities of ~1e-4 give vanishing gradients, logits do not.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..errors import TargetError
from .base import Target

__all__ = ["DetectionBoxScore", "detection_logits"]


def detection_logits(output: Any) -> torch.Tensor:
    """Class logits as ``(B, num_classes, num_candidates)``.

    ultralytics eval output ``(y, {"scores": (B, nc, A), ...})``; HF DETR-style outputs
    with ``logits`` ``(B, Q, C)``.
    """
    if isinstance(output, (tuple, list)) and len(output) == 2 and isinstance(output[1], Mapping) and "scores" in output[1]:
        return output[1]["scores"]
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, Mapping):
        logits = output.get("logits")
    if isinstance(logits, torch.Tensor) and logits.ndim == 3:
        return logits.transpose(1, 2)
    raise TargetError(
        f"cannot find detection class logits in a {type(output).__name__} output; supported: ultralytics "
        "YOLO (eval output), HF DETR-family (.logits). Pass a callable target that returns (B, K) scores"
    )


class DetectionBoxScore(Target):
    """``(B, K)``: the logit of class ``classes[k]`` at raw candidate ``indices[k]``."""

    def __init__(self, indices: Sequence[int], classes: Sequence[int]):
        if len(indices) != len(classes):
            raise TargetError("DetectionBoxScore needs one class per index")
        self.indices = [int(i) for i in indices]
        self.classes = [int(c) for c in classes]

    def __call__(self, output: Any) -> torch.Tensor:
        logits = detection_logits(output)
        if self.indices and max(self.indices) >= logits.shape[2]:
            raise TargetError(f"box index {max(self.indices)} is out of range for {logits.shape[2]} candidates")
        if self.classes and max(self.classes) >= logits.shape[1]:
            raise TargetError(f"class {max(self.classes)} is out of range for {logits.shape[1]} classes")
        return logits[:, self.classes, self.indices]

    def __repr__(self) -> str:
        return f"DetectionBoxScore(indices={self.indices}, classes={self.classes})"
