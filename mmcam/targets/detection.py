"""Detection targets: one scalar per kept box, addressed by its raw prediction index.

A detector predicts many candidates (anchors for YOLO, queries for DETR) and keeps a few.
The score to explain for kept box k is the class **logit** of its raw candidate: sigmoid
probabilities of ~1e-4 give vanishing gradients, logits do not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..errors import TargetError
from .base import Target

__all__ = ["BOX_ATTRIBUTES", "DetectionBoxScore", "detection_logits", "candidate_boxes", "paired_iou", "padded_box_scores"]


def detection_logits(output: Any) -> torch.Tensor:
    """Class logits as ``(B, num_classes, num_candidates)``.

    ultralytics eval output ``(y, {"scores": (B, nc, A), ...})``; HF DETR-style outputs
    with ``logits`` ``(B, Q, C)``.
    """
    if isinstance(output, (tuple, list)) and len(output) == 2 and isinstance(output[1], Mapping) and "scores" in output[1]:
        return output[1]["scores"]
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, Mapping):
        logits = output.get("logits")
    if isinstance(logits, torch.Tensor) and logits.ndim == 3:
        return logits.transpose(1, 2)
    raise TargetError(
        f"cannot find detection class logits in a {type(output).__name__} output; supported: ultralytics "
        "YOLO (eval output), HF DETR-family (.logits). Pass a callable target that returns (B, K) scores"
    )


def candidate_boxes(output: Any) -> torch.Tensor:
    """Every candidate's box as ``(B, num_candidates, 4)`` corners ``(x0, y0, x1, y1)`` in the
    output's own frame, differentiable: ultralytics' decoded ``y[:, :4]`` (centre, size in
    input pixels), HF DETR-family ``pred_boxes`` (centre, size, normalised to [0, 1])."""
    if isinstance(output, (tuple, list)) and len(output) == 2 and isinstance(output[1], Mapping):
        y = output[0][0] if isinstance(output[0], (tuple, list)) else output[0]  # a Segment head: (y, proto)
        centre_size = y[:, :4].transpose(1, 2)
    else:
        centre_size = getattr(output, "pred_boxes", None)
        if centre_size is None and isinstance(output, Mapping):
            centre_size = output.get("pred_boxes")
        if not isinstance(centre_size, torch.Tensor):
            raise TargetError(
                f"cannot find candidate boxes in a {type(output).__name__} output for the box term; supported: "
                "ultralytics YOLO (eval output), HF DETR-family (.pred_boxes). Pass box_weight=0"
            )
    cx, cy, w, h = centre_size.unbind(-1)
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), -1)


def paired_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection over union of corresponding boxes ``(..., 4)`` (corners), elementwise."""
    wh = (torch.minimum(a[..., 2:], b[..., 2:]) - torch.maximum(a[..., :2], b[..., :2])).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area = lambda t: (t[..., 2] - t[..., 0]).clamp(min=0) * (t[..., 3] - t[..., 1]).clamp(min=0)  # noqa: E731
    union = area(a) + area(b) - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), torch.zeros_like(union))


#: What a box target can explain: its class logit, or one corner coordinate of its box (ODAM's
#: "each predicted attribute"), in the output's own frame (ultralytics: input pixels; DETR:
#: normalised to [0, 1]).
BOX_ATTRIBUTES = ("score", "x0", "y0", "x1", "y1")


class DetectionBoxScore(Target):
    """``(B, K)``: the logit of class ``classes[k]`` at raw candidate ``indices[k]``, plus
    optionally a box term.

    ``box_weight`` > 0 adds ``box_weight · IoU(box_k, reference_k)``, where ``reference_k`` is
    candidate k's box in the first output this target scores (the explained forward) — the
    score of D-RISE / pytorch-grad-cam's box targets: on a later forward (Score-CAM's and
    Ablation-CAM's masked inputs, deletion / insertion) a box that moves or shrinks scores
    lower. On the explained forward itself the term is ``box_weight`` exactly and its
    gradient is 0 (IoU is at its maximum), so gradient maps are unchanged. One target
    instance per image: the reference is fixed by the first call.

    ``attribute`` (one of :data:`BOX_ATTRIBUTES`): ``"score"`` (the class logit, default), or
    ``"x0"``/``"y0"``/``"x1"``/``"y1"``: candidate k's predicted box corner coordinate itself
    (Zhao & Chan's ODAM explains each box coordinate like the score; no box term then). (YOLOv8 / YOLO11 are
    anchor-free and the DETR family has no objectness output; the class logit is the whole
    confidence of both.)
    """

    def __init__(self, indices: Sequence[int], classes: Sequence[int], box_weight: float = 0.0, attribute: str = "score"):
        if len(indices) != len(classes):
            raise TargetError(f"DetectionBoxScore got {len(indices)} box indices and {len(classes)} classes; pass one class per index")
        if box_weight < 0:
            raise TargetError(f"box_weight must be >= 0, got {box_weight}; pass 0 for the class score alone")
        if attribute not in BOX_ATTRIBUTES:
            raise TargetError(f"unknown box attribute {attribute!r}; pass one of {', '.join(BOX_ATTRIBUTES)}")
        if attribute != "score" and box_weight:
            raise TargetError(f"the box term applies to the class score; pass box_weight=0 to explain {attribute!r}")
        self.attribute = attribute
        self.indices = [int(i) for i in indices]
        self.classes = [int(c) for c in classes]
        self.box_weight = float(box_weight)
        self.reference: torch.Tensor | None = None  # (B, K, 4): the boxes at the first call

    def __call__(self, output: Any) -> torch.Tensor:
        logits = detection_logits(output)
        if self.indices and max(self.indices) >= logits.shape[2]:
            raise TargetError(f"box index {max(self.indices)} is out of range for {logits.shape[2]} candidates; pass raw indices 0..{logits.shape[2] - 1}")
        if self.indices and min(self.indices) < 0:
            raise TargetError(f"box index {min(self.indices)} is negative; pass raw candidate indices 0..{logits.shape[2] - 1}")
        if self.classes and (max(self.classes) >= logits.shape[1] or min(self.classes) < 0):
            bad = next(c for c in self.classes if not 0 <= c < logits.shape[1])
            raise TargetError(f"class {bad} is out of range for {logits.shape[1]} classes; pass 0..{logits.shape[1] - 1}")
        if self.attribute != "score":
            return candidate_boxes(output)[:, self.indices, BOX_ATTRIBUTES.index(self.attribute) - 1]
        scores = logits[:, self.classes, self.indices]
        if self.box_weight and self.indices:
            boxes = candidate_boxes(output)[:, self.indices]
            if self.reference is None:
                self.reference = boxes.detach()
            reference = self.reference.to(boxes.device)
            if reference.shape[0] != boxes.shape[0]:
                if reference.shape[0] != 1:
                    raise TargetError(
                        f"the box term's reference holds {reference.shape[0]} images, this output {boxes.shape[0]}; use one DetectionBoxScore per image"
                    )
                reference = reference.expand_as(boxes)
            scores = scores + self.box_weight * paired_iou(boxes, reference)
        return scores

    def __repr__(self) -> str:
        box = f", box_weight={self.box_weight:g}" if self.box_weight else ""
        box += f", attribute={self.attribute!r}" if self.attribute != "score" else ""
        return f"DetectionBoxScore(indices={self.indices}, classes={self.classes}{box})"


def padded_box_scores(output: Any, kept: Any, b: int, pad: int, box_weight: float = 0.0, attribute: str = "score") -> torch.Tensor:
    """``(N, pad)``: :class:`DetectionBoxScore` of image ``b``'s kept candidates (``kept.indices``,
    ``kept.classes``), padded to ``pad`` columns with candidate 0 / class 0 (callers drop the
    padding). The box term's reference is image b's boxes on the first output scored, kept in
    ``kept.extra``, so masked copies of image b (Score-CAM's rows) compare with it.
    ``attribute``: as for :class:`DetectionBoxScore`."""
    fill = pad - len(kept.indices)
    target = DetectionBoxScore(list(kept.indices) + [0] * fill, list(kept.classes) + [0] * fill, box_weight, attribute)
    if box_weight:
        if "reference" not in kept.extra:
            kept.extra["reference"] = candidate_boxes(output)[b : b + 1, target.indices].detach()
        target.reference = kept.extra["reference"]
    return target(output)
