"""HF DETR family (DETR, Conditional DETR, RT-DETR): kept queries decided on the explained forward.

A DETR-style model predicts a fixed set of queries; there is no NMS, so a kept box *is* a
query. Which queries are kept is decided exactly as the image processor's
``post_process_object_detection`` decides it, on the logits of the same forward:

* DETR (``DetrForObjectDetection``): ``p = softmax(logits)`` over classes, the last class
  ("no object") dropped, ``score, class = max p[:, :-1]``, kept where ``score > threshold``,
  in query order.
* Conditional DETR and RT-DETR (sigmoid / focal-loss heads): ``p = sigmoid(logits)``
  flattened over ``query x class``, top-k (Conditional DETR ``k = 100``, RT-DETR
  ``k = num_queries``), ``query = flat // num_classes``, ``class = flat % num_classes``,
  kept where ``score > threshold`` in score order (one query may be kept for two classes).

Box k's target is its class **logit** ``logits[0, query_k, class_k]``
(:class:`mmcam.targets.DetectionBoxScore`), so all K boxes come from one forward.

Default layer, by structure: the last module with parameters whose output is a spatial
``(B, C, h, w)`` map, found by one probing forward; if it is one branch of a list of
parallel branches (RT-DETR's per-level projections into the decoder) all branches are
hooked and their maps fused (RT-DETR). For DETR and Conditional DETR the default is the last
stride-4 map (the backbone's first stage): measured on the zoo DETR it localizes far better
than the input projection feeding the encoder (see :func:`layers_and_grid`). An encoder layer
given as ``layers=`` outputs ``(B, h * w, d)`` tokens; :class:`EncoderGrid` folds them into
the ``(h, w)`` of that feature map, read from the same probing forward (never a constant).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..errors import InputError, TargetError
from ..reshape import NCHW, Reshape, Tokens
from ..targets.detection import padded_box_scores
from . import detr_family
from .base import Family, Kept, Prepared, eval_mode, processor_prepare
from .frame import Frame

__all__ = ["FAMILIES", "family", "is_detr", "default_layers", "layers_and_grid", "EncoderGrid", "DetrFamily", "class_names", "pixel_values"]

# class name -> how the image processor scores queries (see the module docstring)
FAMILIES = {
    "DetrForObjectDetection": "softmax",
    "ConditionalDetrForObjectDetection": "sigmoid-top100",
    "RTDetrForObjectDetection": "sigmoid-topq",
    **detr_family.SCORING,  # Deformable DETR, DAB-DETR, D-FINE, RT-DETRv2, LW-DETR, RF-DETR, YOLOS
}


def family(model: Any) -> str | None:
    """How the model's image processor scores queries (a value of :data:`FAMILIES`), or ``None``."""
    for cls in type(model).__mro__:
        if cls.__name__ in FAMILIES:
            return FAMILIES[cls.__name__]
    return None


def is_detr(model: Any) -> bool:
    """True for an HF DETR-family detection model of :data:`FAMILIES` (or a subclass)."""
    return isinstance(model, nn.Module) and family(model) is not None


def class_names(model: nn.Module) -> dict[int, str]:
    id2label = getattr(getattr(model, "config", None), "id2label", None) or {}
    return {int(k): str(v) for k, v in id2label.items()}


def pixel_values(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """``(1, 3, H, W)`` model input from an RGB image in [0, 1], as the family's image processor
    normalises (RT-DETR: rescale only; DETR / Conditional DETR: ImageNet mean and std)."""
    norm = detr_family.normalisation(model)
    if norm == "rescale" or (norm is None and family(model) == "sigmoid-topq"):
        return image
    mean = image.new_tensor((0.485, 0.456, 0.406))[:, None, None]
    std = image.new_tensor((0.229, 0.224, 0.225))[:, None, None]
    return (image - mean) / std


def default_layers(model: nn.Module, inputs: Any) -> list[str]:
    """The last parametrised module with a spatial NCHW output (and its parallel siblings in a
    ``ModuleList``), from one probing forward (see the module docstring)."""
    return layers_and_grid(model, inputs)[0]


def layers_and_grid(model: nn.Module, inputs: Any) -> tuple[list[str], tuple[int, int]]:
    """:func:`default_layers` and the ``(h, w)`` grid of the last of them (for DETR and
    Conditional DETR: the feature map the encoder flattens into ``h * w`` tokens), from one
    probing forward per model and input layout."""
    from ..engine.layers import per_layout

    return per_layout(model, inputs, _probe_layers_and_grid)


def _probe_layers_and_grid(model: nn.Module, batch: Any) -> tuple[list[str], tuple[int, int]]:
    from ..engine.layers import probe, spatial_maps

    size = batch.spatial_size
    spatial = spatial_maps(probe(model, batch), size)
    if not spatial:
        raise InputError(f"found no spatial feature map in {type(model).__name__}; pass layers= (a name from model.named_modules())")
    last, shape = spatial[-1]
    grid = (int(shape[2]), int(shape[3]))
    if family(model) != "sigmoid-topq" and size is not None:
        # DETR / Conditional DETR: the last stride-4 map (the backbone's first stage). Measured on
        # the zoo DETR, 24 fresh textured scenes, 66 matched boxes, LayerCAM pointing game: 0.61
        # here, 0.31 at the stride-8 stage, 0.04 at the input projection (4x4 at 64 px), 0.13 at
        # the last encoder layer; centre baseline 0.02.
        fine = [name for name, s in spatial if round(size[0] / s[2]) == 4 and round(size[1] / s[3]) == 4]
        if fine:
            return [fine[-1]], grid
    parent_name = last.rpartition(".")[0]
    parent = model.get_submodule(parent_name) if parent_name else model
    if isinstance(parent, nn.ModuleList):
        names = {name for name, _ in spatial}
        return [f"{parent_name}.{child}" for child, _ in parent.named_children() if f"{parent_name}.{child}" in names], grid
    return [last], grid


class EncoderGrid(Reshape):
    """Maps as they are (``NCHW``) and the transformer encoder's tokens ``(B, h * w, d)`` folded
    into the ``(h, w)`` grid of the feature map they were flattened from — a fact of this
    forward (:func:`layers_and_grid`), so non-square images fold correctly."""

    def __init__(self, grid: tuple[int, int]):
        self.grid = grid

    def for_tensor(self, t: torch.Tensor, input_size: "tuple[int, int] | None") -> Reshape:
        if t.ndim == 4:
            return NCHW()
        if t.ndim == 3 and t.shape[1] == self.grid[0] * self.grid[1]:
            return Tokens(prefix=0, grid=self.grid)
        raise InputError(
            f"a layer with output {tuple(t.shape)} is not spatial: the encoder's tokens are "
            f"{self.grid[0]}x{self.grid[1]} = {self.grid[0] * self.grid[1]} per image (decoder layers hold "
            "queries, not positions). Hook a backbone stage, the input projection or an encoder layer"
        )

    def __call__(self, t: torch.Tensor, input_size: "tuple[int, int] | None") -> torch.Tensor:
        return self.for_tensor(t, input_size)(t, input_size)


class DetrFamily(Family):
    """An HF DETR-family detector run as its processor runs it.

    ``prepare``: the model's image processor (``processor(images=photo)``: its resize,
    rescale, normalisation and padding) or, without one, the photo at its size normalised as
    the family's processor normalises (:func:`pixel_values`). ``decide``: the kept ``(query,
    class)`` pairs by the processor's rule on this forward (see the module docstring); with a
    processor, boxes, scores and labels are its own ``post_process_object_detection(outputs,
    threshold, target_sizes=[photo size])`` — checked to agree with the kept pairs — else the
    normalised ``pred_boxes`` scaled to the photo, as that method does."""

    name = "HF DETR family"
    batched = True

    def __init__(
        self,
        model: nn.Module,
        processor: Any = None,
        conf: float = 0.5,
        max_boxes: int | None = None,
        size: int | None = None,
        candidates: "tuple[Sequence[int], Sequence[int]] | None" = None,
        box_weight: float = 0.0,
        attribute: str = "score",
    ):
        super().__init__(model, processor)
        self.scoring = family(model)
        self.conf, self.max_boxes, self.size, self.box_weight = conf, max_boxes, size, box_weight
        self.attribute = attribute
        self.candidates = None if candidates is None else ([int(q) for q in candidates[0]], [int(c) for c in candidates[1]])
        self.names = class_names(model)

    def context(self) -> Any:
        return eval_mode(self.model)

    def prepare(self, photo: Image.Image) -> Prepared:
        if self.processor is not None:
            prepared = processor_prepare(self.processor, photo)
            if not isinstance(prepared.inputs, dict) or "pixel_values" not in prepared.inputs:
                raise InputError("the processor must return a dict with pixel_values (an HF image processor)")
            return prepared
        shown = photo if self.size is None else photo.resize((self.size, self.size), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(shown, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
        w, h = photo.size
        frame = Frame.resize((h, w), tuple(x.shape[-2:]), f"{type(self.model).__name__}: the photo normalised as its processor does")
        return Prepared({"pixel_values": pixel_values(self.model, x)}, np.asarray(photo), frame)

    def layers_and_reshape(self, inputs: Any, layers: Any) -> tuple[Any, Any]:
        more = detr_family.layers_and_reshape(self.model, inputs, layers)
        if more is not None:
            return more
        chosen, grid = layers_and_grid(self.model, inputs)
        return (chosen if layers is None else layers), (EncoderGrid(grid) if self.scoring != "sigmoid-topq" else "auto")

    def decide(self, output: Any, frames: list[Frame]) -> list[Kept]:
        logits, boxes = getattr(output, "logits", None), getattr(output, "pred_boxes", None)
        if not isinstance(logits, torch.Tensor) or not isinstance(boxes, torch.Tensor):
            raise TargetError("expected an HF DETR-family output with .logits and .pred_boxes")
        logits, boxes = logits.detach(), boxes.detach()
        theirs = self._post_processed(logits, boxes, frames)
        kept = []
        for b, frame in enumerate(frames):
            query, label, score = self._pairs(logits[b])
            height, width = frame.photo
            photo_boxes = _corners(boxes[b][query]) * boxes.new_tensor((width, height, width, height))
            if theirs is not None and self.candidates is None:
                photo_boxes = _agreeing(theirs[b], label, score, type(self.processor).__name__)
            if self.candidates is None and self.max_boxes is not None and len(score) > self.max_boxes:
                best = score.topk(self.max_boxes).indices.sort().values
                query, label, score, photo_boxes = query[best], label[best], score[best], photo_boxes[best]
            kept.append(Kept(query.tolist(), label.tolist(), score, _corners(boxes[b][query]), photo_boxes))
        return kept

    def _pairs(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(query, class, score)`` of the kept pairs of one image (``logits`` (Q, C))."""
        queries, classes = logits.shape
        if self.candidates is not None:
            bad = [q for q in self.candidates[0] if not 0 <= q < queries] + [c for c in self.candidates[1] if not 0 <= c < classes]
            if bad:
                raise TargetError(f"query/class index {bad[0]} is out of range for {queries} queries x {classes} classes")
            query, label = torch.tensor(self.candidates[0], dtype=torch.long), torch.tensor(self.candidates[1], dtype=torch.long)
            probs = logits.softmax(-1) if self.scoring == "softmax" else logits.sigmoid()
            return query, label, probs[query, label]
        if self.scoring == "softmax":
            score, label = logits.softmax(-1)[:, :-1].max(-1)
            keep = (score > self.conf).nonzero().flatten()
            return keep, label[keep], score[keep]
        top_k = min(100 if self.scoring == "sigmoid-top100" else queries, queries * classes)
        score, flat = logits.sigmoid().flatten().topk(top_k)
        keep = score > self.conf
        return (flat // classes)[keep], (flat % classes)[keep], score[keep]

    def _post_processed(self, logits: torch.Tensor, boxes: torch.Tensor, frames: list[Frame]) -> "list[dict] | None":
        post = getattr(self.processor, "post_process_object_detection", None)
        if post is None:
            return None
        from types import SimpleNamespace

        sizes = [frame.photo for frame in frames]
        kwargs = {"top_k": 100} if self.scoring == "sigmoid-top100" else {}
        try:
            return post(SimpleNamespace(logits=logits, pred_boxes=boxes), threshold=self.conf, target_sizes=sizes, **kwargs)
        except TypeError:
            return post(SimpleNamespace(logits=logits, pred_boxes=boxes), threshold=self.conf, target_sizes=sizes)

    def box_scores(self, output: Any, kept: Kept, b: int, pad: int) -> torch.Tensor:
        return padded_box_scores(output, kept, b, pad, self.box_weight, self.attribute)


def _corners(cxcywh: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = cxcywh.unbind(-1)
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), -1)


def _agreeing(theirs: dict, label: torch.Tensor, score: torch.Tensor, processor: str) -> torch.Tensor:
    """The processor's boxes, after checking that it kept the same (class, score) list."""
    same = len(theirs["scores"]) == len(score) and torch.equal(theirs["labels"].cpu(), label.cpu())
    if not same or not torch.allclose(theirs["scores"].cpu().float(), score.cpu().float(), rtol=1e-5, atol=1e-6):
        raise TargetError(
            f"{processor}.post_process_object_detection kept other boxes than this family's rule "
            f"({len(theirs['scores'])} vs {len(score)}); pass candidates=(queries, classes) to explain chosen queries"
        )
    return theirs["boxes"].to(score.device).float()
