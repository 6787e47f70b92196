"""ultralytics RT-DETR (``ultralytics.RTDETR``, ``RTDETRDecoder`` head) run as ``RTDETR.predict`` runs it.

RT-DETR (Zhao et al. 2024, https://arxiv.org/abs/2304.08069) is NMS-free: its decoder's
queries each predict one box ``(cx, cy, w, h)`` (normalised to the input) and per-class logits
``s_{q,c}``. In eval mode the ultralytics head returns ``(y, raw)``: ``y`` ``(B, k, 6)`` =
``[cx, cy, w, h, score, class]`` of the top-k ``(query, class)`` pairs over ``σ(s)`` flattened
(``RTDETRDecoder.postprocess``, ``k = min(num_queries, queries · nc)``), ``raw[1]`` the logits
``(1, B, Q, nc)`` of the evaluated decoder layer. The predictor (``RTDETRPredictor``) stretches
the photo to ``imgsz`` (``LetterBox(scale_fill=True)``: no padding), keeps the rows with
``score > conf``, the first ``max_det``, and scales ``xyxy`` by the photo's width and height.

:class:`RtdetrFamily` does exactly that on the explained forward (the fused copy the predictor
runs, as :class:`~mmcam.adapters.ultralytics.YoloFamily`) and maps each kept row to its raw
query: the same top-k on the same scores gives ``query = index // nc``. Box k's score is its
query's class logit ``raw[1][0, b, q_k, c_k]`` (a logit: saturated probabilities give
vanishing gradients). Default layers: the three encoder levels the decoder reads (the head's
``f`` sources), LayerCAM.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..errors import InputError, TargetError
from .base import Family, Kept, Prepared, eval_mode
from .frame import Frame
from .ultralytics import fused

__all__ = ["RtdetrFamily", "is_ultralytics_rtdetr"]


def is_ultralytics_rtdetr(model: Any) -> bool:
    """True for an ``ultralytics.RTDETR`` object or its ``RTDETRDetectionModel``."""
    inner = getattr(model, "model", None) if type(model).__name__ == "RTDETR" else model
    layers = getattr(inner, "model", None)
    return isinstance(inner, nn.Module) and isinstance(layers, nn.Sequential) and type(layers[-1]).__name__ == "RTDETRDecoder"


def _imgsz(model: Any, inner: nn.Module, size: Any) -> list[int]:
    """The predictor's ``imgsz``: ``check_imgsz`` of ``size``, else the model's ``overrides`` /
    training ``args``, else 640."""
    from ultralytics.utils.checks import check_imgsz

    if size is None:
        for source in (getattr(model, "overrides", None), getattr(inner, "args", None)):
            size = source.get("imgsz") if isinstance(source, dict) else None
            if size:
                break
    return check_imgsz(size or 640, stride=max(int(inner.stride.max()), 32), min_dim=2)


def _parts(output: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y (B, k, 6), class logits (B, Q, nc))`` of the eval output."""
    if not (isinstance(output, (tuple, list)) and len(output) == 2 and isinstance(output[1], (tuple, list))):
        raise TargetError("expected the eval-mode RT-DETR output (y, (dec_bboxes, dec_scores, ...)); run the inner model in eval mode")
    y = output[0][0] if isinstance(output[0], (tuple, list)) else output[0]
    return y, output[1][1][-1]


class RtdetrFamily(Family):
    """An ultralytics RT-DETR run as ``RTDETR.predict`` runs it (see the module docstring):
    ``conf`` / ``max_det`` / ``size`` are the predictor's ``conf`` (0.25), ``max_det`` (300), ``imgsz``."""

    name = "ultralytics RT-DETR"
    batched = True

    def __init__(
        self, model: Any, conf: float = 0.25, max_det: int = 300, size: Any = None, candidates: Any = None, box_weight: float = 0.0, attribute: str = "score"
    ):
        if candidates is not None or box_weight or attribute != "score":
            raise InputError(
                "ultralytics RT-DETR explains its kept boxes by their query's class logit; candidates=, box_weight and attribute= "
                "apply to YOLO / HF DETR heads. For other targets pass layers= and a callable target (output -> (B, K)) to mmcam.CAM"
            )
        super().__init__(model)
        inner = model.model if type(model).__name__ == "RTDETR" else model
        self.inner = fused(inner)
        self.head = self.inner.model[-1]
        self.imgsz = _imgsz(model, inner, size)
        self.conf, self.max_det = conf, max_det
        self.names = {int(k): str(v) for k, v in dict(getattr(model, "names", None) or getattr(inner, "names", None) or {}).items()}

    @property
    def module(self) -> nn.Module:
        return self.inner

    def context(self) -> Any:
        return eval_mode(self.inner)

    def default_layers(self, inputs: Any) -> list[str]:
        return [f"model.{i}" for i in self.head.f]

    def prepare(self, photo: Image.Image) -> Prepared:
        from ultralytics.data.augment import LetterBox

        arr = np.asarray(photo)
        boxed = LetterBox(self.imgsz, auto=False, scale_fill=True)(image=arr)  # the predictor's: a stretch, no padding
        x = torch.from_numpy(np.ascontiguousarray(boxed)).permute(2, 0, 1).float().div(255)[None]
        frame = Frame.resize(arr.shape[:2], tuple(boxed.shape[:2]), f"ultralytics LetterBox(imgsz={self.imgsz}, scale_fill=True)")
        return Prepared(x, arr, frame)

    def decide(self, output: Any, frames: list[Frame]) -> list[Kept]:
        """Each image's kept rows (score above ``conf``, the first ``max_det``) and their raw queries."""
        from ultralytics.nn.modules.head import Detect
        from ultralytics.utils.ops import xywh2xyxy

        y, logits = _parts(output)
        y, scores = y.detach(), logits.detach().sigmoid()
        nc = scores.shape[-1]
        k = min(self.head.num_queries, scores.shape[1] * nc)
        queries = Detect._grouped_topk(scores.flatten(1), k, 1)[1] // nc  # the head's own top-k, (B, k)
        kept = []
        for b, frame in enumerate(frames):
            rows = (y[b, :, 4] > self.conf).nonzero().flatten()[: self.max_det]
            boxes = xywh2xyxy(y[b, rows, :4])
            (h, w), (ih, iw) = frame.photo, frame.input
            photo_boxes = boxes * boxes.new_tensor([w, h, w, h])
            classes = [int(c) for c in y[b, rows, 5].tolist()]
            item = Kept([int(q) for q in queries[b, rows].tolist()], classes, y[b, rows, 4], boxes * boxes.new_tensor([iw, ih, iw, ih]), photo_boxes)
            item.extra.update(first=output, reference=boxes)  # normalised xyxy: later forwards match against it
            kept.append(item)
        return kept

    def box_scores(self, output: Any, kept: Kept, b: int, pad: int) -> torch.Tensor:
        """``(N, pad)``: the class logit of each kept box's query, padded with query 0 / class 0.
        On a later forward (a perturbation method's masked copies) the decoder selects other
        queries: each kept box is scored by the query whose box overlaps it most (IoU >= 0.5),
        else 0."""
        _, logits = _parts(output)
        fill = pad - len(kept)
        classes = list(kept.classes) + [0] * fill
        if output is kept.extra.get("first", output):
            return logits[:, list(kept.indices) + [0] * fill, classes]
        from torchvision.ops import box_iou
        from ultralytics.utils.ops import xywh2xyxy

        boxes = xywh2xyxy(output[1][0][-1].detach())  # (N, Q, 4), normalised to the input
        reference = kept.extra["reference"].to(boxes.device)
        rows = []
        for n in range(logits.shape[0]):
            best, where = box_iou(reference, boxes[n]).max(1) if len(kept) else (boxes.new_zeros(0), boxes.new_zeros(0, dtype=torch.long))
            score = logits[n, where, classes[: len(kept)]]
            rows.append(torch.cat([torch.where(best >= 0.5, score, torch.zeros_like(score)), logits[n, [0] * fill, [0] * fill]]))
        return torch.stack(rows)
