"""A classifier's decision: ``explain_classification`` / :class:`ClassificationTask`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..adapters.base import Family, Prepared, imagenet_prepare, processor_prepare
from ..adapters.frame import Frame
from ..engine import CAM
from ..errors import InputError
from ..explain import TaskExplanation, label_names
from ..io import load_image
from ..render.overlay import to_uint8_image
from ..targets import ClassLogit, TopClasses, logits_of
from .base import Task, device_of, stack

__all__ = ["ClassificationExplanation", "ClassificationTask", "Classifier", "explain_classification"]


@dataclass
class ClassificationExplanation(TaskExplanation):
    """Maps for the top classes of a classifier: ``items`` are class names."""

    task: str = "classification"


class Classifier(Family):
    """Any image classifier with its own pipeline: ``processor`` (an HF image processor, or a
    torchvision weights' ``transforms()``; its resize / crop is recorded in the frame), else
    the documented default: an HF model with a fixed ``config.image_size`` gets the photo
    resized to it, any other model the shorter side resized to 224 (aspect kept,
    :func:`mmcam.adapters.base.imagenet_prepare`), both with ImageNet mean / std. ``size``
    first resizes the photo to ``size × size``. A tensor image ``(3, H, W)`` / ``(1, 3, H, W)``
    is used as given (already normalised)."""

    name = "image classifier"

    def __init__(self, model: nn.Module, processor: Any = None, size: int | None = None):
        super().__init__(model, processor)
        fixed = getattr(getattr(model, "config", None), "image_size", None)
        if size is None and processor is None and fixed:
            size = int(fixed[0] if isinstance(fixed, (list, tuple)) else fixed)
        self.size = size

    def prepare(self, photo: Image.Image) -> Prepared:
        w, h = photo.size
        shown = photo if self.size is None else photo.resize((self.size, self.size), Image.BILINEAR)
        prepared = processor_prepare(self.processor, shown) if self.processor is not None else imagenet_prepare(shown, None if self.size else 224)
        if shown is not photo:
            inner = prepared.frame
            prepared.frame = Frame(
                (h, w),
                inner.input,
                (inner.scale[0] * self.size / h, inner.scale[1] * self.size / w),
                inner.offset,
                f"resize to {self.size}x{self.size}, then {inner.pipeline}",
            )
            prepared.photo = np.asarray(photo)
        return prepared

    def logits(self, output: Any) -> torch.Tensor:
        return logits_of(output)


class _OnLogits:
    """A classification target read on the family's logits (a YOLO classifier returns ``(probabilities, logits)``)."""

    def __init__(self, target: Any, logits: Any):
        self.target, self.logits = target, logits

    def __call__(self, output: Any) -> torch.Tensor:
        return self.target(self.logits(output))

    def pin(self, output: Any, image: int) -> list["_OnLogits"]:
        """The classes a ``TopClasses`` target picked on image ``image`` of ``output``, as fixed
        class targets (a moved input of ``gradcam-shift`` explains the same classes)."""
        if not isinstance(self.target, TopClasses):
            return [self]
        logits = self.logits(output).detach()
        return [_OnLogits(ClassLogit(c), self.logits) for c in logits[image].topk(min(self.target.k, logits.shape[1])).indices.tolist()]

    def __repr__(self) -> str:
        return repr(self.target)


def _tensor_prepared(image: torch.Tensor) -> Prepared:
    x = image if image.ndim == 4 else image[None]
    if x.ndim != 4 or x.shape[0] != 1:
        raise InputError(f"an image tensor must be (3, H, W) or (1, 3, H, W), got {tuple(image.shape)}")
    shown = x[0].float()
    shown = (shown - shown.min()) / (shown.max() - shown.min() + 1e-8)
    return Prepared(x, to_uint8_image(shown), Frame.resize(tuple(x.shape[-2:]), tuple(x.shape[-2:]), "the tensor as given"))


class ClassificationTask(Task):
    """The ``topk`` classes (or the given ``target`` classes) of each photo, one map each."""

    name = "classify"

    def __init__(
        self,
        model: nn.Module,
        *,
        target: "int | list[int] | None" = None,
        processor: Any = None,
        weights: Any = None,
        labels: "list[str] | dict[int, str] | None" = None,
        topk: int = 1,
        method: str | None = "gradcam",
        layers: Any = None,
        size: int | None = None,
        device: Any = None,
    ):
        if weights is not None:  # torchvision weights carry their own transforms and category names
            processor = processor or weights.transforms()
            labels = labels or list(weights.meta.get("categories", []))
        from ..adapters.ultralytics_cls import YoloClassifier, is_yolo_classifier

        yolo = is_yolo_classifier(model) and processor is None
        self.family: Any = YoloClassifier(model, size) if yolo else Classifier(model, processor, size)
        self.target = None if target is None else ([target] if isinstance(target, int) else list(target))
        self.topk, self.device = topk, device
        self.cam = CAM(self.family.module, layers if layers is not None or not yolo else self.family.default_layers(None), method=method or "gradcam")
        self.names = label_names(model, labels) if labels is not None or not yolo else self.family.names

    def prepare(self, image: Any) -> Prepared:
        if isinstance(image, torch.Tensor) and self.family.processor is None:
            return _tensor_prepared(image)
        return self.family.prepare(load_image(image))

    def run(self, batch: list[Prepared]) -> list[ClassificationExplanation]:
        results: list[Any] = [None] * len(batch)
        device = self.device or device_of(self.family.module)
        for rows in self.groups(batch):
            chosen = [TopClasses(self.topk)] if self.target is None else [ClassLogit(c) for c in self.target]
            targets = [_OnLogits(t, self.family.logits) for t in chosen]
            with self.family.context():
                exp = self.cam(stack([batch[i] for i in rows], device), targets)
            logits = self.family.logits(exp.output)
            probs = logits.softmax(-1)
            for b, i in enumerate(rows):
                classes = self.target if self.target is not None else logits[b].topk(min(self.topk, logits.shape[1])).indices.tolist()
                predicted = int(logits[b].argmax())
                results[i] = ClassificationExplanation(
                    image=batch[i].photo,
                    maps=batch[i].frame.maps_to_photo(exp.maps[b]),
                    items=[self.names.get(c, str(c)) for c in classes],
                    scores=exp.scores[b],
                    method=exp.method,
                    layers=exp.layers,
                    meta={
                        "classes": classes,
                        "probabilities": [round(float(probs[b, c]), 6) for c in classes],
                        "predicted": predicted,
                        "predicted_label": self.names.get(predicted, str(predicted)),
                        "pipeline": batch[i].frame.to_meta(),
                    },
                )
        return results


def explain_classification(
    model: nn.Module,
    image: Any,
    target: "int | list[int] | None" = None,
    *,
    processor: Any = None,
    weights: Any = None,
    labels: "list[str] | dict[int, str] | None" = None,
    topk: int = 1,
    method: str = "gradcam",
    layers: Any = None,
    size: int | None = None,
) -> ClassificationExplanation:
    """Explain a classifier's decision on one photo; maps at the photo's size.

    ``target``: a class index or list of them; by default the ``topk`` highest classes, all
    explained from one forward. The photo goes through the model's own pipeline: ``processor``
    (an HF image processor or any callable ``PIL image -> tensor``), ``weights`` (torchvision
    weights: their ``transforms()`` and category names), else shorter side 224 with ImageNet
    mean / std; a centre crop is undone (the map is zero outside what the model saw).
    ``labels`` names classes (else HF ``config.id2label``). ``meta["pipeline"]`` records the
    resize / crop. ultralytics YOLO classifiers (``YOLO("yolo11n-cls.pt")``) run their
    predictor's own ``classify_transforms`` (resize + centre crop, recorded in the frame) on the
    fused copy ``predict()`` runs; ``probabilities`` are its ``probs``
    (:mod:`mmcam.adapters.ultralytics_cls`). ``method="gradcam-shift"`` averages Grad-CAM over
    the input moved by fractions of the layer's stride (9 passes, the top classes pinned;
    :mod:`mmcam.methods.shifted`): on the zoo classifier it points at small objects more often
    (``docs/quality.md``), opt-in.
    """
    return ClassificationTask(
        model,
        target=target,
        processor=processor,
        weights=weights,
        labels=labels,
        topk=topk,
        method=method,
        layers=layers,
        size=size,
    )(image)
