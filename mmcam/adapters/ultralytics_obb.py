"""ultralytics oriented-box models (YOLOv8 / YOLO11 ``OBB``, YOLO26 ``OBB26``) run as ``YOLO.predict`` runs them.

An OBB head adds one angle per anchor to the Detect head: in eval mode it returns ``(y, raw)``
with ``y`` ``(B, 4 + nc + 1, A)`` = centre, width, height (input pixels), sigmoid class scores
and the angle ``θ`` (radians; ``OBB`` squashes its logit to ``[-π/4, 3π/4)``, ``OBB26`` keeps it
raw), and ``raw["angle"]`` ``(B, 1, A)`` the same angles. The OBB predictor keeps boxes with
``non_max_suppression(nc=len(names), rotated=True)`` (rotated IoU: ``batch_probiou``) and scales
them back with ``scale_boxes(..., xywh=True)``, the angle unchanged (``OBBPredictor.construct_result``).
:class:`YoloOBB` does the same on the explained forward (letterbox and fused copy as
:class:`~mmcam.adapters.ultralytics.YoloFamily`), so the rotated boxes equal
``Results.obb.xywhr``; a YOLO26-OBB head with ``nms=False`` runs its one-to-one branch
(:class:`YoloOBBEndToEnd`, top-k rows as :mod:`mmcam.adapters.ultralytics_e2e`).

Box k's score is its class logit at its anchor, ``raw["scores"][:, cls_k, anchor_k]``, as for
upright YOLO boxes. ``Kept.boxes`` / ``photo_boxes`` are the upright boxes enclosing the
rotated ones (``Results.obb.xyxy``); ``extra["xywhr"]`` and ``extra["polygons"]`` (4 corners,
``xywhr2xyxyxyxy``) are the rotated boxes on the photo.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import InputError
from .base import Kept, Prepared
from .frame import Frame
from .ultralytics import YoloFamily, inner_model, num_classes
from .ultralytics_e2e import YoloEndToEnd, has_one2one

__all__ = ["YoloOBB", "YoloOBBEndToEnd", "is_obb", "obb_family"]


def is_obb(model: Any) -> bool:
    """True for a YOLO whose head predicts an angle per anchor (``OBB``, ``OBB26``)."""
    try:
        head = inner_model(model).model[-1]
    except InputError:
        return False
    return hasattr(head, "ne") and hasattr(head, "cv4") and not hasattr(head, "kpt_shape")


def obb_family(model: Any, *, nms: "bool | None" = None, **kwargs: Any) -> YoloFamily:
    """The OBB family object for ``predict(nms=...)``: ``nms=False`` on a YOLO26-OBB head runs its
    one-to-one branch; otherwise rotated NMS, as the OBB predictor does."""
    if nms is False and has_one2one(model):
        return YoloOBBEndToEnd(model, **kwargs)
    return YoloOBB(model, **kwargs)


def _angles(output: Any, b: int, indices: list[int]) -> torch.Tensor:
    """The angle of each kept anchor: ``raw["angle"]`` (the one-to-one branch's for an end-to-end head)."""
    raw = output[1]
    raw = raw["one2one"] if "one2one" in raw else raw
    return raw["angle"].detach()[b, 0, indices]


class _Rotated:
    """The rotated boxes of the kept anchors, on the photo as the OBB predictor returns them."""

    def _kept(self, output: Any, b: int, frame: Frame, boxes: torch.Tensor, confidences: torch.Tensor, indices: list[int], classes: list[int]) -> Kept:
        from ultralytics.utils.ops import scale_boxes, xywhr2xyxyxyxy

        xywhr = torch.cat([boxes[:, :4], _angles(output, b, indices)[:, None].to(boxes.dtype)], 1)  # input pixels
        photo = xywhr.clone()
        photo[:, :4] = scale_boxes(frame.input, photo[:, :4], frame.photo, xywh=True)
        corners = [xywhr2xyxyxyxy(r) for r in (xywhr, photo)]
        upright = [torch.stack([c[..., 0].amin(1), c[..., 1].amin(1), c[..., 0].amax(1), c[..., 1].amax(1)], -1) for c in corners]
        return Kept(indices, classes, confidences, upright[0], upright[1], extra={"xywhr": photo, "polygons": corners[1]})

    def item_meta(self, prepared: Prepared, kept: Kept) -> dict[str, Any]:
        """What a detection explanation's ``meta`` adds: ``rotated_boxes`` ``[cx, cy, w, h, θ]``
        and ``polygons`` (4 corners each), in the photo's pixels."""
        if not len(kept):
            return {"rotated_boxes": [], "polygons": []}
        return {
            "rotated_boxes": [[round(float(v), 4) for v in row] for row in kept.extra["xywhr"].tolist()],
            "polygons": [[[round(float(v), 2) for v in point] for point in poly] for poly in kept.extra["polygons"].tolist()],
        }


class YoloOBB(_Rotated, YoloFamily):
    """A YOLO OBB model run as ``YOLO.predict`` runs it (see the module docstring); the arguments
    are the predictor's."""

    name = "ultralytics YOLO OBB"

    def __init__(self, model: Any, conf: float = 0.25, iou: float = 0.7, max_det: int = 300, size: Any = None, candidates: Any = None, **options: Any):
        if not is_obb(model):
            raise InputError(f"{type(model).__name__} has no oriented-box head (OBB / OBB26); upright boxes: mmcam.explain_detections")
        if candidates is not None or options.get("box_weight") or options.get("attribute", "score") != "score":
            raise InputError(
                "an OBB model explains its kept rotated boxes by their class logits; candidates=, box_weight and attribute= apply to "
                "upright YOLO boxes. For other targets pass layers= and a callable target (output -> (B, K)) to mmcam.CAM"
            )
        super().__init__(model, conf=conf, iou=iou, max_det=max_det, size=size)

    def decide(self, output: Any, frames: list[Frame]) -> list[Kept]:
        """Each image's kept rotated boxes: the OBB predictor's rotated NMS on this output."""
        from ultralytics.utils.nms import non_max_suppression

        y = output[0].detach()
        dets, idxs = non_max_suppression(y, self.conf, self.iou, max_det=self.max_det, nc=num_classes(self.inner), rotated=True, return_idxs=True)
        return [
            self._kept(output, b, frame, d[:, :4], d[:, 4], [int(i) for i in ix.flatten().tolist()], [int(c) for c in d[:, 5].tolist()])
            for b, (frame, d, ix) in enumerate(zip(frames, dets, idxs))
        ]


class YoloOBBEndToEnd(_Rotated, YoloEndToEnd):
    """A YOLO26-OBB model run as ``YOLO.predict(nms=False)`` runs it: the one-to-one top-k rows
    above ``conf`` (``[cx, cy, w, h, score, class, θ]``), each mapped to its raw anchor."""

    name = "ultralytics YOLO OBB (end-to-end, one-to-one head)"
