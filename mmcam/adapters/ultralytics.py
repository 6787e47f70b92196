"""ultralytics YOLO (v8 / 11, detect and segment): the predictor's own pipeline, one object.

The ``ultralytics.YOLO`` object users hold wraps a ``DetectionModel`` (``.model``), built in
train mode. mmcam runs that inner module in eval mode for the call (never ``YOLO.eval()`` or
``YOLO.train()``, which start training) and restores its flags. :class:`YoloFamily` does what
``YOLO.predict`` does, with ultralytics' own code at every step:

* **the model**: the predictor runs a *fused* copy (Conv + BatchNorm folded, ``fuse()`` in
  ``AutoBackend``); mmcam explains the same fused copy (made once per model and weights,
  cached), so its numbers are the predictor's to the last bit and the user's model is never
  touched;
* **prepare**: ``LetterBox(imgsz, auto=rect, stride)`` exactly as the predictor builds it
  for one image (``imgsz`` from ``check_imgsz`` of the model's ``overrides``, ``rect=True``,
  stride ``max(model.stride, 32)``), RGB in [0, 1];
* **decode**: in eval mode the model returns ``(y, raw)``: ``y`` ``(B, 4 + nc [+ 32], A)``
  decoded boxes and sigmoid scores, ``raw["scores"]`` the pre-sigmoid logits.
  ``non_max_suppression(..., return_idxs=True)`` with the predictor's arguments gives the
  kept anchors; a segment model's instance masks come from ``process_mask`` and boxes whose
  mask is empty are dropped (as its predictor drops them); boxes go back to the photo with
  ``scale_boxes``, masks with ``scale_masks``;
* **targets**: box k's score is ``raw["scores"][:, cls_k, anchor_k]`` (a logit:
  probabilities of ~1e-4 give vanishing gradients), so all boxes come from one forward.
"""

from __future__ import annotations

import copy
import threading
import weakref
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..errors import InputError, TargetError
from ..targets.detection import padded_box_scores
from .base import Family, Kept, Prepared, eval_mode
from .frame import Frame
from .yolo_local import local_class_logits

__all__ = ["is_yolo", "is_segment", "inner_model", "neck_layers", "stride4_layer", "default_layers", "class_names", "num_classes", "decoded", "YoloFamily"]

HEADS = ("Detect", "Segment", "v10Detect", "Segment26", "Pose", "Pose26", "OBB", "OBB26", "WorldDetect", "YOLOEDetect", "YOLOESegment", "YOLOESegment26")


def is_yolo(model: Any) -> bool:
    """True for an ``ultralytics.YOLO`` object or its inner ``DetectionModel``."""
    names = {c.__name__ for c in type(model).__mro__}
    return bool(names & {"YOLO", "Model", "DetectionModel", "SegmentationModel"}) and (hasattr(model, "predictor") or hasattr(model, "yaml"))


def inner_model(model: Any) -> nn.Module:
    wrapper = "Model" in {c.__name__ for c in type(model).__mro__}  # ultralytics' YOLO / YOLOWorld / YOLOE / RTDETR objects
    inner = model.model if not isinstance(model, nn.Module) or wrapper else model
    if not isinstance(inner, nn.Module) or not isinstance(getattr(inner, "model", None), nn.Sequential):
        raise InputError(f"cannot find the ultralytics DetectionModel inside {type(model).__name__}")
    head = type(inner.model[-1]).__name__
    if head not in HEADS:
        raise InputError(
            f"mmcam explains ultralytics heads {', '.join(HEADS)} (YOLOv8 / 10 / 11 / 12 / 26 detect, segment, pose and OBB; YOLO-World and YOLOE; "
            f"RT-DETR through ultralytics.RTDETR; classifiers through explain_classification); this "
            f"model ends in {head}. For it, pass the layers and a target by hand: "
            "mmcam.CAM(model.model, layers=['model.15', ...], method='layercam')(x, [lambda out: out[1]['scores'][:, cls, anchor]]) "
            "(any callable output -> (B,) or (B, K) scores)"
        )
    return inner


_FUSED: "weakref.WeakKeyDictionary[nn.Module, tuple[Any, nn.Module]]" = weakref.WeakKeyDictionary()
_FUSING = threading.Lock()


def fused(inner: nn.Module, end2end: bool = False) -> nn.Module:
    """The fused copy the predictor runs (``deepcopy`` + ``fuse()``), cached per model until its
    weights change (a parameter's storage or in-place version). Layer names are unchanged.
    ``end2end``: the head mode AutoBackend selects before fusing (``predict(nms=False)``: the
    one-to-one branch of a YOLO26 / YOLOv10 head; else the one-to-many branch, then NMS)."""
    key = (bool(end2end), *((p.data_ptr(), p._version) for p in inner.parameters()))
    with _FUSING:
        hit = _FUSED.get(inner)
        if hit is not None and hit[0] == key:
            return hit[1]
        twin = copy.deepcopy(inner)
        if hasattr(twin, "end2end"):  # AutoBackend always sets it (predict's nms is False), so fuse() keeps that branch
            twin.end2end = bool(end2end)
        if hasattr(twin, "fuse"):
            with torch.no_grad():
                twin = twin.fuse(verbose=False) if "verbose" in twin.fuse.__code__.co_varnames else twin.fuse()
        if _channels_last(twin):  # AutoBackend's memory format on x86 CPUs (and CUDA): other conv kernels, other last bits
            twin = twin.to(memory_format=torch.channels_last)
        _FUSED[inner] = (key, twin)  # one cached copy per model: the latest mode
        return twin


def _channels_last(model: nn.Module) -> bool:
    """AutoBackend's rule for a ``.pt`` model: channels-last on CUDA, and on x86 Linux / Windows
    CPUs with oneDNN."""
    import platform
    import sys

    device = next(model.parameters()).device.type if any(True for _ in model.parameters()) else "cpu"
    if device == "cuda":
        return True
    return (
        device == "cpu"
        and platform.machine() in {"AMD64", "x86_64"}
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
        and sys.platform in ("linux", "win32")
    )


def neck_layers(inner: nn.Module) -> list[str]:
    """The P3/P4/P5 neck outputs the Detect head reads (its ``f`` sources)."""
    return [f"model.{i}" for i in inner.model[-1].f]


def stride4_layer(inner: nn.Module) -> str | None:
    """The last backbone module at stride 4 (YOLOv8's first C2f, YOLO11's first C3k2), found by
    following the strided convolutions of the sequential backbone."""
    stride, last = 1, None
    for index, module in enumerate(inner.model):
        if getattr(module, "f", -1) != -1:
            break
        conv = getattr(module, "conv", None)
        if isinstance(conv, nn.Conv2d):
            stride *= conv.stride[0]
        if stride == 4:
            last = index
        elif stride > 4:
            break
    return None if last is None else f"model.{last}"


def default_layers(inner: nn.Module) -> list[str]:
    """The stride-4 backbone stage plus the neck outputs (maps summed): measured on the zoo
    YOLO with LayerCAM, the pointing game rises from 0.89 (neck only, 8x8 at 64 px) to 0.97."""
    fine = stride4_layer(inner)
    return ([fine] if fine else []) + neck_layers(inner)


def _inside(head: nn.Module, inner: nn.Module, layers: Any) -> bool:
    """True if any of ``layers`` (names or modules) is a strict submodule of ``head``."""
    inside = {id(m) for m in head.modules() if m is not head}
    for spec in [layers] if isinstance(layers, (str, nn.Module)) else list(layers or []):
        try:
            module = inner.get_submodule(spec) if isinstance(spec, str) else spec
        except AttributeError:
            continue  # an unknown name: the engine says so
        if id(module) in inside:
            return True
    return False


def is_segment(model: Any) -> bool:
    """True for a YOLO whose head predicts instance masks (mask coefficients + prototypes)."""
    head = inner_model(model).model[-1]
    return hasattr(head, "proto") and hasattr(head, "nm")


def num_classes(inner: nn.Module) -> int:
    return int(inner.model[-1].nc)


def decoded(output: Any) -> torch.Tensor:
    """``y`` ``(B, 4 + nc [+ nm], A)`` of the eval output ``(y, raw)`` (``((y, proto), raw)``
    for a Segment head)."""
    y = output[0]
    return y[0] if isinstance(y, (tuple, list)) else y


def class_names(model: Any) -> dict[int, str]:
    names = getattr(model, "names", None) or getattr(inner_model(model), "names", None) or {}
    return {int(k): str(v) for k, v in dict(names).items()}


def _imgsz(model: Any, stride: int, size: "int | tuple[int, int] | None") -> list[int]:
    """The predictor's ``imgsz``: ``check_imgsz`` of ``size`` or the model's ``overrides`` /
    training ``args`` (default 640)."""
    from ultralytics.utils.checks import check_imgsz

    if size is None:
        for source in (getattr(model, "overrides", None), getattr(inner_model(model), "args", None)):
            found = source.get("imgsz") if isinstance(source, dict) else None
            if found:
                size = found
                break
    return check_imgsz(size or 640, stride=stride, min_dim=2)


def _output_parts(output: Any) -> tuple[torch.Tensor, "torch.Tensor | None", "torch.Tensor | None"]:
    """``(y, coefficients (B, nm, A) | None, prototypes (B, nm, mh, mw) | None)``."""
    if not (isinstance(output, (tuple, list)) and len(output) == 2 and isinstance(output[1], dict)):
        raise TargetError("expected the eval-mode ultralytics output (y, raw); run the inner model in eval mode")
    coefficients = output[1].get("mask_coefficient")
    protos = output[0][1] if isinstance(output[0], (tuple, list)) else None
    return decoded(output), coefficients, protos


class YoloFamily(Family):
    """A YOLO detect / segment model run as ``YOLO.predict`` runs it (see the module docstring).

    ``conf``, ``iou``, ``max_det``: the predictor's arguments (defaults 0.25, 0.7, 300);
    ``size``: its ``imgsz``; ``candidates=(anchors, classes)`` scores those instead of NMS."""

    name = "ultralytics YOLO"
    batched = True
    local_head = True  # box logits from each anchor's window of the head input (yolo_local.py); False: the dense logits
    # maps mirrored past the outermost cell centres: with the flat (replicated) outer half cell
    # a box whose strongest cell is at the image edge peaked on the outermost 2 px, off an
    # object that touches the border (zoo YOLO26 pointing 0.931-0.956 -> 0.959-0.978; docs/detectors.md)
    edge = "reflect"

    def __init__(
        self,
        model: Any,
        conf: float = 0.25,
        iou: float = 0.7,
        max_det: int = 300,
        size: "int | tuple[int, int] | None" = None,
        candidates: "tuple[Any, Any] | None" = None,
        box_weight: float = 0.0,
        attribute: str = "score",
        end2end: bool = False,
    ):
        super().__init__(model)
        self.inner = fused(inner_model(model), end2end)
        self.stride = max(int(self.inner.stride.max()), 32) if hasattr(self.inner, "stride") else 32
        self.imgsz = _imgsz(model, self.stride, size)
        self.conf, self.iou, self.max_det = conf, iou, max_det
        self.candidates = None if candidates is None else ([int(i) for i in candidates[0]], [int(c) for c in candidates[1]])
        self.box_weight = box_weight
        self.attribute = attribute
        self.segment = is_segment(model)
        self.names = class_names(model)

    @property
    def module(self) -> nn.Module:
        return self.inner

    def context(self) -> Any:
        return eval_mode(self.inner)

    def default_layers(self, inputs: Any) -> list[str]:
        return default_layers(self.inner)

    def layers_and_reshape(self, inputs: Any, layers: Any) -> tuple[Any, Any]:
        chosen, reshape = super().layers_and_reshape(inputs, layers)
        # a layer inside the head (e.g. a class branch's first conv, model.22.cv3.0.0) is off the
        # path of the window logits, which rerun the branch from the head input: score densely
        self._in_head = _inside(self.inner.model[-1], self.inner, chosen)
        return chosen, reshape

    def prepare(self, photo: Image.Image) -> Prepared:
        from ultralytics.data.augment import LetterBox

        arr = np.asarray(photo)
        letterbox = LetterBox(self.imgsz, auto=True, stride=self.stride)  # the predictor's, for one image (rect=True)
        params = letterbox.get_params({"img": arr})
        boxed = letterbox(image=arr)
        x = torch.from_numpy(np.ascontiguousarray(boxed)).permute(2, 0, 1).float().div(255)[None]
        (h, w), (uw, uh) = arr.shape[:2], params["new_unpad"]
        frame = Frame(
            (h, w),
            tuple(boxed.shape[:2]),
            (uh / h, uw / w),
            (float(params["top"]), float(params["left"])),
            f"ultralytics LetterBox(imgsz={self.imgsz}, auto=True, stride={self.stride})",
        )
        return Prepared(x, arr, frame)

    def decide(self, output: Any, frames: list[Frame]) -> list[Kept]:
        """Each image's kept boxes, as the predictor keeps them (see the module docstring)."""
        from ultralytics.utils.nms import non_max_suppression
        from ultralytics.utils.ops import xywh2xyxy

        y, _, _ = _output_parts(output)
        y = y.detach()
        if self.candidates is not None:
            indices, classes = self.candidates
            bad = [i for i in indices if not 0 <= i < y.shape[2]] + [c for c in classes if not 0 <= c < num_classes(self.inner)]
            if bad:
                raise TargetError(f"candidate index/class {bad[0]} is out of range for {y.shape[2]} anchors x {num_classes(self.inner)} classes")
            rows = [(xywh2xyxy(y[b, :4, indices].T), y[b, 4:][classes, indices], indices, classes) for b in range(len(frames))]
        else:
            nc = num_classes(self.inner)  # the predictor's len(names); detect passes 0, the same for 4 + nc rows
            dets, idxs = non_max_suppression(y, self.conf, self.iou, max_det=self.max_det, nc=nc, return_idxs=True)
            rows = [(d[:, :4], d[:, 4], [int(i) for i in ix.flatten().tolist()], [int(c) for c in d[:, 5].tolist()]) for d, ix in zip(dets, idxs)]
        return [self._kept(output, b, frame, *row) for b, (frame, row) in enumerate(zip(frames, rows))]

    def _kept(self, output: Any, b: int, frame: Frame, boxes: torch.Tensor, confidences: torch.Tensor, indices: list[int], classes: list[int]) -> Kept:
        from ultralytics.utils.ops import scale_boxes

        photo_boxes = scale_boxes(frame.input, boxes.clone(), frame.photo)
        kept = Kept(indices, classes, confidences, boxes, photo_boxes)
        if self.segment:
            kept.masks, kept.regions = self._masks(output, b, kept, frame.input)
            if self.candidates is None:
                kept = kept.subset(kept.masks.flatten(1).any(1))  # the segment predictor drops empty masks
        return kept

    def _masks(self, output: Any, b: int, kept: Kept, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """ultralytics' instance masks at the input size, and each instance's region at the
        prototype resolution (its mask there; its box if the mask only appears after upsampling)."""
        from ultralytics.utils.ops import crop_mask, process_mask

        _, coefficients, protos = _output_parts(output)
        proto = protos.detach()[b]
        (mh, mw), (height, width) = proto.shape[-2:], size
        if not kept.indices:
            return torch.zeros(0, height, width, dtype=torch.bool), torch.zeros(0, mh, mw, dtype=torch.bool)
        coeffs = coefficients.detach()[b][:, kept.indices].T
        masks = process_mask(proto, coeffs, kept.boxes, (height, width), upsample=True).bool()
        small = process_mask(proto, coeffs, kept.boxes, (height, width), upsample=False).bool()
        scale = kept.boxes.new_tensor([mw / width, mh / height] * 2)
        box_only = crop_mask(torch.ones(len(kept.indices), mh, mw, dtype=torch.uint8), kept.boxes * scale).bool()
        return masks, torch.where((small.flatten(1).sum(1) == 0)[:, None, None], box_only, small)

    def box_scores(self, output: Any, kept: Kept, b: int, pad: int) -> torch.Tensor:
        """``(N, pad)``: the class logits of image b's kept boxes (+ the box term), padded; without
        a box term each from its anchor's window of the head input (same values, a backward
        through that window only: :mod:`mmcam.adapters.yolo_local`)."""
        if self.local_head and not getattr(self, "_in_head", False) and not self.box_weight and self.attribute == "score":
            fill = pad - len(kept)
            local = local_class_logits(self.inner.model[-1], output, list(kept.indices) + [0] * fill, list(kept.classes) + [0] * fill)
            if local is not None:
                return local
        return padded_box_scores(output, kept, b, pad, self.box_weight, self.attribute)

    def mask_scores(self, output: Any, kept: Kept, b: int, pad: int) -> torch.Tensor:
        """``(N, pad)``: instance k's mask logits ``c_k · P`` summed over its region (Seg-Grad-CAM
        for one instance), padded with zeros."""
        _, coefficients, protos = _output_parts(output)
        logits = torch.einsum("bnk,bnhw->bkhw", coefficients[:, :, kept.indices], protos)
        scores = (logits * kept.regions.to(logits.device)).flatten(2).sum(-1)
        if pad > len(kept):
            scores = torch.cat([scores, (protos[:, :1, 0, 0] * 0).expand(-1, pad - len(kept))], 1)
        return scores

    def photo_masks(self, kept: Kept, frame: Frame) -> torch.Tensor:
        """``(K, H, W)`` bool: the instance masks on the photo (ultralytics' ``scale_masks``)."""
        from ultralytics.utils.ops import scale_masks

        if not len(kept):
            return torch.zeros(0, *frame.photo, dtype=torch.bool)
        return scale_masks(kept.masks[None].float(), frame.photo)[0] > 0.5
