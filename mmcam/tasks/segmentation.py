"""Explain a segmentation region: what made the model label these pixels as class c."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..engine import CAM
from ..errors import InputError, LayerError, TargetError
from ..explain import TaskExplanation, prepare_image
from ..render.overlay import resize_map
from ..targets import SegmentationRegion, segmentation_logits

__all__ = ["SegmentationExplanation", "explain_segmentation", "default_segmentation_layer"]


@dataclass
class SegmentationExplanation(TaskExplanation):
    """One map per explained class region; ``regions[k]`` is the region's mask (H, W)."""

    task: str = "segmentation"
    regions: list[np.ndarray] = field(default_factory=list)

    def overlays(self, alpha: float = 0.5) -> list[np.ndarray]:
        """Overlays with the explained region's outline drawn in white."""
        out = []
        for img, region in zip(super().overlays(alpha), self.regions):
            img = img.copy()
            edge = region & ~_eroded(region)
            img[edge] = 255
            out.append(img)
        return out


def _eroded(mask: np.ndarray) -> np.ndarray:
    m = np.pad(mask, 1)
    return m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]


def default_segmentation_layer(model: nn.Module) -> str:
    """The features the classifier reads: Segformer's fused decoder features, or the last
    stage of a torchvision segmentation backbone."""
    names = dict(model.named_modules())
    for name in names:
        if name.endswith("decode_head.linear_fuse"):
            return name
    backbone = getattr(model, "backbone", None)
    if backbone is not None and hasattr(model, "classifier"):
        last = list(backbone.named_children())[-1][0]
        return f"backbone.{last}"
    raise LayerError(
        f"no default segmentation layer for {type(model).__name__}; supported: HF Segformer, torchvision "
        "deeplabv3/lraspp/fcn. Pass layers= (the features before the pixel classifier)"
    )


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
    size: int | None = None,
) -> SegmentationExplanation:
    """Explain class regions of one image, all from one forward.

    Semantic segmenters (HF Segformer, torchvision deeplabv3 / lraspp / fcn):
    ``class_id=None``: every predicted class present (except ``ignore``, the background);
    ``mask`` (H, W bool) restricts the region to the user's pixels (then ``class_id`` is
    required). Maps are Seg-Grad-CAM: the gradient of the class logits summed over the region.
    Default method ``"gradcam"``.

    ultralytics YOLO segment models (the ``YOLO`` object): one map per kept instance (NMS at
    ``conf``; ``class_id`` keeps those classes), each explaining its mask logits summed over
    its own predicted mask (:class:`mmcam.adapters.ultralytics.KeptInstances`); the regions
    are ultralytics' own instance masks. Default method ``"layercam"`` and the detection
    layers (stride-4 stage + P3/P4/P5), as for boxes; ``size``: the input side (default: the
    model's).
    """
    from ..adapters import ultralytics as yolo
    from ..adapters.hf_text import require_attention_family

    require_attention_family(method or "gradcam", type(model).__name__, ())
    if yolo.is_yolo(model):
        if mask is not None:
            raise InputError("a user mask applies to semantic segmenters; for a YOLO segment model pass class_id (or none) to choose instances")
        if not yolo.is_segment(model):
            raise InputError("this YOLO model predicts boxes, not masks: explain them with mmcam.explain_detections (CLI: --task detect)")
        return _explain_yolo_instances(model, image, class_id, method or "layercam", layers, labels, conf, size)
    method = method or "gradcam"
    inputs, shown = prepare_image(image, processor)
    if mask is not None and class_id is None:
        raise InputError("a mask needs a class_id: pass class_id= for the class to explain over the mask")
    if mask is not None and not np.asarray(mask).any():
        raise InputError("the mask is empty: nothing to explain; pass a mask with at least one pixel")
    with torch.no_grad():
        out = model(**inputs) if isinstance(inputs, dict) else model(inputs)
    logits = segmentation_logits(out)
    pred = logits.argmax(1)[0]
    if class_id is None:
        classes = [int(c) for c in pred.unique().tolist() if int(c) not in ignore]
    else:
        classes = [class_id] if isinstance(class_id, int) else list(class_id)
        for c in classes:
            if not 0 <= c < logits.shape[1]:
                raise TargetError(f"class_id {c} is out of range for {logits.shape[1]} classes; pass 0..{logits.shape[1] - 1}")
    names = labels or [str(v) for _, v in sorted(getattr(getattr(model, "config", None), "id2label", {}).items())] or None
    size = shown.shape[:2]
    if not classes:
        return SegmentationExplanation(
            image=shown, maps=torch.zeros(0, *size), items=[], scores=torch.zeros(0), method=method,
            layers=[], meta={"note": "nothing to explain: no class other than the background is predicted"},
        )
    user_mask = None if mask is None else torch.as_tensor(np.asarray(mask, dtype=np.float32))
    target = SegmentationRegion(classes, user_mask)
    exp = CAM(model, layers if layers is not None else default_segmentation_layer(model), method=method)(inputs, [target])
    regions_small = target.region(segmentation_logits(exp.output))[0]
    regions = [resize_map(r.numpy(), size) > 0.5 for r in regions_small]
    maps = torch.stack([torch.from_numpy(resize_map(m.numpy(), size)) for m in exp.maps[0]])
    return SegmentationExplanation(
        image=shown,
        maps=maps,
        items=[names[c] if names and c < len(names) else str(c) for c in classes],
        scores=exp.scores[0],
        method=exp.method,
        layers=exp.layers,
        meta={"classes": classes, "region_pixels": [int(r.sum()) for r in regions]},
        regions=regions,
    )


def _explain_yolo_instances(model, image, class_id, method, layers, labels, conf, size) -> SegmentationExplanation:
    from PIL import Image

    from ..adapters import ultralytics as yolo
    from ..io import load_image

    inner = yolo.inner_model(model)
    side = size or yolo.input_size(model)
    if side % 32:
        raise InputError(f"the image size must be a multiple of 32 for YOLO, got {side}; pass size=")
    shown = np.asarray(load_image(image).resize((side, side), Image.BILINEAR))
    x = torch.from_numpy(shown.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    wanted = None if class_id is None else ({class_id} if isinstance(class_id, int) else set(class_id))
    kept = yolo.KeptInstances((side, side), conf=conf, nc=yolo.num_classes(inner), classes_wanted=wanted)
    with yolo.eval_mode(inner):
        exp = CAM(inner, layers if layers is not None else yolo.default_layers(inner), method=method)(x, [kept])
    names = dict(enumerate(labels)) if labels is not None else yolo.class_names(model)
    keep = list(range(len(kept.indices)))
    if not keep:
        return SegmentationExplanation(
            image=shown, maps=torch.zeros(0, side, side), items=[], scores=torch.zeros(0), method=exp.method, layers=exp.layers,
            meta={"note": f"nothing to explain: no instance above conf={conf}" + ("" if class_id is None else f" of class {class_id}")},
        )
    masks = [kept.masks[k].numpy() for k in keep]
    return SegmentationExplanation(
        image=shown,
        maps=exp.maps[0, keep],
        items=[f"{names.get(kept.classes[k], str(kept.classes[k]))} {float(kept.confidences[k]):.2f}" for k in keep],
        scores=exp.scores[0, keep],
        method=exp.method,
        layers=exp.layers,
        meta={
            "classes": [kept.classes[k] for k in keep],
            "confidences": [round(float(kept.confidences[k]), 5) for k in keep],
            "raw_indices": [kept.indices[k] for k in keep],
            "boxes": [[round(float(v), 2) for v in kept.boxes[k]] for k in keep],
            "region_pixels": [int(m.sum()) for m in masks],
        },
        regions=masks,
    )
