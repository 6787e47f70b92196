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
    method: str = "gradcam",
    layers: Any = None,
    labels: list[str] | None = None,
    ignore: tuple[int, ...] = (0,),
) -> SegmentationExplanation:
    """Explain class regions of one image, all from one forward.

    ``class_id=None``: every predicted class present (except ``ignore``, the background);
    ``mask`` (H, W bool) restricts the region to the user's pixels (then ``class_id`` is
    required). Maps are Seg-Grad-CAM: the gradient of the class logits summed over the region.
    """
    from ..adapters.hf_text import require_attention_family

    require_attention_family(method, type(model).__name__, ())
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
