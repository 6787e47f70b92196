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

import torch
from torch import nn

from ..errors import InputError, TargetError
from ..reshape import NCHW, Reshape, Tokens
from ..targets.detection import DetectionBoxScore

__all__ = ["FAMILIES", "family", "is_detr", "default_layers", "layers_and_grid", "EncoderGrid", "KeptQueries", "class_names", "pixel_values"]

# class name -> how the image processor scores queries (see the module docstring)
FAMILIES = {
    "DetrForObjectDetection": "softmax",
    "ConditionalDetrForObjectDetection": "sigmoid-top100",
    "RTDetrForObjectDetection": "sigmoid-topq",
}


def family(model: Any) -> str | None:
    """How the model's image processor scores queries (a value of :data:`FAMILIES`), or ``None``."""
    for cls in type(model).__mro__:
        if cls.__name__ in FAMILIES:
            return FAMILIES[cls.__name__]
    return None


def is_detr(model: Any) -> bool:
    """True for an HF DETR, Conditional DETR or RT-DETR detection model (or a subclass)."""
    return isinstance(model, nn.Module) and family(model) is not None


def class_names(model: nn.Module) -> dict[int, str]:
    id2label = getattr(getattr(model, "config", None), "id2label", None) or {}
    return {int(k): str(v) for k, v in id2label.items()}


def pixel_values(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """``(1, 3, H, W)`` model input from an RGB image in [0, 1], as the family's image processor
    normalises (RT-DETR: rescale only; DETR / Conditional DETR: ImageNet mean and std)."""
    if family(model) == "sigmoid-topq":
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
    from ..reshape import _consistent
    from ..engine.layers import probe

    size = batch.spatial_size
    spatial = [
        (name, shape)
        for name, module, shape, calls, plain in probe(model, batch)
        if plain
        and calls == 1
        and len(shape) == 4
        and shape[2] * shape[3] > 1
        and any(True for _ in module.parameters())
        and (size is None or _consistent(shape[2], shape[3], size))
    ]
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


class KeptQueries(DetectionBoxScore):
    """The queries the image processor would keep (decided on this very output), as
    ``(B=1, K)`` class logits.

    The first call decides the kept ``(query, class)`` pairs, their boxes (xyxy, in pixels of
    ``image_size`` ``(H, W)``) and confidences; later calls (e.g. on masked inputs in Score-CAM)
    score the same queries. ``max_boxes`` keeps the highest-scoring ones, in the processor's
    order. ``candidates=(queries, classes)`` scores those pairs instead of deciding (their
    confidences are the family's probabilities).
    """

    def __init__(
        self,
        family: str,
        threshold: float,
        image_size: tuple[int, int],
        max_boxes: int | None = None,
        candidates: "tuple[Sequence[int], Sequence[int]] | None" = None,
        box_weight: float = 0.0,
    ):
        super().__init__(*(candidates if candidates is not None else ([], [])), box_weight=box_weight)
        self.fixed = candidates is not None
        if family not in FAMILIES.values():
            raise InputError(f"unknown DETR scoring {family!r}; one of {sorted(set(FAMILIES.values()))}")
        self.family, self.threshold, self.image_size, self.max_boxes = family, threshold, image_size, max_boxes
        self.boxes: torch.Tensor | None = None
        self.confidences: torch.Tensor | None = None

    def __call__(self, output: Any) -> torch.Tensor:
        if self.boxes is None:
            self._decide(output)
        return super().__call__(output)

    def _decide(self, output: Any) -> None:
        logits = getattr(output, "logits", None)
        boxes = getattr(output, "pred_boxes", None)
        if not isinstance(logits, torch.Tensor) or not isinstance(boxes, torch.Tensor):
            raise TargetError("expected an HF DETR-family output with .logits and .pred_boxes")
        if logits.shape[0] != 1:
            raise InputError("explain one image at a time (its kept boxes define the targets)")
        logits, boxes = logits.detach()[0], boxes.detach()[0]
        queries, classes = logits.shape
        if self.fixed:
            bad = [q for q in self.indices if not 0 <= q < queries] + [c for c in self.classes if not 0 <= c < classes]
            if bad:
                raise TargetError(f"query/class index {bad[0]} is out of range for {queries} queries x {classes} classes")
            probs = logits.softmax(-1) if self.family == "softmax" else logits.sigmoid()
            query, label = torch.tensor(self.indices, dtype=torch.long), torch.tensor(self.classes, dtype=torch.long)
            score = probs[query, label]
        elif self.family == "softmax":
            score, label = logits.softmax(-1)[:, :-1].max(-1)
            keep = (score > self.threshold).nonzero().flatten()
            query, label, score = keep, label[keep], score[keep]
        else:
            top_k = min(100 if self.family == "sigmoid-top100" else queries, queries * classes)
            score, flat = logits.sigmoid().flatten().topk(top_k)
            query, label = flat // classes, flat % classes
            keep = score > self.threshold
            query, label, score = query[keep], label[keep], score[keep]
        if not self.fixed and self.max_boxes is not None and len(score) > self.max_boxes:
            best = score.topk(self.max_boxes).indices.sort().values
            query, label, score = query[best], label[best], score[best]
        cx, cy, w, h = boxes[query].unbind(-1)
        height, width = self.image_size
        scale = boxes.new_tensor((width, height, width, height))
        self.boxes = torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), -1) * scale
        self.confidences = score
        self.indices = [int(q) for q in query.tolist()]
        self.classes = [int(c) for c in label.tolist()]

    def __repr__(self) -> str:
        return f"KeptQueries({self.family}, threshold={self.threshold}, kept={len(self.indices)})"
