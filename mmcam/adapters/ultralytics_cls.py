"""ultralytics YOLO classifiers (``yolo11n-cls``, ``yolo26n-cls``, ...) run as ``YOLO.predict`` runs them.

The classify predictor (``ClassificationPredictor.setup_source``) uses the checkpoint's own
``transforms`` when their size equals its ``imgsz``, else ``classify_transforms(imgsz)``:
``Resize`` (shorter side to ``imgsz``), ``CenterCrop(imgsz)``, ``ToTensor``, ``Normalize``
(mean 0, std 1). mmcam applies that same ``Compose`` to the photo and records the resize and
the crop in the frame (:meth:`~mmcam.adapters.frame.Frame.resize_crop`), so maps come back on
the photo, zero where the model saw nothing. The model is the fused copy the predictor runs
(:func:`~mmcam.adapters.ultralytics.fused`); in eval mode the ``Classify`` head returns
``(probabilities, logits)``: targets read the logits, ``probabilities`` are ``predict()``'s
``probs``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from .base import Family, Prepared, eval_mode
from .frame import Frame
from .ultralytics import fused

__all__ = ["YoloClassifier", "classify_logits", "is_yolo_classifier"]


def _inner(model: Any) -> Any:
    return model.model if type(model).__name__ in ("YOLO", "Model") else model


def is_yolo_classifier(model: Any) -> bool:
    """True for an ``ultralytics.YOLO`` (or its ``ClassificationModel``) ending in a ``Classify`` head."""
    inner = _inner(model)
    layers = getattr(inner, "model", None)
    return isinstance(inner, nn.Module) and isinstance(layers, nn.Sequential) and type(layers[-1]).__name__ == "Classify"


def classify_logits(output: Any) -> torch.Tensor:
    """The logits ``(B, classes)`` of the eval output ``(probabilities, logits)``."""
    return output[1] if isinstance(output, (tuple, list)) else output


class YoloClassifier(Family):
    """A YOLO classifier with its predictor's preprocessing (see the module docstring); ``size``:
    the predictor's ``imgsz`` (default: the model's, else 640)."""

    name = "ultralytics YOLO classifier"

    def __init__(self, model: Any, size: "int | tuple[int, int] | None" = None):
        from ultralytics.data.augment import classify_transforms
        from ultralytics.utils.checks import check_imgsz

        super().__init__(model)
        inner = _inner(model)
        self.inner = fused(inner)
        if size is None:
            for source in (getattr(model, "overrides", None), getattr(inner, "args", None)):
                size = source.get("imgsz") if isinstance(source, dict) else None
                if size:
                    break
        self.imgsz = check_imgsz(size or 640, stride=max(int(inner.stride.max()), 32) if hasattr(inner, "stride") else 32, min_dim=2)
        own = getattr(inner, "transforms", None)  # a trained checkpoint's; missing on yaml-built models
        own_size = getattr(own.transforms[0], "size", self.imgsz) if own is not None else None
        own_size = (own_size, own_size) if isinstance(own_size, int) else own_size
        self.transforms = own if own_size is not None and tuple(own_size) == tuple(self.imgsz) else classify_transforms(self.imgsz)
        names = getattr(model, "names", None) or getattr(inner, "names", None) or {}
        self.names = {int(k): str(v) for k, v in dict(names).items()}

    @property
    def module(self) -> nn.Module:
        return self.inner

    def context(self) -> Any:
        return eval_mode(self.inner)

    def default_layers(self, inputs: Any) -> str:
        """The last backbone stage, the map the ``Classify`` head pools."""
        return f"model.{len(self.inner.model) - 2}"

    def logits(self, output: Any) -> torch.Tensor:
        return classify_logits(output)

    def prepare(self, photo: Image.Image) -> Prepared:
        import torchvision.transforms as T

        x = self.transforms(photo)[None]
        steps = list(getattr(self.transforms, "transforms", ()))
        resize = next((t for t in steps if isinstance(t, T.Resize)), None)
        crop = next((t for t in steps if isinstance(t, T.CenterCrop)), None)
        w, h = photo.size
        if resize is not None and crop is not None:
            rw, rh = resize(photo).size  # the predictor's own Resize decides the size before the crop
            frame = Frame.resize_crop(
                (h, w), (rh, rw), tuple(x.shape[-2:]), f"ultralytics classify_transforms: resize {rh}x{rw}, centre crop {x.shape[-2]}x{x.shape[-1]}"
            )
        else:
            frame = Frame.resize((h, w), tuple(x.shape[-2:]), "ultralytics classify transforms")
        return Prepared(x, np.asarray(photo), frame)
