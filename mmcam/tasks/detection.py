"""One heatmap per kept box, all from one forward: ``explain_detections``."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..engine import CAM
from ..errors import InputError
from ..explain import TaskExplanation
from ..io import load_image
from ..render.detection import draw_box
from ..render.overlay import save_png

__all__ = ["DetectionExplanation", "explain_detections"]


@dataclass
class DetectionExplanation(TaskExplanation):
    """``meta``: ``boxes`` (xyxy, display pixels), ``labels``, ``class_ids``, ``confidences``,
    ``raw_indices`` (anchor / query index of each kept box)."""

    task: str = "detection"

    def overlays(self, alpha: float = 0.5) -> list[np.ndarray]:
        """Each box's own map with that box drawn on it."""
        return [draw_box(img, box) for img, box in zip(super().overlays(alpha), self.meta.get("boxes", []))]

    def save(self, out_dir: "str | Path", stem: str = "explanation", scale: int = 1) -> list[Path]:
        paths = super().save(out_dir, stem, scale)
        if self.items:  # an overview: every kept box on the image
            overview = self.image.copy()
            for box in self.meta["boxes"]:
                overview = draw_box(overview, box)
            paths.append(save_png(overview, Path(out_dir) / f"{stem}_boxes.png", scale))
        return paths


SUPPORTED = (
    "ultralytics YOLO v8/11 detect and segment, HF DetrForObjectDetection / "
    "ConditionalDetrForObjectDetection / RTDetrForObjectDetection, torchvision Faster R-CNN / "
    "RetinaNet / FCOS"
)


def explain_detections(
    model: Any,
    image: Any,
    *,
    processor: Any = None,
    conf: float | None = None,
    iou: float = 0.45,
    method: str = "layercam",
    layers: Any = None,
    max_boxes: int | None = None,
    size: int | None = None,
    candidates: "tuple[Sequence[int], Sequence[int]] | None" = None,
    labels: "Sequence[str] | dict[int, str] | None" = None,
    box_weight: float = 0.0,
) -> DetectionExplanation:
    """Explain every box a detector keeps on one image: one map per kept box, from one forward.

    Supported: ultralytics YOLO v8/11 (detect and segment), HF DETR / Conditional DETR /
    RT-DETR, torchvision Faster R-CNN / RetinaNet / FCOS. The kept boxes are decided on the
    explained forward's own output, each box's score is a target, and all K gradients come
    from one batched backward pass. No detection above ``conf`` gives an explanation with zero
    items and ``meta["note"]``.

    * YOLO: NMS with the kept raw anchor indices; target = the box's class logit. Default
      layers: the stride-4 backbone stage plus the P3/P4/P5 neck outputs the head reads (maps
      summed), and LayerCAM — Grad-CAM averages each channel's gradient over the whole map,
      which throws away where the box's anchor is (measured on the zoo YOLO, 40 fresh scenes:
      pointing 0.37 for Grad-CAM at the neck, 0.97 for LayerCAM with the stride-4 stage).
      ``conf`` defaults to 0.25, ``iou`` is the NMS threshold; segment models explain their
      boxes — those with a non-empty mask, as their predictor keeps (the masks themselves:
      :func:`mmcam.explain_segmentation`).
    * DETR family: kept queries exactly as the image processor's
      ``post_process_object_detection`` keeps them (``conf`` = its ``threshold``, default
      0.5); target = the query's class logit; ``raw_indices`` are query indices. Default
      layer: the backbone's stride-4 stage (DETR, Conditional DETR; on the zoo DETR LayerCAM
      pointing 0.61 there vs 0.04 at the input projection) or RT-DETR's per-level projections
      into the decoder (see :mod:`mmcam.adapters.detr`). ``processor``: the model's image processor (else the
      image is used at its size, or ``size``, normalised as that family's processor does).
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
    """
    from ..adapters import detr
    from ..adapters import torchvision_detection as tvd
    from ..adapters import ultralytics as yolo
    from ..adapters.hf_text import require_attention_family

    require_attention_family(method, type(model).__name__, ())  # measured on the zoo DETR: 0.17 pointing

    names = None if labels is None else (dict(enumerate(labels)) if not isinstance(labels, dict) else dict(labels))
    common = dict(method=method, layers=layers, max_boxes=max_boxes, size=size, candidates=candidates, names=names, box_weight=box_weight)
    if yolo.is_yolo(model):
        return _explain_yolo(model, image, conf=0.25 if conf is None else conf, iou=iou, **common)
    if detr.is_detr(model):
        return _explain_detr(model, image, processor=processor, conf=0.5 if conf is None else conf, **common)
    if tvd.is_torchvision_detector(model):
        return _explain_torchvision(model, image, conf=conf, **common)
    raise InputError(
        f"explain_detections supports {SUPPORTED}; got {type(model).__name__}. "
        "For another detector use mmcam.CAM(model, layers) with a target returning (B, K) box scores "
        "(mmcam.targets.DetectionBoxScore for class logits (B, candidates, classes) indexed by raw candidate, "
        "or any callable output -> (B, K))"
    )


def _explain_yolo(model, image, *, conf, iou, method, layers, max_boxes, size, candidates, names, box_weight) -> DetectionExplanation:
    from ..adapters import ultralytics as yolo

    inner = yolo.inner_model(model)
    side = size or yolo.input_size(model)
    if side % 32:
        raise InputError(f"the image size must be a multiple of 32 for YOLO, got {side}; pass size=")
    pil = load_image(image).resize((side, side), Image.BILINEAR)
    shown = np.asarray(pil)
    x = torch.from_numpy(shown.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    kept = yolo.KeptBoxes(conf=conf, iou=iou, max_det=max_boxes or 300, nc=yolo.num_classes(inner), box_weight=box_weight, input_size=(side, side))
    if candidates is not None:
        kept = yolo.FixedBoxes(*candidates, box_weight=box_weight)
    with yolo.eval_mode(inner):
        exp = CAM(inner, layers if layers is not None else yolo.default_layers(inner), method=method)(x, [kept])
    names = names if names is not None else yolo.class_names(model)
    boxes = kept.boxes.clamp(0, side) if kept.boxes is not None else None
    return _explanation(shown, exp.maps[0], exp, boxes, kept.classes, names, kept.confidences, kept.indices, conf, side)


def _explain_detr(model, image, *, processor, conf, method, layers, max_boxes, size, candidates, names, box_weight) -> DetectionExplanation:
    from ..adapters import detr
    from ..adapters.ultralytics import eval_mode
    from ..explain import prepare_image

    if processor is not None:
        inputs, shown = prepare_image(image, processor, size)
    else:
        pil = load_image(image)
        if size is not None:
            pil = pil.resize((size, size), Image.BILINEAR)
        shown = np.asarray(pil)
        x = torch.from_numpy(shown.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
        inputs = {"pixel_values": detr.pixel_values(model, x)}
    if not isinstance(inputs, dict) or "pixel_values" not in inputs:
        raise InputError("the processor must return a dict with pixel_values (an HF image processor)")
    height, width = inputs["pixel_values"].shape[-2:]
    kept = detr.KeptQueries(detr.family(model), conf, (int(height), int(width)), max_boxes, candidates, box_weight=box_weight)
    with eval_mode(model):
        chosen, grid = detr.layers_and_grid(model, inputs)
        reshape = detr.EncoderGrid(grid) if detr.family(model) != "sigmoid-topq" else "auto"
        exp = CAM(model, layers if layers is not None else chosen, method=method, reshape=reshape)(inputs, [kept])
    boxes = kept.boxes.clamp(min=0) if kept.boxes is not None else None
    if boxes is not None:
        boxes = torch.minimum(boxes, boxes.new_tensor((width, height, width, height)))
    side = int(width) if width == height else [int(height), int(width)]
    names = names if names is not None else detr.class_names(model)
    return _explanation(shown, exp.maps[0], exp, boxes, kept.classes, names, kept.confidences, kept.indices, conf, side)


def _explain_torchvision(model, image, *, conf, method, layers, max_boxes, size, candidates, names, box_weight) -> DetectionExplanation:
    from ..adapters import torchvision_detection as tvd
    from ..adapters.ultralytics import eval_mode
    from ..engine.combine import normalize

    pil = load_image(image)
    if size is not None:
        pil = pil.resize((size, size), Image.BILINEAR)
    shown = np.asarray(pil)
    x = torch.from_numpy(shown.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    device = next(model.parameters()).device
    x = x.to(device)
    select = None if candidates is None else list(candidates[0])
    kept = tvd.KeptDetections(max_boxes=max_boxes, select=select, conf=conf, box_weight=box_weight)
    with eval_mode(model):
        with torch.no_grad():  # the model resizes and pads inside: map the padded grid back to the image
            batch = model.transform(x)[0]
        padded = tuple(int(v) for v in batch.tensors.shape[-2:])
        resized = batch.image_sizes[0]
        exp = CAM(model, layers if layers is not None else tvd.default_layers(model), method=method)(x, [kept], input_size=padded)
    maps = exp.maps[0, :, : resized[0], : resized[1]]
    if maps.shape[0]:
        maps = normalize(torch.nn.functional.interpolate(maps[None], size=shown.shape[:2], mode="bilinear", align_corners=False))[0]
    else:
        maps = maps.new_zeros((0, *shown.shape[:2]))
    return _explanation(shown, maps, exp, kept.boxes, kept.labels, names or {}, kept.confidences, kept.positions, conf, list(shown.shape[:2]))


def _explanation(shown, maps, exp, boxes, class_ids, names, confidences, raw_indices, conf, side) -> DetectionExplanation:
    labels = [names.get(c, str(c)) for c in class_ids]
    confidences = confidences.tolist() if confidences is not None else []
    meta: dict[str, Any] = {
        "boxes": [[round(v, 2) for v in box] for box in (boxes.tolist() if boxes is not None else [])],
        "labels": labels,
        "class_ids": list(class_ids),
        "confidences": confidences,
        "raw_indices": list(raw_indices),
        "input_size": side,
    }
    if not raw_indices:
        meta["note"] = f"nothing to explain: no detections above conf={conf}"
    return DetectionExplanation(
        image=shown,
        maps=maps,
        items=[f"{label} {c:.2f}" for label, c in zip(labels, confidences)],
        scores=exp.scores[0],
        method=exp.method,
        layers=exp.layers,
        meta=meta,
    )
