"""End-to-end YOLO heads (YOLO26, YOLOv10) run NMS-free, as ``YOLO.predict(nms=False)`` runs them.

A YOLO26 / YOLOv10 head has two branches: one-to-many (trained with many positives per object,
decoded with NMS) and one-to-one (one positive per object, no NMS). ultralytics 8.4's predictor
picks the branch before fusing (``AutoBackend(end2end=args.nms is False)``): by default the
one-to-many branch and NMS — :class:`~mmcam.adapters.ultralytics.YoloFamily` as for YOLOv8 —
and with ``nms=False`` the one-to-one branch. Its eval output is then
``(y, {"one2many": {}, "one2one": {"boxes", "scores", "feats"[, "mask_coefficient"]}})`` with
``y`` ``(B, k, 6 [+ nm])`` = ``[x1, y1, x2, y2, score, class]`` of the head's top-k
(``Detect.get_topk_index`` over the sigmoid scores, ``k = max_det``; the predictor sets
``max_det = max(its max_det, 300)``), and the predictor keeps the rows above ``conf``, at most
``max_det`` (``non_max_suppression(end2end=True)``).

:class:`YoloEndToEnd` keeps exactly those rows and maps each to its raw anchor: the head's own
``get_topk_index`` on the same scores gives the anchor of every top-k row. Box k's score is the
one-to-one class logit ``one2one["scores"][:, cls_k, anchor_k]``; a Segment26 instance's is its
mask logits summed over its region, from the one-to-one mask coefficients.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import InputError
from ..targets.detection import padded_box_scores
from .base import Kept
from .frame import Frame
from .ultralytics import YoloFamily, inner_model

__all__ = ["YoloEndToEnd", "has_one2one", "yolo_family"]


def has_one2one(model: Any) -> bool:
    """True for a YOLO whose head carries a one-to-one branch (YOLO26, YOLOv10)."""
    head = inner_model(model).model[-1]
    return getattr(head, "one2one_cv2", None) is not None or getattr(head, "one2one_cv3", None) is not None


def yolo_family(model: Any, *, nms: "bool | None" = None, **kwargs: Any) -> YoloFamily:
    """The YOLO family object for ``predict(nms=...)``: ``nms=False`` on a YOLO26 / YOLOv10 head
    runs its one-to-one branch (:class:`YoloEndToEnd`); otherwise NMS, as the predictor does."""
    from .ultralytics_world import YoloWorldFamily, is_text_yolo

    if is_text_yolo(model):  # its class embeddings live outside the parameters: synced on mmcam's copy
        if nms is False:
            raise InputError("nms=False (the one-to-one branch) is not explained for YOLO-World / YOLOE; pass nms=None")
        return YoloWorldFamily(model, **kwargs)
    if nms is False and has_one2one(model):
        return YoloEndToEnd(model, **kwargs)
    return YoloFamily(model, **kwargs)


def _one2one(output: Any) -> tuple[Any, dict[str, Any]]:
    """The end-to-end eval output as the NMS family reads it: ``(y part, the one-to-one raw dict)``."""
    if not (isinstance(output, (tuple, list)) and len(output) == 2 and isinstance(output[1], dict) and "one2one" in output[1]):
        raise InputError("expected the eval output of an end-to-end YOLO head (y, {'one2many', 'one2one'}); run it with nms=False")
    return output[0], output[1]["one2one"]


class YoloEndToEnd(YoloFamily):
    """A YOLO26 / YOLOv10 model run as ``YOLO.predict(nms=False)`` runs it (see the module docstring)."""

    name = "ultralytics YOLO (end-to-end, one-to-one head)"

    def __init__(
        self,
        model: Any,
        conf: float = 0.25,
        iou: float = 0.7,
        max_det: int = 300,
        size: Any = None,
        candidates: Any = None,
        box_weight: float = 0.0,
        attribute: str = "score",
    ):
        if attribute != "score":
            raise InputError(f"attribute={attribute!r} (ODAM's box-coordinate maps) applies to the NMS heads; pass nms=None, or attribute='score'")
        if candidates is not None:
            raise InputError(
                "candidates= scores raw anchors of the NMS head; an end-to-end (nms=False) head decodes only its top-k rows. "
                "Pass nms=None to explain anchors by index, or leave candidates unset"
            )
        if box_weight:
            raise InputError("box_weight applies to the NMS heads; pass box_weight=0 with nms=False")
        super().__init__(model, conf=conf, iou=iou, max_det=max_det, size=size, end2end=True)
        self.head = self.inner.model[-1]
        self.topk = max(max_det, 300)  # the predictor's set_head_attr(max_det=max(args.max_det, 300))

    def context(self) -> Any:
        self.head.max_det, self.head.agnostic_nms = self.topk, False  # the fused copy is mmcam's own
        return super().context()

    def decide(self, output: Any, frames: list[Frame]) -> list[Kept]:
        from ultralytics.utils.nms import non_max_suppression

        y, raw = _one2one(output)
        y = (y[0] if isinstance(y, (tuple, list)) else y).detach()
        scores = raw["scores"].detach().sigmoid().permute(0, 2, 1)  # (B, A, nc), as the head's postprocess sees them
        anchors = self.head.get_topk_index(scores, self.head.max_det)[2]  # (B, k): the raw anchor of each top-k row
        dets, rows = non_max_suppression(y, self.conf, self.iou, max_det=self.max_det, end2end=True, return_idxs=True)
        kept = []
        for b, (frame, d, r) in enumerate(zip(frames, dets, rows)):
            indices = [int(i) for i in anchors[b][r].tolist()]
            kept.append(self._kept(output, b, frame, d[:, :4], d[:, 4], indices, [int(c) for c in d[:, 5].tolist()]))
        return kept

    def _masks(self, output: Any, b: int, kept: Kept, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        return super()._masks(_one2one(output), b, kept, size)

    def box_scores(self, output: Any, kept: Kept, b: int, pad: int) -> torch.Tensor:
        """``(N, pad)``: the one-to-one class logits of image b's kept boxes, padded."""
        return padded_box_scores(_one2one(output), kept, b, pad)

    def mask_scores(self, output: Any, kept: Kept, b: int, pad: int) -> torch.Tensor:
        return super().mask_scores(_one2one(output), kept, b, pad)
