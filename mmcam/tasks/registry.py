"""Every task by name, built once for a model: what ``mmcam explain`` and ``mmcam batch`` run.

``build_task(name, model, processor, ...)`` returns the task object (:class:`mmcam.tasks.base.Task`):
``read`` / ``prepare`` in DataLoader workers, ``explain`` on a batch. The single-image
``explain_*`` calls are the same objects on a batch of one.
"""

from __future__ import annotations

from typing import Any

from ..adapters.vlm import is_generative_vlm
from ..errors import InputError
from .base import Task

__all__ = ["TASKS", "BATCHED_TASKS", "build_task"]

TASKS = ("classify", "segment", "detect", "pose", "caption", "vqa", "action")
#: tasks whose ``explain`` stacks photos of equal input shape into one forward (detect: YOLO
#: and DETR families; torchvision detectors take one photo per forward)
BATCHED_TASKS = ("classify", "segment", "action", "detect", "pose")


def build_task(
    task: str,
    model: Any,
    processor: Any = None,
    *,
    method: str | None = None,
    layers: Any = None,
    topk: int = 1,
    conf: float | None = None,
    question: str | None = None,
    device: Any = None,
    box_weight: float = 0.0,
    text: "list[str] | None" = None,
) -> Task:
    """The task object of ``task`` for ``model`` (with the model family's own pipeline)."""
    if task == "classify":
        from .classification import ClassificationTask

        return ClassificationTask(model, processor=processor, topk=topk, method=method, layers=layers, device=device)
    if task == "segment":
        from .segmentation import SegmentationTask

        return SegmentationTask(model, processor=processor, method=method, layers=layers, device=device, **({} if conf is None else {"conf": conf}))
    if task == "detect":
        from .detection import DetectionTask

        return DetectionTask(model, processor=processor, conf=conf, method=method, layers=layers, device=device, box_weight=box_weight, text=text)
    if task == "pose":
        from .pose import PoseTask

        return PoseTask(model, method=method, layers=layers, device=device, **({} if conf is None else {"conf": conf}))
    if task in ("caption", "vqa") and is_generative_vlm(model):
        from .caption import CAPTION_PROMPT
        from .generation import GenerationTask, chat_prompt

        text = CAPTION_PROMPT if task == "caption" else question
        if not text or not text.strip():
            raise InputError("the vqa task needs a question (--question 'what color is the circle ?')")
        return GenerationTask(model, processor, chat_prompt(processor, text), method=method, layers=layers, task=task)
    if task == "caption":
        from .caption import CaptionTask

        return CaptionTask(model, processor, method=method, layers=layers)
    if task == "vqa":
        from .vqa import VQATask

        return VQATask(model, processor, question or "", method=method, layers=layers)
    if task == "action":
        from .action import ActionTask

        return ActionTask(model, method=method, layers=layers, device=device)
    raise InputError(f"unknown task {task!r}; pass one of {', '.join(TASKS)}")
