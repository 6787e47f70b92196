"""Targets: callables turning a model output into the scalar(s) to explain, ``(B,)`` or ``(B, K)``."""

from .base import Difference, Scaled, Sum, Target, logits_of
from .classification import ClassLogit, ClassProbability, RawScore, TopClasses
from .detection import DetectionBoxScore, detection_logits
from .rl import ActionValue, GreedyActionValue, action_values
from .segmentation import SegmentationRegion, segmentation_logits
from .similarity import ImageTextSimilarity
from .text import CaptionTokens

__all__ = [
    "Target",
    "Sum",
    "Difference",
    "Scaled",
    "logits_of",
    "ClassLogit",
    "ClassProbability",
    "RawScore",
    "TopClasses",
    "DetectionBoxScore",
    "detection_logits",
    "ActionValue",
    "GreedyActionValue",
    "action_values",
    "CaptionTokens",
    "ImageTextSimilarity",
    "SegmentationRegion",
    "segmentation_logits",
]
