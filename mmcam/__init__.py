"""mmcam: class activation maps (Grad-CAM and its family) for the tasks people really run.

>>> import mmcam
>>> cam = mmcam.CAM(model, "layer4", method="gradcam")      # doctest: +SKIP
>>> exp = cam(images, targets=[3, 7])                        # doctest: +SKIP
>>> exp.maps.shape                                           # (B, K, H, W) in [0, 1]

Importing mmcam imports torch only; transformers and ultralytics load when an adapter
needs them.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import methods, reshape, targets
from .engine import CAM, Explanation
from .errors import ForwardError, GradientError, InputError, LayerError, MethodError, MMCamError, MMCamWarning, TargetError

__version__ = "0.1.0"

__all__ = [
    "CAM",
    "Explanation",
    "methods",
    "reshape",
    "targets",
    "MMCamError",
    "LayerError",
    "MethodError",
    "TargetError",
    "GradientError",
    "InputError",
    "ForwardError",
    "MMCamWarning",
    "GuidedBackprop",
    "GuidedGradCAM",
    "explain_classification",
    "ClassificationExplanation",
    "explain_caption",
    "explain_detections",
    "explain_segmentation",
    "explain_pose",
    "explain_action",
    "explain_vqa",
    "explain_generation",
    "explain_similarity",
    "tasks",
    "TTA",
    "data",
    "zoo",
    "metrics",
    "render",
]

_LAZY = {
    "GuidedBackprop": ("mmcam.engine.guided", "GuidedBackprop"),
    "GuidedGradCAM": ("mmcam.engine.guided", "GuidedGradCAM"),
    "explain_classification": ("mmcam.tasks.classification", "explain_classification"),
    "ClassificationExplanation": ("mmcam.tasks.classification", "ClassificationExplanation"),
    "TTA": ("mmcam.smooth", "TTA"),
    "explain_caption": ("mmcam.tasks.caption", "explain_caption"),
    "explain_generation": ("mmcam.tasks.generation", "explain_generation"),
    "explain_detections": ("mmcam.tasks.detection", "explain_detections"),
    "explain_segmentation": ("mmcam.tasks.segmentation", "explain_segmentation"),
    "explain_pose": ("mmcam.tasks.pose", "explain_pose"),
    "explain_action": ("mmcam.tasks.action", "explain_action"),
    "explain_vqa": ("mmcam.tasks.vqa", "explain_vqa"),
    "explain_similarity": ("mmcam.tasks.similarity", "explain_similarity"),
}
_SUBMODULES = {"data", "zoo", "metrics", "render", "adapters", "explain", "smooth", "tasks", "loading"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    if name in _SUBMODULES:
        return importlib.import_module(f"mmcam.{name}")
    raise AttributeError(f"module 'mmcam' has no attribute {name!r}")
