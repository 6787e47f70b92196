"""ultralytics YOLO pose models (YOLOv8 / YOLO11 ``Pose``, YOLO26 ``Pose26``) run as ``YOLO.predict`` runs them.

In eval mode a pose head returns ``(y, raw)``: ``y`` ``(B, 4 + nc + nk, A)`` (boxes, sigmoid
class scores, decoded keypoints ``x, y, visibility`` per anchor) and ``raw["kpts"]`` ``(B, nk, A)``
the undecoded keypoints, whose every third row is the visibility **logit**. The pose predictor
keeps persons by ``non_max_suppression(nc=len(names))`` and scales their keypoints to the photo
with ``scale_coords``; :class:`YoloPose` does the same on the explained forward (letterbox and
fused copy as :class:`~mmcam.adapters.ultralytics.YoloFamily`), so ``keypoints`` equal
``Results.keypoints.data``. Scores: per kept person, its class logit, then each keypoint's
visibility logit at the kept anchor (``raw["kpts"][:, 3 j + 2, anchor]``).
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import InputError
from ..targets.detection import padded_box_scores
from .base import Kept
from .frame import Frame
from .ultralytics import YoloFamily, inner_model

__all__ = ["YoloPose", "is_pose"]


def is_pose(model: Any) -> bool:
    """True for a YOLO whose head predicts keypoints (``kpt_shape``)."""
    try:
        return hasattr(inner_model(model).model[-1], "kpt_shape")
    except InputError:
        return False


class YoloPose(YoloFamily):
    """A YOLO pose model (see the module docstring); the arguments are the predictor's."""

    name = "ultralytics YOLO pose"

    def __init__(self, model: Any, conf: float = 0.25, iou: float = 0.7, max_det: int = 300, size: Any = None):
        if not is_pose(model):
            raise InputError(
                f"explain_pose explains ultralytics YOLO pose models (Pose / Pose26 heads: yolov8n-pose, yolo11n-pose, "
                f"yolo26n-pose); {type(model).__name__} has no keypoint head. Boxes: mmcam.explain_detections; any other "
                "model: mmcam.CAM(model, layers) with a callable target output -> (B, K) keypoint scores"
            )
        super().__init__(model, conf=conf, iou=iou, max_det=max_det, size=size)
        self.kpt_shape = tuple(int(v) for v in self.inner.model[-1].kpt_shape)
        if self.kpt_shape[1] != 3:
            raise InputError(
                f"this pose head predicts keypoints {self.kpt_shape} without a visibility score; mmcam explains a keypoint "
                "by its visibility logit. Pass a callable target on raw['kpts'] to mmcam.CAM instead"
            )

    @property
    def per_person(self) -> int:
        """Maps per kept person: the person, then each keypoint."""
        return 1 + self.kpt_shape[0]

    def _kept(self, output: Any, b: int, frame: Frame, boxes: torch.Tensor, confidences: torch.Tensor, indices: list[int], classes: list[int]) -> Kept:
        from ultralytics.utils.ops import scale_coords

        kept = super()._kept(output, b, frame, boxes, confidences, indices, classes)
        y = output[0].detach()
        points = y[b, -self.kpt_shape[0] * 3 :, indices].T.reshape(len(indices), *self.kpt_shape)  # input pixels
        kept.extra["keypoints"] = scale_coords(frame.input, points.clone(), frame.photo)  # the predictor's, on the photo
        return kept

    def pose_scores(self, output: Any, kept: Kept, b: int, pad: int) -> torch.Tensor:
        """``(N, pad · per_person)``: each kept person's class logit and its keypoints' visibility
        logits at its anchor, person by person; padded with anchor 0."""
        people = padded_box_scores(output, kept, b, pad)  # (N, pad)
        anchors = list(kept.indices) + [0] * (pad - len(kept))
        visibility = output[1]["kpts"][:, 2::3][:, :, anchors]  # (N, nkpt, pad)
        return torch.cat([people[:, None], visibility], 1).transpose(1, 2).reshape(people.shape[0], -1)
