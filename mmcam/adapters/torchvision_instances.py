"""torchvision Mask R-CNN instances and Keypoint R-CNN people: one map per kept instance / keypoint.

Both run as :class:`~mmcam.adapters.torchvision_detection.TorchvisionDetector` (the model's own
transform, score threshold, NMS and ``detections_per_img``; one photo per forward), and keep what
the model's eval output returns, in the photo's pixels:

* **Mask R-CNN** (He et al. 2017, https://arxiv.org/abs/1703.06870): ``masks`` ``(N, 1, H, W)``
  are the kept detections' mask probabilities pasted into the photo; the instance mask is
  ``masks > 0.5``, as torchvision's references threshold it. Instance k's score is its mask
  logits summed over its own predicted region, Seg-Grad-CAM for one instance:
  ``Σ_{(i,j) ∈ R_k} m_k[c_k, i, j]``, with ``m_k`` the ``mask_predictor`` logits of its ROI
  (28 × 28, read by a forward hook held for the call) for its class ``c_k`` and ``R_k`` where
  that logit is > 0 (the whole ROI if none is).
* **Keypoint R-CNN**: ``keypoints`` ``(N, 17, 3)`` = ``x, y, 1`` and ``keypoints_scores`` — each
  keypoint's heatmap logit at its peak (``heatmaps_to_keypoints``), which stays differentiable.
  Per kept person: its final score, then each keypoint's ``keypoints_scores[p, j]``.

Later forwards of a perturbation method score the detection with the same label overlapping the
frozen box most (IoU ≥ 0.5), over the frozen region, or 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from .base import Kept, eval_mode
from .frame import Frame
from .torchvision_detection import TorchvisionDetector, _detections

__all__ = ["TorchvisionMasks", "TorchvisionKeypoints", "is_mask_rcnn", "is_keypoint_rcnn"]


def _names(model: Any) -> set[str]:
    return {c.__name__ for c in type(model).__mro__} if isinstance(model, nn.Module) else set()


def is_mask_rcnn(model: Any) -> bool:
    """True for a torchvision Mask R-CNN (a ``mask_predictor`` in its ROI heads)."""
    return "MaskRCNN" in _names(model) and getattr(getattr(model, "roi_heads", None), "mask_predictor", None) is not None


def is_keypoint_rcnn(model: Any) -> bool:
    """True for a torchvision Keypoint R-CNN (a ``keypoint_predictor`` in its ROI heads)."""
    return "KeypointRCNN" in _names(model) and getattr(getattr(model, "roi_heads", None), "keypoint_predictor", None) is not None


def _matches(frozen: torch.Tensor, labels: list[int], det: dict, iou: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """For each frozen box, the same-label detection of ``det`` overlapping it most: ``(index, ok)``."""
    from torchvision.ops import box_iou

    if det["boxes"].shape[0] == 0:
        zeros = torch.zeros(len(labels), dtype=torch.long, device=det["boxes"].device)
        return zeros, zeros.bool()
    overlap = box_iou(frozen.to(det["boxes"].device), det["boxes"])
    same = torch.tensor(labels, device=overlap.device)[:, None] == det["labels"][None]
    best, where = torch.where(same, overlap, torch.zeros_like(overlap)).max(1)
    return where, best >= iou


class TorchvisionMasks(TorchvisionDetector):
    """A torchvision Mask R-CNN's kept instances (see the module docstring)."""

    name = "torchvision Mask R-CNN"

    def __init__(self, model: nn.Module, conf: float | None = None, max_boxes: int | None = None):
        if not is_mask_rcnn(model):
            raise InputError(f"{type(model).__name__} is not a torchvision Mask R-CNN (no roi_heads.mask_predictor)")
        super().__init__(model, conf=conf, max_boxes=max_boxes)
        self.logits: list[torch.Tensor] = []
        self.first: Any = None

    @contextmanager
    def _capturing(self) -> Iterator[None]:
        def keep(module: nn.Module, args: Any, out: torch.Tensor) -> None:
            self.logits[:] = [out]  # the latest forward's only (perturbation methods run many)

        handle = self.model.roi_heads.mask_predictor.register_forward_hook(keep)
        try:
            yield
        finally:
            handle.remove()
            self.logits = []

    def context(self) -> Any:
        @contextmanager
        def both() -> Iterator[None]:
            with eval_mode(self.model), self._capturing():
                yield

        return both()

    def decide(self, output: Any, frames: list[Frame]) -> list[Kept]:
        kept = super().decide(output, frames)[0]
        self.first = output  # the explained forward (Kept.subset keeps no extra)
        det = _detections(output)[0]
        kept.masks = det["masks"].detach()[kept.indices, 0] > 0.5  # (K, H, W) on the photo: the model's own
        logits = self._class_logits(self.logits[-1], kept.indices, kept.classes)
        kept.regions = torch.where((logits > 0).flatten(1).any(1)[:, None, None], logits > 0, torch.ones_like(logits, dtype=torch.bool))
        return [kept]

    @staticmethod
    def _class_logits(logits: torch.Tensor, rows: list[int], classes: list[int]) -> torch.Tensor:
        return logits.detach()[rows, classes] if rows else logits.new_zeros(0, *logits.shape[-2:])

    def mask_scores(self, output: Any, kept: Kept, b: int, pad: int) -> torch.Tensor:
        """``(N, pad)``: instance k's mask logits summed over its region (per image of the output)."""
        dets, logits = _detections(output), self.logits[-1]
        starts = torch.tensor([0] + [len(d["boxes"]) for d in dets]).cumsum(0).tolist()
        rows = []
        for i, det in enumerate(dets):
            own = logits[starts[i] : starts[i + 1]]
            if output is self.first:
                where, ok = torch.tensor(kept.indices, dtype=torch.long), torch.ones(len(kept), dtype=torch.bool)
            else:
                where, ok = _matches(kept.boxes, kept.classes, det)
            if not len(kept) or own.shape[0] == 0:
                rows.append(logits.sum() * 0 + torch.zeros(len(kept), device=logits.device))
                continue
            picked = own[where, torch.tensor(kept.classes, device=own.device)]  # (K, 28, 28)
            scores = (picked * kept.regions.to(picked.device)).flatten(1).sum(1)
            rows.append(torch.where(ok.to(scores.device), scores, torch.zeros_like(scores)))
        scores = torch.stack(rows)
        if pad > len(kept):
            scores = torch.cat([scores, scores.new_zeros(scores.shape[0], pad - len(kept))], 1)
        return scores

    def photo_masks(self, kept: Kept, frame: Frame) -> torch.Tensor:
        return kept.masks


class TorchvisionKeypoints(TorchvisionDetector):
    """A torchvision Keypoint R-CNN's kept people and their keypoints (see the module docstring)."""

    name = "torchvision Keypoint R-CNN"

    def __init__(self, model: nn.Module, conf: float | None = None, max_boxes: int | None = None):
        if not is_keypoint_rcnn(model):
            raise InputError(f"{type(model).__name__} is not a torchvision Keypoint R-CNN (no roi_heads.keypoint_predictor)")
        super().__init__(model, conf=conf, max_boxes=max_boxes)
        self.names: dict[int, str] = {}
        self.kpt_shape = (int(model.roi_heads.keypoint_predictor.kps_score_lowres.out_channels), 3)

    @property
    def per_person(self) -> int:
        """Maps per kept person: the person, then each keypoint."""
        return 1 + self.kpt_shape[0]

    def decide(self, output: Any, frames: list[Frame]) -> list[Kept]:
        kept = super().decide(output, frames)[0]
        det = _detections(output)[0]
        kept.extra["keypoints"] = det["keypoints"].detach()[kept.indices]  # photo pixels: x, y, 1
        kept.extra["keypoint_scores"] = det["keypoints_scores"].detach()[kept.indices]
        return [kept]

    def pose_scores(self, output: Any, kept: Kept, b: int, pad: int) -> torch.Tensor:
        """``(N, pad · per_person)``: each kept person's final score, then its keypoints' peak
        heatmap logits, person by person (padded with zeros)."""
        people = self.box_scores(output, kept, b, pad)  # (N, K)
        rows = []
        for det in _detections(output):
            if output is kept.extra["first"][0]:
                where, ok = torch.tensor(kept.indices, dtype=torch.long), torch.ones(len(kept), dtype=torch.bool)
            else:
                where, ok = _matches(kept.boxes, kept.classes, det)
            if not len(kept) or det["keypoints_scores"].shape[0] == 0:
                rows.append(people.new_zeros(len(kept), self.kpt_shape[0]))
                continue
            points = det["keypoints_scores"][where.to(people.device)]
            rows.append(torch.where(ok.to(points.device)[:, None], points, torch.zeros_like(points)))
        scores = torch.cat([people[..., None], torch.stack(rows)], 2).reshape(people.shape[0], -1)
        if pad > len(kept):
            scores = torch.cat([scores, scores.new_zeros(scores.shape[0], (pad - len(kept)) * self.per_person)], 1)
        return scores
