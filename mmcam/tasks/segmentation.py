"""Explain a segmentation region: what made the model label these pixels as class c."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..adapters.base import Family, Prepared, imagenet_prepare, processor_prepare
from ..engine import CAM
from ..errors import InputError, LayerError, TargetError
from ..explain import TaskExplanation
from ..targets import SegmentationRegion, segmentation_logits
from .base import Decision, Task, device_of, stack

__all__ = ["SegmentationExplanation", "SegmentationTask", "SemanticSegmenter", "explain_segmentation", "default_segmentation_layer"]

#: torchvision segmentation weights resize the shorter side to 520 (``SemanticSegmentation``);
#: without a processor mmcam does the same, with ImageNet mean / std.
SEGMENTATION_SHORT_SIDE = 520


@dataclass
class SegmentationExplanation(TaskExplanation):
    """One map per explained class region or instance; ``regions[k]`` its mask (H, W) on the photo."""

    task: str = "segmentation"
    regions: list[np.ndarray] = field(default_factory=list)

    def overlays(self, alpha: float = 0.5) -> list[np.ndarray]:
        """Overlays with the explained region's outline drawn in white."""
        out = []
        for img, region in zip(super().overlays(alpha), self.regions):
            img = img.copy()
            img[region & ~_eroded(region)] = 255
            out.append(img)
        return out


def _eroded(mask: np.ndarray) -> np.ndarray:
    m = np.pad(mask, 1)
    return m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]


def default_segmentation_layer(model: nn.Module) -> str:
    """The features the classifier reads: Segformer's fused decoder features, or the last
    stage of a torchvision segmentation backbone."""
    for name, _ in model.named_modules():
        if name.endswith("decode_head.linear_fuse"):
            return name
    backbone = getattr(model, "backbone", None)
    if backbone is not None and hasattr(model, "classifier"):
        return f"backbone.{list(backbone.named_children())[-1][0]}"
    raise LayerError(
        f"no default segmentation layer for {type(model).__name__}; supported: HF Segformer, torchvision "
        "deeplabv3/lraspp/fcn. Pass layers= (the features before the pixel classifier)"
    )


class SemanticSegmenter(Family):
    """HF Segformer / torchvision deeplabv3, lraspp, fcn with their own pipeline: ``processor``
    (the HF image processor; regions then come from its ``post_process_semantic_segmentation``
    with ``target_sizes=[photo size]``), else the photo's shorter side resized to 520 with
    ImageNet mean / std (torchvision's weights transform) and the logits resized to the photo
    bilinearly, as that post-processing does."""

    name = "semantic segmenter"

    def prepare(self, photo: Image.Image) -> Prepared:
        if self.processor is not None:
            return processor_prepare(self.processor, photo)
        return imagenet_prepare(photo, SEGMENTATION_SHORT_SIDE if min(photo.size) > SEGMENTATION_SHORT_SIDE else None)

    def default_layers(self, inputs: Any) -> str:
        return default_segmentation_layer(self.model)

    def photo_classes(self, logits: torch.Tensor, prepared: list[Prepared]) -> list[torch.Tensor]:
        """Each photo's predicted class map ``(H, W)``, by the processor's own post-processing."""
        post = getattr(self.processor, "post_process_semantic_segmentation", None)
        if post is not None:
            from types import SimpleNamespace

            return [m.cpu() for m in post(SimpleNamespace(logits=logits), target_sizes=[p.frame.photo for p in prepared])]
        return [p.frame.logits_to_photo(logits[b : b + 1])[0].argmax(0).cpu() for b, p in enumerate(prepared)]


def _run(model: nn.Module, inputs: Any) -> Any:
    return model(**inputs) if isinstance(inputs, dict) else model(inputs)


class SegmentationTask(Task):
    """Class regions (semantic segmenters) or kept instances (YOLO segment models) of each
    photo, one map each (see :func:`explain_segmentation`)."""

    name = "segment"

    def __init__(
        self,
        model: Any,
        *,
        class_id: "int | list[int] | None" = None,
        mask: Any = None,
        processor: Any = None,
        method: str | None = None,
        layers: Any = None,
        labels: "list[str] | None" = None,
        ignore: tuple[int, ...] = (0,),
        conf: float = 0.25,
        iou: float = 0.7,
        max_instances: int = 300,
        size: int | None = None,
        device: Any = None,
        nms: bool | None = None,
    ):
        from ..adapters import ultralytics as yolo
        from ..adapters.hf_text import require_attention_family
        from ..adapters.torchvision_instances import TorchvisionMasks, is_mask_rcnn
        from ..adapters.ultralytics_e2e import yolo_family

        require_attention_family(method or "gradcam", type(model).__name__, ())
        mask_rcnn = is_mask_rcnn(model)
        self.instances = yolo.is_yolo(model) or mask_rcnn
        self.classes = None if class_id is None else ([class_id] if isinstance(class_id, int) else list(class_id))
        self.layers, self.device, self.ignore = layers, device, ignore
        if self.instances:
            if mask is not None:
                raise InputError("a user mask applies to semantic segmenters; for an instance model pass class_id (or none) to choose instances")
            if mask_rcnn:
                self.family: Family = TorchvisionMasks(model, conf=conf, max_boxes=max_instances)
                self.batched = False  # one photo per forward, as the torchvision detectors
                self.method, self.conf = method or "layercam", conf
                self.names = dict(enumerate(labels)) if labels is not None else {}
            elif not yolo.is_segment(model):
                raise InputError("this YOLO model predicts boxes, not masks: explain them with mmcam.explain_detections (CLI: --task detect)")
            else:
                self.family = yolo_family(model, nms=nms, conf=conf, iou=iou, max_det=max_instances, size=size)
                self.method, self.conf = method or "layercam", conf
                self.names = dict(enumerate(labels)) if labels is not None else self.family.names
        else:
            if mask is not None and class_id is None:
                raise InputError("a mask needs a class_id: pass class_id= for the class to explain over the mask")
            if mask is not None and not np.asarray(mask).any():
                raise InputError("the mask is empty: nothing to explain; pass a mask with at least one pixel")
            self.family = SemanticSegmenter(model, processor)
            self.method = method or "gradcam"
            self.mask = None if mask is None else torch.as_tensor(np.asarray(mask, dtype=np.float32))
            id2label = getattr(getattr(model, "config", None), "id2label", {}) or {}
            self.names = dict(enumerate(labels)) if labels else {int(k): str(v) for k, v in id2label.items()}

    def run(self, batch: list[Prepared]) -> list[SegmentationExplanation]:
        results: list[Any] = [None] * len(batch)
        device = self.device or device_of(self.family.module)
        for rows in self.groups(batch):
            prepared = [batch[i] for i in rows]
            inputs = stack(prepared, device)
            done = self._instances(prepared, inputs) if self.instances else self._regions(prepared, inputs)
            for i, result in zip(rows, done):
                results[i] = result
        return results

    def _empty(self, p: Prepared, note: str, layers: list[str]) -> SegmentationExplanation:
        return SegmentationExplanation(
            image=p.photo,
            maps=torch.zeros(0, *p.frame.photo),
            items=[],
            scores=torch.zeros(0),
            method=self.method,
            layers=layers,
            meta={"note": note, "pipeline": p.frame.to_meta()},
        )

    def _regions(self, prepared: list[Prepared], inputs: Any) -> list[SegmentationExplanation]:
        """Semantic: a no-grad forward finds each photo's classes, then one explained forward
        with each photo's ``SegmentationRegion`` (padded to the batch's largest K by repeating
        its first class; the repeats are dropped)."""
        model = self.family.model
        with torch.no_grad():
            logits = segmentation_logits(_run(model, inputs))
        if self.classes is not None:
            bad = [c for c in self.classes if not 0 <= c < logits.shape[1]]
            if bad:
                raise TargetError(f"class_id {bad[0]} is out of range for {logits.shape[1]} classes; pass 0..{logits.shape[1] - 1}")
        pred = logits.argmax(1)
        classes = [self.classes or [int(c) for c in pred[b].unique().tolist() if int(c) not in self.ignore] for b in range(len(prepared))]
        results: list[Any] = [None] * len(prepared)
        for b, p in enumerate(prepared):
            if not classes[b]:
                results[b] = self._empty(p, "nothing to explain: no class other than the background is predicted", [])
        kept = [b for b in range(len(prepared)) if classes[b]]
        if not kept:
            return results
        k = max(len(classes[b]) for b in kept)
        targets = [[SegmentationRegion(classes[b] + [classes[b][0]] * (k - len(classes[b])), self.mask)] for b in kept]
        taken = {key: v[kept] if isinstance(v, torch.Tensor) else v for key, v in inputs.items()} if isinstance(inputs, dict) else inputs[kept]
        layers, _ = self.family.layers_and_reshape(taken, self.layers)
        exp = CAM(model, layers, method=self.method)(taken, targets)
        photo_pred = self.family.photo_classes(segmentation_logits(exp.output), [prepared[b] for b in kept])
        for j, b in enumerate(kept):
            p, n = prepared[b], len(classes[b])
            if self.mask is not None:
                user = p.frame.maps_to_photo(self.mask.float()[None], mode="nearest")[0] > 0.5 if self.mask.shape != p.frame.photo else self.mask > 0.5
                regions = [user.numpy() for _ in classes[b]]
            else:
                regions = [(photo_pred[j] == c).numpy() for c in classes[b]]
            results[b] = SegmentationExplanation(
                image=p.photo,
                maps=p.frame.maps_to_photo(exp.maps[j, :n]),
                items=[self.names.get(c, str(c)) for c in classes[b]],
                scores=exp.scores[j, :n],
                method=exp.method,
                layers=exp.layers,
                meta={"classes": classes[b], "region_pixels": [int(r.sum()) for r in regions], "pipeline": p.frame.to_meta()},
                regions=regions,
            )
        return results

    def _instances(self, prepared: list[Prepared], inputs: Any) -> list[SegmentationExplanation]:
        """YOLO segment models: the kept instances (as the predictor keeps them; ``class_id``
        filters), each explained by its mask logits summed over its own region."""
        family, frames = self.family, [p.frame for p in prepared]
        wanted = None if self.classes is None else set(self.classes)

        def decide(output: Any) -> list[Any]:
            kept = family.decide(output, frames)
            return kept if wanted is None else [k.subset(torch.tensor([c in wanted for c in k.classes], dtype=torch.bool)) for k in kept]

        decision = Decision(decide, family.mask_scores, "KeptInstances")
        with family.context():
            layers = self.layers if self.layers is not None else family.default_layers(inputs)
            exp = CAM(family.module, layers, method=self.method, edge=family.edge)(inputs, decision.targets(len(prepared)), input_size=frames[0].input)
        results = []
        for b, p in enumerate(prepared):
            kept = decision.kept[b]
            if not len(kept):
                note = f"nothing to explain: no instance above conf={self.conf}" + ("" if self.classes is None else f" of class {self.classes}")
                results.append(self._empty(p, note, exp.layers))
                continue
            masks = family.photo_masks(kept, p.frame).numpy()
            results.append(
                SegmentationExplanation(
                    image=p.photo,
                    maps=p.frame.maps_to_photo(exp.maps[b, : len(kept)]),
                    items=[f"{self.names.get(c, str(c))} {float(s):.2f}" for c, s in zip(kept.classes, kept.confidences)],
                    scores=exp.scores[b, : len(kept)],
                    method=exp.method,
                    layers=exp.layers,
                    meta={
                        "classes": list(kept.classes),
                        "confidences": [round(float(c), 5) for c in kept.confidences],
                        "raw_indices": list(kept.indices),
                        "boxes": [[round(float(v), 2) for v in box] for box in kept.photo_boxes],
                        "region_pixels": [int(m.sum()) for m in masks],
                        "pipeline": p.frame.to_meta(),
                    },
                    regions=list(masks),
                )
            )
        return results


def explain_segmentation(
    model: nn.Module,
    image: Any,
    class_id: "int | list[int] | None" = None,
    mask: Any = None,
    *,
    processor: Any = None,
    method: str | None = None,
    layers: Any = None,
    labels: list[str] | None = None,
    ignore: tuple[int, ...] = (0,),
    conf: float = 0.25,
    iou: float = 0.7,
    max_instances: int = 300,
    size: int | None = None,
    nms: bool | None = None,
) -> SegmentationExplanation:
    """Explain class regions of one image, all from one forward.

    Semantic segmenters (HF Segformer, torchvision deeplabv3 / lraspp / fcn):
    ``class_id=None``: every predicted class present (except ``ignore``, the background);
    ``mask`` (H, W bool) restricts the region to the user's pixels (then ``class_id`` is
    required). Maps are Seg-Grad-CAM: the gradient of the class logits summed over the region.
    Default method ``"gradcam"``; ``"gradcam-shift"`` averages it over the input moved by
    fractions of the layer's stride, the user's mask moved with it (:mod:`mmcam.methods.shifted`;
    opt-in, measured in ``docs/quality.md``). The photo goes through ``processor`` (regions from its
    ``post_process_semantic_segmentation(target_sizes=[photo size])``) or, without one, the
    shorter side resized to 520 (if larger) with ImageNet mean / std; maps and regions are on
    the photo.

    ultralytics YOLO segment models (the ``YOLO`` object): one map per kept instance (NMS at
    ``conf`` / ``iou``, at most ``max_instances``: the predictor's ``conf``, ``iou``,
    ``max_det``; ``class_id`` keeps those classes), each explaining its mask logits summed over
    its own predicted region (:meth:`mmcam.adapters.ultralytics.YoloFamily.mask_scores`); the
    photo is letterboxed as the predictor does and the regions are ultralytics' own instance
    masks, scaled to the photo with its ``scale_masks``. Default method ``"layercam"`` and the detection
    layers (stride-4 stage + P3/P4/P5), as for boxes; ``size``: the predictor's ``imgsz``
    (default: the model's); ``nms=False``: a YOLO26-seg head's NMS-free one-to-one branch, as
    ``predict(nms=False)`` (:mod:`mmcam.adapters.ultralytics_e2e`).

    torchvision Mask R-CNN: one map per kept instance (the model's own detections, those above
    ``conf``, at most ``max_instances``), each explaining its mask logits summed over its own
    region; the regions are the model's ``masks > 0.5`` on the photo; default layers its FPN
    levels (:mod:`mmcam.adapters.torchvision_instances`).
    """
    return SegmentationTask(
        model,
        class_id=class_id,
        mask=mask,
        processor=processor,
        method=method,
        layers=layers,
        labels=labels,
        ignore=ignore,
        conf=conf,
        iou=iou,
        max_instances=max_instances,
        size=size,
        nms=nms,
    )(image)
