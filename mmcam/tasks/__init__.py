"""One call per task, each returning a :class:`mmcam.explain.TaskExplanation` with metadata."""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "explain_classification": "mmcam.tasks.classification",
    "ClassificationExplanation": "mmcam.tasks.classification",
    "ClassificationTask": "mmcam.tasks.classification",
    "DetectionTask": "mmcam.tasks.detection",
    "SegmentationTask": "mmcam.tasks.segmentation",
    "explain_action": "mmcam.tasks.action",
    "ActionExplanation": "mmcam.tasks.action",
    "explain_segmentation": "mmcam.tasks.segmentation",
    "explain_detections": "mmcam.tasks.detection",
    "explain_pose": "mmcam.tasks.pose",
    "PoseTask": "mmcam.tasks.pose",
    "PoseExplanation": "mmcam.tasks.pose",
    "explain_caption": "mmcam.tasks.caption",
    "explain_vqa": "mmcam.tasks.vqa",
    "explain_generation": "mmcam.tasks.generation",
    "GenerationExplanation": "mmcam.tasks.generation",
    "VQAExplanation": "mmcam.tasks.vqa",
    "explain_similarity": "mmcam.tasks.similarity",
    "SimilarityExplanation": "mmcam.tasks.similarity",
    "CaptionExplanation": "mmcam.tasks.caption",
    "DetectionExplanation": "mmcam.tasks.detection",
    "SegmentationExplanation": "mmcam.tasks.segmentation",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mmcam.tasks' has no attribute {name!r}")
