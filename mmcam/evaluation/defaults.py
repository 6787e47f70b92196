"""The method ``mmcam evaluate`` scores when none is named: the task's own default for the model,
as ``mmcam explain`` and the ``explain_*`` calls would pick it."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["default_method"]


def default_method(task: str, model: Any, processor: Any, samples: list[Any], layers: Any = None) -> str:
    """The name of ``task``'s default method for ``model`` (``layers`` given: the default with
    those layers, e.g. Grad-CAM instead of a caption model's attention default). ``action``: the
    first sample's observation decides (SARFA on a cell grid, else Grad-CAM)."""
    if task == "action":
        from ..tasks.action import default_method as for_observation

        return for_observation(torch.from_numpy(samples[0].obs)) if samples else "gradcam"
    from ..tasks.registry import build_task

    built = build_task(task, model, processor, layers=layers, question="what is it ?" if task == "vqa" else None)
    method = getattr(built, "method", None) or built.cam.method  # the classification task keeps its CAM
    return method if isinstance(method, str) else method.name
