"""One heatmap per kept box, all from one forward: ``explain_detections`` / :class:`DetectionTask`."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import methods
from ..adapters.base import Family, Kept, Prepared
from ..engine import CAM
from ..errors import InputError, MethodError
from ..explain import TaskExplanation
from ..render.detection import draw_box, draw_polygon
from ..render.overlay import save_png
from .base import Decision, Task, device_of, stack

__all__ = ["DetectionExplanation", "DetectionTask", "explain_detections", "detector_family", "SUPPORTED"]


@dataclass
class DetectionExplanation(TaskExplanation):
    """``meta``: ``boxes`` (xyxy, the photo's pixels), ``labels``, ``class_ids``, ``confidences``,
    ``raw_indices`` (anchor / query index of each kept box), ``pipeline`` (how the photo became
    the model input); OBB models also ``rotated_boxes`` (``cx, cy, w, h, θ``) and ``polygons``
    (4 corners), ``boxes`` then the upright boxes enclosing them."""

    task: str = "detection"

    def overlays(self, alpha: float = 0.5) -> list[np.ndarray]:
        """Each box's own map with that box drawn on it (rotated boxes drawn rotated)."""
        return [self._draw(img, k) for k, img in enumerate(super().overlays(alpha))]

    def _draw(self, image: np.ndarray, k: int) -> np.ndarray:
        polygons = self.meta.get("polygons")
        if polygons:
            return draw_polygon(image, polygons[k])
        boxes = self.meta.get("boxes", [])
        return draw_box(image, boxes[k]) if k < len(boxes) else image

    def save(self, out_dir: "str | Path", stem: str = "explanation", scale: int = 1) -> list[Path]:
        paths = super().save(out_dir, stem, scale)
        if self.items:  # an overview: every kept box on the image
            overview = self.image.copy()
            for k in range(len(self.meta["boxes"])):
                overview = self._draw(overview, k)
            paths.append(save_png(overview, Path(out_dir) / f"{stem}_boxes.png", scale))
        return paths


SUPPORTED = (
    "ultralytics YOLOv8/10/11/12/26 detect, segment and OBB (rotated boxes; YOLO26/YOLOv10 also NMS-free with nms=False), "
    "ultralytics YOLO-World / YOLOE (text= or set_classes), ultralytics RTDETR, HF DetrForObjectDetection / ConditionalDetrForObjectDetection / RTDetrForObjectDetection (and Deformable DETR, "
    "DAB-DETR, D-FINE, RT-DETRv2, LW-DETR, RF-DETR, YOLOS; OWL-ViT / OWLv2 / Grounding DINO with text=), "
    "torchvision Faster R-CNN / Mask R-CNN / Keypoint R-CNN (boxes) / RetinaNet / FCOS / SSD / SSDlite"
)


def detector_family(
    model: Any,
    processor: Any = None,
    *,
    conf: float | None = None,
    iou: float = 0.7,
    max_boxes: int | None = None,
    size: int | None = None,
    candidates: Any = None,
    box_weight: float = 0.0,
    attribute: str = "score",
    nms: bool | None = None,
    text: "Sequence[str] | None" = None,
) -> Family:
    """The family object of a detector (its own pipeline and post-processing)."""
    from ..adapters import detr, open_vocab
    from ..adapters import torchvision_detection as tvd
    from ..adapters import ultralytics as yolo
    from ..adapters.rtdetr_ultralytics import RtdetrFamily, is_ultralytics_rtdetr
    from ..adapters.ultralytics_e2e import yolo_family
    from ..adapters.ultralytics_obb import is_obb, obb_family
    from ..adapters.ultralytics_world import is_text_yolo

    if open_vocab.is_open_vocab(model):
        if candidates is not None:
            raise InputError("candidates= is not supported for open-vocabulary detectors; pass text= and conf= to choose the boxes")
        return open_vocab.OpenVocabFamily(model, processor, text, conf=conf, max_boxes=max_boxes, box_weight=box_weight, attribute=attribute)
    if yolo.is_yolo(model) and is_text_yolo(model):
        kwargs = {"conf": 0.25 if conf is None else conf, "iou": iou, "max_det": max_boxes or 300, "size": size, "candidates": candidates}
        return yolo_family(model, nms=nms, text=text, box_weight=box_weight, attribute=attribute, **kwargs)
    if text is not None:
        raise InputError(
            f"text= names what an open-vocabulary detector looks for (OWL-ViT, OWLv2, Grounding DINO, YOLO-World, YOLOE); {type(model).__name__} has fixed classes: drop text="
        )
    if is_ultralytics_rtdetr(model):
        return RtdetrFamily(
            model, conf=0.25 if conf is None else conf, max_det=max_boxes or 300, size=size, candidates=candidates, box_weight=box_weight, attribute=attribute
        )
    if yolo.is_yolo(model):
        build = obb_family if is_obb(model) else yolo_family
        return build(
            model,
            nms=nms,
            conf=0.25 if conf is None else conf,
            iou=iou,
            max_det=max_boxes or 300,
            size=size,
            candidates=candidates,
            box_weight=box_weight,
            attribute=attribute,
        )
    if detr.is_detr(model):
        return detr.DetrFamily(
            model,
            processor,
            conf=0.5 if conf is None else conf,
            max_boxes=max_boxes,
            size=size,
            candidates=candidates,
            box_weight=box_weight,
            attribute=attribute,
        )
    if tvd.is_torchvision_detector(model):
        if attribute != "score":
            raise InputError(f"torchvision detectors expose no per-candidate box outputs here; explain attribute='score', not {attribute!r}")
        return tvd.TorchvisionDetector(model, conf=conf, max_boxes=max_boxes, candidates=candidates, box_weight=box_weight)
    raise InputError(
        f"explain_detections supports {SUPPORTED}; got {type(model).__name__}. "
        "For another detector use mmcam.CAM(model, layers) with a target returning (B, K) box scores "
        "(mmcam.targets.DetectionBoxScore for class logits (B, candidates, classes) indexed by raw candidate, "
        "or any callable output -> (B, K))"
    )


class DetectionTask(Task):
    """Every kept box of each photo, one map per box (see :func:`explain_detections`)."""

    name = "detect"

    def __init__(
        self,
        model: Any,
        *,
        processor: Any = None,
        conf: float | None = None,
        iou: float = 0.7,
        method: str | None = "layercam",
        layers: Any = None,
        max_boxes: int | None = None,
        size: int | None = None,
        candidates: "tuple[Sequence[int], Sequence[int]] | None" = None,
        labels: "Sequence[str] | dict[int, str] | None" = None,
        box_weight: float = 0.0,
        attribute: str = "score",
        device: Any = None,
        nms: bool | None = None,
        text: "Sequence[str] | None" = None,
    ):
        from ..adapters.detr import is_detr
        from ..adapters.hf_text import require_attention_family

        method = method or "layercam"
        if method == "gae" and is_detr(model):
            method = "gae-detr"  # Chefer et al.'s encoder-decoder rules with each box's query row
        require_attention_family(method, type(model).__name__, getattr(methods.get(method), "families", ()))
        self.family = detector_family(
            model,
            processor,
            conf=conf,
            iou=iou,
            max_boxes=max_boxes,
            size=size,
            candidates=candidates,
            box_weight=box_weight,
            attribute=attribute,
            nms=nms,
            text=text,
        )
        self.batched = self.family.batched
        self.method, self.layers, self.device = method, layers, device
        self.conf = getattr(self.family, "conf", conf)
        given = None if labels is None else (dict(labels) if isinstance(labels, dict) else dict(enumerate(labels)))
        self.names = given if given is not None else getattr(self.family, "names", {})

    def _method(self, inputs: Any) -> Any:
        """The method for this batch: one that shifts by the encoder's tokens
        (``layercam-detr-shift``) gets their size in input pixels from the DETR's grid."""
        method = methods.get(self.method)
        if getattr(method, "patch", None) != "encoder":
            return method
        from ..adapters.detr import is_detr, layers_and_grid
        from ..engine.inputs import Inputs

        if not is_detr(self.family.module):
            raise MethodError(
                f"method {method.name!r} shifts by a DETR's encoder tokens; {type(self.family.module).__name__} has none. Use {method.inner.name!r}"
            )
        (gh, gw), (H, W) = layers_and_grid(self.family.module, inputs)[1], Inputs(inputs).spatial_size
        resolved = copy.copy(method)
        resolved.patch = (max(1, H // gh), max(1, W // gw))
        return resolved

    def run(self, batch: list[Prepared]) -> list[DetectionExplanation]:
        results: list[Any] = [None] * len(batch)
        device = self.device or device_of(self.family.module)
        for rows in self.groups(batch):
            prepared = [batch[i] for i in rows]
            frames = [p.frame for p in prepared]
            inputs = stack(prepared, device)
            decision = Decision(lambda output, frames=frames: self.family.decide(output, frames), self.item_scores(), "KeptBoxes")
            with self.family.context():
                layers, reshape = self.family.layers_and_reshape(inputs, self.layers)
                if getattr(methods.get(self.method), "attention", False):
                    layers = self.layers  # attention methods read every attention map, not a layer
                cam = CAM(self.family.module, layers, method=self._method(inputs), reshape=reshape, edge=self.family.edge)
                exp = cam(inputs, decision.targets(len(rows)), input_size=frames[0].input)
            for b, i in enumerate(rows):
                results[i] = self._finish(batch[i], exp, b, decision.kept[b])
        return results

    def item_scores(self) -> Any:
        """``(output, kept, b, pad) -> (N, columns)``: the scores of image b's kept items."""
        return self.family.box_scores

    def _finish(self, prepared: Prepared, exp: Any, b: int, kept: Kept) -> DetectionExplanation:
        k = len(kept)
        labels = [self.names.get(c, str(c)) for c in kept.classes]
        confidences = [float(c) for c in kept.confidences.tolist()] if k else []
        meta: dict[str, Any] = {
            "boxes": [[round(float(v), 2) for v in box] for box in kept.photo_boxes.tolist()] if k else [],
            "labels": labels,
            "class_ids": list(kept.classes),
            "confidences": confidences,
            "raw_indices": list(kept.indices),
            "input_size": list(prepared.frame.input),
            "pipeline": prepared.frame.to_meta(),
        }
        if hasattr(self.family, "item_meta"):  # open-vocabulary queries and text evidence; OBB rotated boxes
            meta.update(self.family.item_meta(prepared, kept))
        if not k:
            meta["note"] = f"nothing to explain: no detections above conf={self.conf}"
        return DetectionExplanation(
            image=prepared.photo,
            maps=prepared.frame.maps_to_photo(exp.maps[b, :k]),
            items=[f"{label} {c:.2f}" for label, c in zip(labels, confidences)],
            scores=exp.scores[b, :k],
            method=exp.method,
            layers=exp.layers,
            meta=meta,
        )


def explain_detections(
    model: Any,
    image: Any,
    *,
    processor: Any = None,
    conf: float | None = None,
    iou: float = 0.7,
    method: str = "layercam",
    layers: Any = None,
    max_boxes: int | None = None,
    size: int | None = None,
    candidates: "tuple[Sequence[int], Sequence[int]] | None" = None,
    labels: "Sequence[str] | dict[int, str] | None" = None,
    box_weight: float = 0.0,
    attribute: str = "score",
    nms: bool | None = None,
    text: "Sequence[str] | None" = None,
) -> DetectionExplanation:
    """Explain every box a detector keeps on one image: one map per kept box, from one forward.

    Supported: ultralytics YOLOv8 / 11 / 12 / 26 and YOLOv10 (detect, segment and OBB), ultralytics
    ``RTDETR``, HF DETR / Conditional DETR / RT-DETR, torchvision Faster / Mask / Keypoint R-CNN,
    RetinaNet, FCOS, SSD / SSDlite. The kept boxes are decided on the
    explained forward's own output, each box's score is a target, and all K gradients come
    from one batched backward pass. No detection above ``conf`` gives an explanation with zero
    items and ``meta["note"]``.

    Everything comes back in the photo's own pixels: each family runs its own pipeline
    (ultralytics' letterbox as ``YOLO.predict`` builds it, the HF processor, torchvision's
    internal transform), boxes are scaled back as that pipeline does (``scale_boxes``,
    ``post_process_object_detection(target_sizes=[photo size])``) and maps are
    un-letterboxed / un-padded, then resized to the photo; ``meta["pipeline"]`` records it.

    * YOLO: NMS with the predictor's arguments and the kept raw anchor indices; target = the
      box's class logit. Default
      layers: the stride-4 backbone stage plus the P3/P4/P5 neck outputs the head reads (maps
      summed), and LayerCAM — Grad-CAM averages each channel's gradient over the whole map,
      which throws away where the box's anchor is (measured on the zoo YOLO, 40 fresh scenes:
      pointing 0.37 for Grad-CAM at the neck, 0.97 for LayerCAM with the stride-4 stage).
      ``conf`` defaults to 0.25 and ``iou`` to 0.7 (the predictor's), ``size`` is its
      ``imgsz`` (default: the model's, else 640); segment models explain their
      boxes — those with a non-empty mask, as their predictor keeps (the masks themselves:
      :func:`mmcam.explain_segmentation`). ``nms``: the predictor's argument — YOLO26 / YOLOv10
      run their one-to-many branch and NMS by default, as ``predict()`` does; ``nms=False`` runs
      the NMS-free one-to-one branch and keeps its top-k rows above ``conf``, each mapped to its
      raw anchor, target = its one-to-one class logit (:mod:`mmcam.adapters.ultralytics_e2e`).
    * DETR family: kept queries exactly as the image processor's
      ``post_process_object_detection`` keeps them (``conf`` = its ``threshold``, default
      0.5); target = the query's class logit; ``raw_indices`` are query indices. Default
      layer: the backbone's stride-4 stage (DETR, Conditional DETR; on the zoo DETR LayerCAM
      pointing 0.61 there vs 0.04 at the input projection) or RT-DETR's per-level projections
      into the decoder (see :mod:`mmcam.adapters.detr`). ``processor``: the model's image processor (boxes then
      come from its ``post_process_object_detection``; without one the photo is used at its
      size, or ``size``, normalised as that family's processor does).
    * open vocabulary (OWL-ViT, OWLv2, Grounding DINO, MM-Grounding DINO): ``text`` lists the
      queries (``["a person", "a bus"]``); boxes kept exactly as the processor's
      ``post_process_grounded_object_detection``, each box's map for the query it answers
      (``labels``), ``meta["text_evidence"]``: which query words its logit depends on
      (gradient x input on the text embeddings; see :mod:`mmcam.adapters.open_vocab`).
    * YOLO-World / YOLOE (``ultralytics.YOLOWorld`` / ``YOLOE``): the classes the model holds
      (``set_classes``), or ``text`` encoded by its own CLIP / MobileCLIP when that loads offline (a clear error naming what is
      missing otherwise); target = the region-text contrast logit (:mod:`mmcam.adapters.ultralytics_world`).
    * YOLO OBB: rotated NMS as the OBB predictor (``meta["rotated_boxes"]`` / ``["polygons"]``,
      :mod:`mmcam.adapters.ultralytics_obb`); ultralytics RT-DETR: the predictor's top-k rows
      above ``conf``, each mapped to its query, target = the query's class logit
      (:mod:`mmcam.adapters.rtdetr_ultralytics`).
    * torchvision: the model's own kept detections (its score threshold, NMS and
      ``detections_per_img``; ``conf`` drops lower ones); target = the final score of each,
      which stays differentiable; ``raw_indices`` are positions in the model's kept list.
      Default layers: the FPN levels (see :mod:`mmcam.adapters.torchvision_detection`).

    ``candidates=(raw_indices, class_ids)`` explains those candidates instead of the kept
    boxes (YOLO anchors / DETR queries with their classes; torchvision: positions in the kept
    list), e.g. ``(exp.meta["raw_indices"], exp.meta["class_ids"])`` of an earlier call on
    another model version (sanity checks) or a box the detector dropped.

    ``labels`` names the class ids (a list or ``{id: name}``; torchvision models carry none,
    e.g. pass ``weights.meta["categories"]``); else the model's own names (ultralytics
    ``names``, HF ``config.id2label``) or the id.

    ``box_weight`` > 0 adds a box term to every box's score: ``box_weight · IoU`` of the box the
    same candidate predicts on a later forward with the kept box (see
    :class:`mmcam.targets.DetectionBoxScore`) — for perturbation methods (``scorecam``,
    ``ablationcam``), a masked image that moves or shrinks the box scores lower; gradient maps
    are unchanged (the term's gradient is 0 on the explained forward).

    ``attribute``: what each box's map explains — ``"score"`` (its class logit, default) or one
    coordinate of its predicted box, ``"x0"``, ``"y0"``, ``"x1"``, ``"y1"`` (YOLO and DETR
    family), as ODAM explains every predicted attribute; e.g. ``method="odam",
    attribute="x0"`` shows what placed each box's left edge.
    """
    return DetectionTask(
        model,
        processor=processor,
        conf=conf,
        iou=iou,
        method=method,
        layers=layers,
        max_boxes=max_boxes,
        size=size,
        candidates=candidates,
        labels=labels,
        box_weight=box_weight,
        attribute=attribute,
        nms=nms,
        text=text,
    )(image)
