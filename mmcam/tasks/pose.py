"""Per kept person one map for the person and one per keypoint: ``explain_pose`` / :class:`PoseTask`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..adapters.base import Kept, Prepared
from ..adapters.ultralytics_pose import YoloPose
from ..explain import TaskExplanation
from ..render.detection import draw_box, draw_points
from .detection import DetectionTask

__all__ = ["PoseExplanation", "PoseTask", "explain_pose"]


@dataclass
class PoseExplanation(TaskExplanation):
    """``items`` person by person: ``"<label> <conf>"``, then ``"<label> #p kpt j"`` per keypoint.
    ``meta``: ``boxes`` / ``confidences`` / ``class_ids`` / ``raw_indices`` per person (photo
    pixels), ``keypoints`` ``(P, nkpt, 3)`` = ``x, y, visibility`` on the photo (the predictor's
    ``keypoints.data``), ``person`` and ``keypoint`` of every map (keypoint ``-1``: the person)."""

    task: str = "pose"

    def overlays(self, alpha: float = 0.5) -> list[np.ndarray]:
        """Each map with its person's box and keypoints drawn on it (the explained keypoint larger)."""
        boxes, points = self.meta.get("boxes", []), self.meta.get("keypoints", [])
        out = []
        for img, p, j in zip(super().overlays(alpha), self.meta.get("person", []), self.meta.get("keypoint", [])):
            img = draw_points(draw_box(img, boxes[p]), points[p], radius=2) if p < len(points) else draw_box(img, boxes[p])
            out.append(draw_points(img, [points[p][j]], color=(255, 214, 10), radius=5) if j >= 0 and p < len(points) else img)
        return out


class PoseTask(DetectionTask):
    """Every kept person of each photo (see :func:`explain_pose`); run as a detection task, with
    the person's and its keypoints' scores per kept person."""

    name = "pose"

    def __init__(
        self,
        model: Any,
        *,
        conf: float = 0.25,
        iou: float = 0.7,
        max_people: int = 300,
        method: str | None = "layercam",
        layers: Any = None,
        size: int | None = None,
        device: Any = None,
    ):
        from ..adapters.torchvision_instances import TorchvisionKeypoints, is_keypoint_rcnn

        if is_keypoint_rcnn(model):
            self.family: Any = TorchvisionKeypoints(model, conf=conf, max_boxes=max_people)
            self.names = {1: "person"}  # Keypoint R-CNN's classes: background, person
        else:
            self.family = YoloPose(model, conf=conf, iou=iou, max_det=max_people, size=size)
            self.names = self.family.names
        self.batched = self.family.batched
        self.method, self.layers, self.device, self.conf = method or "layercam", layers, device, conf

    def item_scores(self) -> Any:
        return self.family.pose_scores

    def _finish(self, prepared: Prepared, exp: Any, b: int, kept: Kept) -> PoseExplanation:
        per, n = self.family.per_person, len(kept)
        labels = [self.names.get(c, str(c)) for c in kept.classes]
        confidences = [float(c) for c in kept.confidences.tolist()] if n else []
        items = [f"{label} {c:.2f}" if j == 0 else f"{label} #{p} kpt {j - 1}" for p, (label, c) in enumerate(zip(labels, confidences)) for j in range(per)]
        meta: dict[str, Any] = {
            "boxes": [[round(float(v), 2) for v in box] for box in kept.photo_boxes.tolist()] if n else [],
            "confidences": confidences,
            "class_ids": list(kept.classes),
            "raw_indices": list(kept.indices),
            "keypoints": kept.extra["keypoints"].tolist() if n else [],
            **({"keypoint_scores": kept.extra["keypoint_scores"].tolist() if n else []} if "keypoint_scores" in kept.extra else {}),
            "person": [p for p in range(n) for _ in range(per)],
            "keypoint": [j - 1 for _ in range(n) for j in range(per)],
            "pipeline": prepared.frame.to_meta(),
        }
        if not n:
            meta["note"] = f"nothing to explain: no person above conf={self.conf}"
        return PoseExplanation(
            image=prepared.photo,
            maps=prepared.frame.maps_to_photo(exp.maps[b, : n * per]),
            items=items,
            scores=exp.scores[b, : n * per],
            method=exp.method,
            layers=exp.layers,
            meta=meta,
        )


def explain_pose(
    model: Any,
    image: Any,
    *,
    conf: float = 0.25,
    iou: float = 0.7,
    max_people: int = 300,
    method: str = "layercam",
    layers: Any = None,
    size: int | None = None,
) -> PoseExplanation:
    """Explain every person a YOLO pose model keeps on one image, all from one forward: per
    person one map for the person (its class logit) and one per keypoint (the keypoint's
    visibility logit at the person's anchor). People are kept as the pose predictor keeps them
    (NMS at ``conf`` / ``iou``, at most ``max_people``: its ``conf``, ``iou``, ``max_det``; the
    letterbox and fused copy of :func:`mmcam.explain_detections`); ``meta["keypoints"]`` are its
    ``keypoints.data`` on the photo. Default layers and method as for YOLO boxes
    (:mod:`mmcam.adapters.ultralytics_pose`).

    torchvision Keypoint R-CNN: the model's own kept people above ``conf`` (at most
    ``max_people``); per person its final score, then each keypoint's peak heatmap logit
    (``keypoints_scores``); ``meta["keypoints"]`` / ``meta["keypoint_scores"]`` are the model's
    ``keypoints`` / ``keypoints_scores`` on the photo; default layers its FPN levels
    (:mod:`mmcam.adapters.torchvision_instances`)."""
    return PoseTask(model, conf=conf, iou=iou, max_people=max_people, method=method, layers=layers, size=size)(image)
