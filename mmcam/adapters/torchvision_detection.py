"""torchvision detectors (Faster / Mask / Keypoint R-CNN, RetinaNet, FCOS, SSD, SSDlite): one map per kept detection.

In eval mode these models return, per image, ``{"boxes", "labels", "scores"}`` after their
own score threshold, NMS and ``detections_per_img`` cut. The kept candidate indices are not
exposed, but the final ``scores`` are gathered from the head's outputs by indexing, so they
stay differentiable: kept detection k's target is ``output[0]["scores"][k]`` itself, and all
K detections are explained from the one forward that kept them. Later forwards (Score-CAM's
masked inputs) score the detection with the same label that overlaps the frozen box most
(IoU >= 0.5), or 0 if there is none.

At random init the class scores of all candidates are nearly equal (ties): which of them
survive NMS is arbitrary but deterministic for a given forward, and every kept detection is
read from the same forward, so the index mapping never crosses forwards.

Default layers: the FPN outputs the heads read (``FeaturePyramidNetwork.layer_blocks``, one
map per level, fused at the finest grid) — the detectors' equivalent of YOLO's P3/P4/P5,
found by type. The backbone body's last stage is stride 32 and the ROI / dense heads never
read it directly; the finest FPN level is stride 4 (Faster R-CNN) or 8 (RetinaNet, FCOS).
SSD / SSDlite have no FPN: their two finest feature maps the head reads (SSD300-VGG16: the
conv4_3 ``features`` at stride 8 and the first ``extra`` block at 16; SSDlite: the two
MobileNetV3 stages at strides 16 and 32).
The models resize and normalise inside (``model.transform``); the explained image is the
tensor given, in [0, 1].
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import InputError, TargetError
from ..targets.base import Target
from .base import Family, Kept, Prepared, eval_mode
from .frame import Frame

__all__ = ["FAMILIES", "is_torchvision_detector", "default_layers", "KeptDetections", "TorchvisionDetector"]

FAMILIES = ("FasterRCNN", "MaskRCNN", "KeypointRCNN", "RetinaNet", "FCOS", "SSD")


def is_torchvision_detector(model: Any) -> bool:
    """True for a torchvision Faster/Mask/Keypoint R-CNN, RetinaNet, FCOS or SSD / SSDlite (or a subclass)."""
    if not isinstance(model, nn.Module):
        return False
    names = {c.__name__ for c in type(model).__mro__}
    return bool(names & set(FAMILIES)) and hasattr(model, "transform") and hasattr(model, "backbone")


def default_layers(model: nn.Module) -> list[str]:
    """Every level's output block of the backbone's ``FeaturePyramidNetwork``; SSD / SSDlite: the
    two finest feature maps its head reads (see the module docstring)."""
    from torchvision.ops import FeaturePyramidNetwork

    backbone = getattr(model, "backbone", None)
    if "SSD" in {c.__name__ for c in type(model).__mro__} and hasattr(backbone, "features") and hasattr(backbone, "extra"):
        if type(backbone).__name__.startswith("SSDLite"):
            return ["backbone.features.0", "backbone.features.1"]
        return ["backbone.features", "backbone.extra.0"]

    for name, module in model.named_modules():
        if isinstance(module, FeaturePyramidNetwork):
            return [f"{name}.layer_blocks.{i}" for i in range(len(module.layer_blocks))]
    raise InputError(
        f"found no FeaturePyramidNetwork in {type(model).__name__}; pass layers= (a backbone stage the heads read, a name from model.named_modules())"
    )


def _detections(output: Any) -> list[dict]:
    if isinstance(output, (list, tuple)) and output and all(isinstance(o, dict) and "scores" in o for o in output):
        return list(output)
    raise TargetError(
        f"expected a torchvision detector's eval output [{{'boxes', 'labels', 'scores'}}], got {type(output).__name__}; run the model in eval mode"
    )


class KeptDetections(Target):
    """The detections the model keeps on this very output, as ``(B=1, K)`` final scores.

    ``select``: explain only these kept positions (default: those scoring above ``conf``, all
    if ``None``; at most ``max_boxes``). The first call freezes ``boxes``, ``labels``, ``confidences`` and
    ``positions`` (indices into the model's kept list). ``box_weight`` adds ``box_weight · IoU``
    of the matched detection with the frozen box (``box_weight`` on the explained forward, as
    in :class:`mmcam.targets.DetectionBoxScore`).
    """

    def __init__(self, max_boxes: int | None = None, select: "list[int] | None" = None, conf: float | None = None, iou: float = 0.5, box_weight: float = 0.0):
        if box_weight < 0:
            raise TargetError(f"box_weight must be >= 0, got {box_weight}")
        self.max_boxes, self.select, self.conf, self.iou, self.box_weight = max_boxes, select, conf, iou, float(box_weight)
        self.boxes: torch.Tensor | None = None
        self.labels: list[int] = []
        self.confidences: torch.Tensor | None = None
        self.positions: list[int] = []

    def __call__(self, output: Any) -> torch.Tensor:
        dets = _detections(output)
        if self.boxes is None:
            if len(dets) != 1:
                raise InputError("explain one image at a time (its kept detections define the targets)")
            return self._decide(dets[0])
        return torch.stack([self._rescore(det) for det in dets])

    def _decide(self, det: dict) -> torch.Tensor:
        scores = det["scores"]
        n = scores.shape[0]
        if self.select is not None:
            positions = [int(i) for i in self.select]
        elif self.conf is not None:
            positions = [int(i) for i in (scores.detach() > self.conf).nonzero().flatten().tolist()]
        else:
            positions = list(range(n))
        bad = [i for i in positions if not 0 <= i < n]
        if bad:
            raise TargetError(f"detection index {bad[0]} is out of range: the model kept {n} detection(s) (0..{n - 1})")
        self.positions = positions[: self.max_boxes]
        self.boxes = det["boxes"].detach()[self.positions]
        self.labels = [int(c) for c in det["labels"][self.positions].tolist()]
        self.confidences = scores.detach()[self.positions]
        return scores[self.positions][None] + self.box_weight  # each box is its own reference: IoU 1

    def _rescore(self, det: dict) -> torch.Tensor:
        """On another forward: the score of the same-label detection overlapping each frozen box
        most (IoU >= ``iou``), else 0."""
        from torchvision.ops import box_iou

        scores = det["scores"]
        if not self.positions or scores.shape[0] == 0:
            return scores.new_zeros(len(self.positions))
        overlap = box_iou(self.boxes.to(scores.device), det["boxes"])
        same = torch.tensor(self.labels, device=scores.device)[:, None] == det["labels"][None]
        best, where = torch.where(same, overlap, torch.zeros_like(overlap)).max(1)
        return torch.where(best >= self.iou, scores[where] + self.box_weight * best, torch.zeros_like(best))

    def __repr__(self) -> str:
        return f"KeptDetections(kept={len(self.positions)})"


class TorchvisionDetector(Family):
    """A torchvision detector with its own pipeline: the photo goes in as a ``[0, 1]`` tensor at
    its size and the model's ``transform`` resizes (``min_size`` / ``max_size``), normalises and
    pads it; its ``postprocess`` returns boxes in the photo's pixels. The frame is that resize
    into the padded batch, so maps come back to the photo. One photo per forward."""

    name = "torchvision detector"
    batched = False

    def __init__(self, model: nn.Module, conf: float | None = None, max_boxes: int | None = None, candidates: Any = None, box_weight: float = 0.0):
        super().__init__(model)
        self.conf, self.max_boxes, self.box_weight = conf, max_boxes, box_weight
        self.select = None if candidates is None else [int(i) for i in candidates[0]]

    def context(self) -> Any:
        return eval_mode(self.model)

    def default_layers(self, inputs: Any) -> list[str]:
        return default_layers(self.model)

    def prepare(self, photo: Any) -> Prepared:
        import numpy as np

        arr = np.asarray(photo)
        x = torch.from_numpy(arr.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
        with torch.no_grad(), eval_mode(self.model):
            batch = self.model.transform(x)[0]
        padded = tuple(int(v) for v in batch.tensors.shape[-2:])
        (rh, rw), (h, w) = batch.image_sizes[0], arr.shape[:2]
        frame = Frame(
            (h, w), padded, (rh / h, rw / w), (0.0, 0.0), f"{type(self.model.transform).__name__}: resize to {rh}x{rw}, pad to {padded[0]}x{padded[1]}"
        )
        return Prepared(x, arr, frame)

    def decide(self, output: Any, frames: list) -> list[Kept]:
        target = KeptDetections(max_boxes=self.max_boxes, select=self.select, conf=self.conf, box_weight=self.box_weight)
        scores = target(output)  # decides on this very output; boxes are in the photo already
        boxes = target.boxes if target.boxes is not None else torch.zeros(0, 4)
        return [Kept(target.positions, target.labels, target.confidences, boxes, boxes, extra={"target": target, "first": (output, scores)})]

    def box_scores(self, output: Any, kept: Kept, b: int, pad: int) -> torch.Tensor:
        first, scores = kept.extra["first"]
        return scores if output is first else kept.extra["target"](output)
