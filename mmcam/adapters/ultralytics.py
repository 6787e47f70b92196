"""ultralytics YOLO (v8 / 11) detection: kept boxes from NMS with their raw anchor indices.

The ``ultralytics.YOLO`` object users hold wraps a ``DetectionModel`` (``.model``), built in
train mode. mmcam runs that inner module in eval mode for the call (never ``YOLO.eval()`` or
``YOLO.train()``, which start training) and restores its flag. In eval mode it returns
``(y, raw)``: ``y`` ``(B, 4 + nc, A)`` decoded boxes and sigmoid scores, ``raw["scores"]``
``(B, nc, A)`` the pre-sigmoid logits. ``non_max_suppression(..., return_idxs=True)`` gives the
kept anchors, so box k's target is ``raw["scores"][:, cls_k, anchor_k]``: all boxes from the
same forward.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn

from ..errors import InputError, TargetError
from ..targets.detection import DetectionBoxScore

__all__ = [
    "is_yolo", "is_segment", "inner_model", "eval_mode", "neck_layers", "stride4_layer", "default_layers", "KeptBoxes", "FixedBoxes",
    "KeptInstances", "instance_masks", "drop_empty_masks", "class_names", "input_size", "num_classes", "decoded",
]


def is_yolo(model: Any) -> bool:
    """True for an ``ultralytics.YOLO`` object or its inner ``DetectionModel``."""
    names = {c.__name__ for c in type(model).__mro__}
    return bool(names & {"YOLO", "Model", "DetectionModel", "SegmentationModel"}) and (
        hasattr(model, "predictor") or hasattr(model, "yaml")
    )


def inner_model(model: Any) -> nn.Module:
    inner = model.model if not isinstance(model, nn.Module) or type(model).__name__ in ("YOLO", "Model") else model
    if not isinstance(inner, nn.Module) or not hasattr(inner, "model"):
        raise InputError(f"cannot find the ultralytics DetectionModel inside {type(model).__name__}")
    detect = inner.model[-1]
    if type(detect).__name__ not in ("Detect", "Segment", "v10Detect", "YOLOEDetect"):
        raise InputError(
            f"mmcam explains ultralytics detection/segmentation heads; this model ends in {type(detect).__name__}. "
            "Pass layers= and a callable target to mmcam.CAM for other heads"
        )
    return inner


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Every submodule in eval mode for the block; each ``training`` flag restored after."""
    flags = {m: m.training for m in module.modules()}
    try:
        module.eval()
        yield module
    finally:
        for m, flag in flags.items():
            m.training = flag


def neck_layers(inner: nn.Module) -> list[str]:
    """The P3/P4/P5 neck outputs the Detect head reads (its ``f`` sources)."""
    detect = inner.model[-1]
    return [f"model.{i}" for i in detect.f]


def stride4_layer(inner: nn.Module) -> str | None:
    """The last backbone module at stride 4 (YOLOv8's first C2f, YOLO11's first C3k2), found by
    following the strided convolutions of the sequential backbone."""
    stride, last = 1, None
    for index, module in enumerate(inner.model):
        if getattr(module, "f", -1) != -1:
            break
        conv = getattr(module, "conv", None)
        if isinstance(conv, nn.Conv2d):
            stride *= conv.stride[0]
        if stride == 4:
            last = index
        elif stride > 4:
            break
    return None if last is None else f"model.{last}"


def default_layers(inner: nn.Module) -> list[str]:
    """The stride-4 backbone stage plus the neck outputs (maps summed): measured on the zoo
    YOLO with LayerCAM, the pointing game rises from 0.89 (neck only, 8x8 at 64 px) to 0.97."""
    fine = stride4_layer(inner)
    return ([fine] if fine else []) + neck_layers(inner)


def is_segment(model: Any) -> bool:
    """True for a YOLO whose head predicts instance masks (a ``Segment`` head: mask
    coefficients per candidate and prototype masks)."""
    head = inner_model(model).model[-1]
    return hasattr(head, "proto") and hasattr(head, "nm")


def num_classes(inner: nn.Module) -> int:
    """Classes of the Detect / Segment head (a segment model's ``y`` has 32 mask-coefficient rows
    after them, which NMS must not read as classes)."""
    return int(inner.model[-1].nc)


def decoded(output: Any) -> torch.Tensor:
    """``y`` ``(B, 4 + nc [+ nm], A)`` of the eval output ``(y, raw)``; a Segment head's eval
    output is ``((y, proto), raw)``."""
    y = output[0]
    return y[0] if isinstance(y, (tuple, list)) else y


def class_names(model: Any) -> dict[int, str]:
    names = getattr(model, "names", None) or getattr(inner_model(model), "names", None) or {}
    return {int(k): str(v) for k, v in dict(names).items()}


def input_size(model: Any, default: int = 640) -> int:
    """The image size the model runs at: ``overrides["imgsz"]`` (set by a checkpoint or the
    user), else the inner model's training ``args``, else ``default``."""
    for source in (getattr(model, "overrides", None), getattr(inner_model(model), "args", None)):
        size = source.get("imgsz") if isinstance(source, dict) else None
        if size:
            return int(size[0] if isinstance(size, (list, tuple)) else size)
    return default


class KeptBoxes(DetectionBoxScore):
    """The boxes YOLO keeps (NMS on this very output), as ``(B=1, K)`` class logits.

    The first call runs NMS and freezes the kept anchors and classes; later calls (e.g. on
    masked inputs in Score-CAM) score the same boxes. A segment model's predictor also drops
    the boxes whose instance mask is empty; so does this target, given ``input_size`` (H, W)
    — the masks (ultralytics' ``process_mask``) are then kept in ``masks``.
    """

    def __init__(
        self, conf: float = 0.25, iou: float = 0.45, max_det: int = 300, nc: int = 0, box_weight: float = 0.0,
        input_size: "tuple[int, int] | None" = None,
    ):
        super().__init__([], [], box_weight)
        self.conf, self.iou, self.max_det, self.nc = conf, iou, max_det, nc
        self.input_size = None if input_size is None else (int(input_size[0]), int(input_size[1]))
        self.boxes: torch.Tensor | None = None
        self.confidences: torch.Tensor | None = None
        self.masks: torch.Tensor | None = None  # (K, H, W) bool, segment models with input_size

    def __call__(self, output: Any) -> torch.Tensor:
        if self.boxes is None:
            from ultralytics.utils.nms import non_max_suppression

            if not (isinstance(output, (tuple, list)) and len(output) == 2):
                raise TargetError("expected the eval-mode ultralytics output (y, raw); run the inner model in eval mode")
            y = decoded(output).detach()
            if y.shape[0] != 1:
                raise InputError("explain one image at a time (its kept boxes define the targets)")
            dets, idxs = non_max_suppression(
                y, conf_thres=self.conf, iou_thres=self.iou, max_det=self.max_det, nc=self.nc, return_idxs=True
            )
            self.boxes = dets[0][:, :4]
            self.confidences = dets[0][:, 4]
            self.indices = [int(i) for i in idxs[0].flatten().tolist()]
            self.classes = [int(c) for c in dets[0][:, 5].tolist()]
            if self.input_size is not None and _is_segment_output(output):
                self._keep_masked(output)
        return super().__call__(output)

    def _keep_masked(self, output: Any) -> None:
        """Instance masks of the kept boxes; boxes with an empty mask are dropped, as the
        segment predictor drops them."""
        self.masks = instance_masks(output, 0, self.indices, self.boxes, self.input_size)
        self._keep(self.masks.flatten(1).any(1))

    def _keep(self, keep: torch.Tensor) -> None:
        """Keep only the boxes where ``keep`` (bool ``(K,)``) is true, in every per-box field."""
        self.boxes, self.confidences = self.boxes[keep], self.confidences[keep]
        self.masks = None if self.masks is None else self.masks[keep]
        self.indices = [i for i, k in zip(self.indices, keep.tolist()) if k]
        self.classes = [c for c, k in zip(self.classes, keep.tolist()) if k]

    def __repr__(self) -> str:
        return f"KeptBoxes(conf={self.conf}, iou={self.iou}, kept={len(self.indices)})"


class FixedBoxes(DetectionBoxScore):
    """Given raw candidates ``indices`` with ``classes``, as ``(B, K)`` class logits; ``boxes`` and
    ``confidences`` are read from the first output scored (same attributes as :class:`KeptBoxes`)."""

    def __init__(self, indices: "list[int]", classes: "list[int]", box_weight: float = 0.0):
        super().__init__(indices, classes, box_weight)
        self.boxes: torch.Tensor | None = None
        self.confidences: torch.Tensor | None = None

    def __call__(self, output: Any) -> torch.Tensor:
        scores = super().__call__(output)
        if self.boxes is None and isinstance(output, (tuple, list)) and len(output) == 2:
            from ultralytics.utils.ops import xywh2xyxy

            y = decoded(output).detach()[0]  # (4 + nc [+ 32], A): xywh, class probabilities[, mask coefficients]
            self.boxes = xywh2xyxy(y[:4, self.indices].T)
            self.confidences = y[4:][self.classes, self.indices]
        return scores

    def __repr__(self) -> str:
        return f"FixedBoxes(indices={self.indices}, classes={self.classes})"


def _is_segment_output(output: Any) -> bool:
    return isinstance(output[0], (tuple, list)) and isinstance(output[1], dict) and "mask_coefficient" in output[1]


def instance_masks(output: Any, image: int, indices: "list[int]", boxes: torch.Tensor, input_size: tuple[int, int]) -> torch.Tensor:
    """``(K, H, W)`` bool: ultralytics' own instance masks (``process_mask``, upsampled to
    ``input_size``, cropped to ``boxes``) of candidates ``indices`` of image ``image`` in a
    segment model's eval output."""
    from ultralytics.utils.ops import process_mask

    if not indices:
        return torch.zeros(0, *input_size, dtype=torch.bool)
    coefficients, protos = output[1]["mask_coefficient"].detach()[image], output[0][1].detach()[image]
    return process_mask(protos, coefficients[:, indices].T, boxes, input_size, upsample=True).bool()


def drop_empty_masks(output: Any, image: int, indices: "list[int]", boxes: torch.Tensor, input_size: tuple[int, int] | None) -> torch.Tensor:
    """Which kept boxes a segment model's predictor reports: those whose instance mask is not
    empty (all of them for a detect model or without ``input_size``), as a bool ``(K,)``."""
    if input_size is None or not _is_segment_output(output):
        return torch.ones(len(indices), dtype=torch.bool)
    return instance_masks(output, image, indices, boxes, input_size).flatten(1).any(1)


class KeptInstances(KeptBoxes):
    """The instances a YOLO segment model keeps, as ``(B=1, K)`` mask scores.

    Instance k's mask logits are ``M_k = c_k · P`` (its 32 mask coefficients against the
    prototype masks ``P`` at stride 4), the quantity ultralytics thresholds at 0 and crops to
    the box. Its score is the Seg-Grad-CAM region sum for that mask: ``Σ_{p ∈ R_k} M_k(p)``,
    with ``R_k`` the instance's predicted mask at the prototype resolution (its box if the
    mask only appears after upsampling), fixed by the first call. The first call runs NMS
    and drops empty masks (as :class:`KeptBoxes` with ``input_size``, like the predictor),
    keeps only ``classes_wanted`` if given, and keeps ``regions`` (prototype resolution) and
    ``masks`` (input size) — ultralytics' own masks, from its ``process_mask``.
    """

    def __init__(
        self, input_size: tuple[int, int], conf: float = 0.25, iou: float = 0.45, max_det: int = 300, nc: int = 0,
        classes_wanted: "set[int] | None" = None,
    ):
        super().__init__(conf, iou, max_det, nc, input_size=input_size)
        self.classes_wanted = classes_wanted
        self.regions: torch.Tensor | None = None  # (K, mh, mw) bool

    @staticmethod
    def _parts(output: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``(coefficients (B, nm, A), prototypes (B, nm, mh, mw))`` of an eval-mode output."""
        if not (isinstance(output, (tuple, list)) and len(output) == 2 and isinstance(output[0], (tuple, list)) and isinstance(output[1], dict)):
            raise TargetError("expected a YOLO segment model's eval output ((y, proto), raw); is this a segment model in eval mode?")
        coefficients = output[1].get("mask_coefficient")
        if coefficients is None:
            raise TargetError("the YOLO output holds no mask coefficients (raw['mask_coefficient']); pass a segment model")
        return coefficients, output[0][1]

    def __call__(self, output: Any) -> torch.Tensor:
        coefficients, protos = self._parts(output)
        if self.regions is None:
            from ultralytics.utils.ops import crop_mask, process_mask

            super().__call__(output)  # NMS (indices, classes, boxes, confidences) and the non-empty masks
            if self.classes_wanted is not None:
                self._keep(torch.tensor([c in self.classes_wanted for c in self.classes], dtype=torch.bool))
            (mh, mw), (height, width) = protos.shape[-2:], self.input_size
            if len(self.indices):
                coeffs, proto = coefficients.detach()[0][:, self.indices].T, protos.detach()[0]  # (K, nm), (nm, mh, mw)
                small = process_mask(proto, coeffs, self.boxes, (height, width), upsample=False).bool()
                scale = self.boxes.new_tensor([mw / width, mh / height] * 2)
                box_only = crop_mask(torch.ones(len(self.indices), mh, mw, dtype=torch.uint8), self.boxes * scale).bool()
                empty = small.flatten(1).sum(1) == 0  # a mask that only appears after upsampling: its box
                self.regions = torch.where(empty[:, None, None], box_only, small)
            else:
                self.regions = torch.zeros(0, mh, mw, dtype=torch.bool)
        logits = torch.einsum("bnk,bnhw->bkhw", coefficients[:, :, self.indices], protos)
        return (logits * self.regions.to(logits.device)).flatten(2).sum(-1)

    def __repr__(self) -> str:
        return f"KeptInstances(conf={self.conf}, iou={self.iou}, kept={len(self.indices)})"
