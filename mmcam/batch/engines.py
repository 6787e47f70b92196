"""Per-task engines for dataset runs: ``prepare`` one image (in a ``DataLoader`` worker),
``explain`` a batch of prepared images (in the rank's main process).

Batched tasks — ``classify``, ``segment``, ``action`` and ``detect`` on ultralytics YOLO
(fixed square input size) — stack the images of a batch that share an input shape and
explain them with one forward and one batched gradient for all their items (every image's
K items in the same pass), giving the same explanations as the single-image functions
(tested). Per-image tasks call the single-image function for each image: ``caption`` and
``vqa`` generate their text per image under ``generate()`` before the teacher-forced pass,
and ``detect`` on DETR-family / torchvision detectors keeps boxes per image in their
post-processing; their workers still decode in parallel.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..engine import CAM
from ..errors import InputError
from ..explain import ClassificationExplanation, TaskExplanation, _label_names, prepare_image
from ..render.overlay import resize_map
from ..targets import SegmentationRegion, TopClasses, logits_of, segmentation_logits

__all__ = ["Engine", "ClassifyEngine", "SegmentEngine", "ActionEngine", "DetectEngine", "PerImageEngine", "build_engine", "BATCHED_TASKS", "TASKS"]

BATCHED_TASKS = ("classify", "segment", "action", "detect")
TASKS = ("classify", "segment", "detect", "caption", "vqa", "action")


class Engine:
    """``prepare(read(path))`` runs in a worker (``read``: an RGB PIL image, or an array for
    ``.npy`` observations); ``explain(list of prepared data)`` returns one
    :class:`~mmcam.explain.TaskExplanation` per image or raises an ``MMCamError`` for the batch
    (the runner then retries image by image to find the culprit)."""

    task = "task"
    batched = False

    def read(self, path: str) -> Any:
        """The file at ``path`` (in a worker): an RGB PIL image."""
        from ..io import load_image

        return load_image(path)

    def prepare(self, image: Any) -> Any:
        return np.asarray(image)

    def explain(self, batch: list[Any]) -> list[TaskExplanation]:
        raise NotImplementedError


class ClassifyEngine(Engine):
    """:func:`mmcam.explain_classification` for B images at once (``TopClasses(topk)``)."""

    task, batched = "classify", True

    def __init__(self, model: torch.nn.Module, processor: Any, method: str, layers: Any, topk: int = 1, size: int | None = None, device: str = "cpu"):
        self.model, self.processor, self.topk, self.size, self.device = model, processor, topk, size, device
        self.cam = CAM(model, layers, method=method)
        self.names = _label_names(model, None)

    def prepare(self, image: Any) -> Any:
        return prepare_image(image, self.processor, self.size)

    def explain(self, batch: list[Any]) -> list[TaskExplanation]:
        results: list[TaskExplanation | None] = [None] * len(batch)
        for rows in _same_shape_groups([inputs for inputs, _ in batch]):
            inputs = _stack([batch[i][0] for i in rows], self.device)
            exp = self.cam(inputs, [TopClasses(self.topk)])
            logits = logits_of(exp.output)
            probs = logits.softmax(-1)
            for b, i in enumerate(rows):
                shown = batch[i][1]
                classes = logits[b].topk(min(self.topk, logits.shape[1])).indices.tolist()
                predicted = int(logits[b].argmax())
                results[i] = ClassificationExplanation(
                    image=shown,
                    maps=_at_size(exp.maps[b], shown.shape[:2]),
                    items=[self.names.get(c, str(c)) for c in classes],
                    scores=exp.scores[b],
                    method=exp.method,
                    layers=exp.layers,
                    meta={
                        "classes": classes,
                        "probabilities": [round(float(probs[b, c]), 6) for c in classes],
                        "predicted": predicted,
                        "predicted_label": self.names.get(predicted, str(predicted)),
                    },
                )
        return results  # type: ignore[return-value]


class SegmentEngine(Engine):
    """:func:`mmcam.explain_segmentation` (every predicted class but ``ignore``) for B images:
    one no-grad forward to find each image's classes, then one explained forward where image
    b's target is ``SegmentationRegion`` of its own classes (padded to the batch's largest K
    by repeating its first class; the repeats are dropped)."""

    task, batched = "segment", True

    def __init__(self, model: torch.nn.Module, processor: Any, method: str, layers: Any, ignore: tuple[int, ...] = (0,), device: str = "cpu"):
        from ..tasks.segmentation import default_segmentation_layer

        self.model, self.processor, self.ignore, self.device = model, processor, ignore, device
        self.cam = CAM(model, layers if layers is not None else default_segmentation_layer(model), method=method)
        id2label = getattr(getattr(model, "config", None), "id2label", {}) or {}
        self.names = [str(v) for _, v in sorted(id2label.items())]

    def prepare(self, image: Any) -> Any:
        return prepare_image(image, self.processor)

    def explain(self, batch: list[Any]) -> list[TaskExplanation]:
        from ..tasks.segmentation import SegmentationExplanation

        results: list[TaskExplanation | None] = [None] * len(batch)
        for rows in _same_shape_groups([inputs for inputs, _ in batch]):
            inputs = _stack([batch[i][0] for i in rows], self.device)
            with torch.no_grad():
                pred = segmentation_logits(_run(self.model, inputs)).argmax(1)
            classes = [[int(c) for c in pred[b].unique().tolist() if int(c) not in self.ignore] for b in range(len(rows))]
            for b, i in enumerate(rows):
                if not classes[b]:
                    size = batch[i][1].shape[:2]
                    results[i] = SegmentationExplanation(
                        image=batch[i][1], maps=torch.zeros(0, *size), items=[], scores=torch.zeros(0), method=self.cam.method.name,
                        layers=[], meta={"note": "nothing to explain: no class other than the background is predicted"},
                    )
            kept = [b for b in range(len(rows)) if classes[b]]
            if not kept:
                continue
            k = max(len(classes[b]) for b in kept)
            targets = [[SegmentationRegion(classes[b] + [classes[b][0]] * (k - len(classes[b])))] for b in kept]
            exp = self.cam(_take(inputs, kept), targets)
            logits = segmentation_logits(exp.output)
            for j, b in enumerate(kept):
                i, n = rows[b], len(classes[b])
                size = batch[i][1].shape[:2]
                regions = [resize_map(r.numpy(), size) > 0.5 for r in targets[j][0].region(logits[j : j + 1])[0, :n]]
                results[i] = SegmentationExplanation(
                    image=batch[i][1],
                    maps=_at_size(exp.maps[j, :n], size),
                    items=[self.names[c] if c < len(self.names) else str(c) for c in classes[b]],
                    scores=exp.scores[j, :n],
                    method=exp.method,
                    layers=exp.layers,
                    meta={"classes": classes[b], "region_pixels": [int(r.sum()) for r in regions]},
                    regions=regions,
                )
        return results  # type: ignore[return-value]


class ActionEngine(Engine):
    """:func:`mmcam.explain_action` (the greedy action) for B ``.npy`` observations at once."""

    task, batched = "action", True

    def __init__(self, model: torch.nn.Module, method: str, layers: Any, device: str = "cpu"):
        self.model, self.device = model, device
        self.cam = CAM(model, layers, method=method)

    def read(self, path: str) -> Any:
        from ..loading import load_observation

        return load_observation(path)

    def prepare(self, obs: Any) -> Any:
        from ..tasks.action import _observation

        return _observation(obs)

    def explain(self, batch: list[Any]) -> list[TaskExplanation]:
        from ..targets import GreedyActionValue
        from ..tasks.action import ActionExplanation, _display

        results: list[TaskExplanation | None] = [None] * len(batch)
        for rows in _same_shape_groups(batch):
            x = _stack([batch[i] for i in rows], self.device)
            exp = self.cam(x, [GreedyActionValue()], input_size=tuple(x.shape[-2:]))
            q_all = exp.output if isinstance(exp.output, torch.Tensor) else getattr(exp.output, "logits", exp.output)
            names = list(getattr(self.model, "labels", None) or []) or [str(a) for a in range(q_all.shape[1])]
            for b, i in enumerate(rows):
                q = torch.as_tensor(q_all)[b]
                greedy = int(q.argmax())
                shown = _display(batch[i], None, 8)
                results[i] = ActionExplanation(
                    image=shown,
                    maps=_at_size(exp.maps[b], shown.shape[:2]),
                    items=[names[greedy] if greedy < len(names) else str(greedy)],
                    scores=exp.scores[b],
                    method=exp.method,
                    layers=exp.layers,
                    meta={
                        "actions": [greedy],
                        "action": greedy,
                        "action_name": names[greedy] if greedy < len(names) else str(greedy),
                        "q_values": [round(float(v), 4) for v in q],
                        "cell_maps": exp.maps[b].tolist(),
                    },
                )
        return results  # type: ignore[return-value]


class DetectEngine(Engine):
    """:func:`mmcam.explain_detections` on an ultralytics YOLO for B images at once: NMS runs
    once on the batch output (per image, as ultralytics does), image b's target is the class
    logits of its own kept boxes (padded to the batch's largest K by repeating its first box,
    or anchor 0 when it kept none; the padding is dropped)."""

    task, batched = "detect", True

    def __init__(self, model: Any, method: str | None, layers: Any, conf: float | None = None, iou: float = 0.45, size: int | None = None, device: str = "cpu"):
        from ..adapters import ultralytics as yolo

        self.inner = yolo.inner_model(model)
        self.side = size or yolo.input_size(model)
        if self.side % 32:
            raise InputError(f"the image size must be a multiple of 32 for YOLO, got {self.side}; pass size=")
        self.conf, self.iou, self.device = 0.25 if conf is None else conf, iou, device
        self.names = yolo.class_names(model)
        self.cam = CAM(self.inner, layers if layers is not None else yolo.default_layers(self.inner), method=method or "layercam")

    def prepare(self, image: Any) -> Any:
        from PIL import Image

        shown = np.asarray(image.resize((self.side, self.side), Image.BILINEAR))
        return torch.from_numpy(shown.astype(np.float32) / 255.0).permute(2, 0, 1)[None], shown

    def explain(self, batch: list[Any]) -> list[TaskExplanation]:
        from types import SimpleNamespace

        from ..adapters import ultralytics as yolo
        from ..tasks.detection import _explanation

        nms = _BatchKeptBoxes(self.conf, self.iou, yolo.num_classes(self.inner), input_size=(self.side, self.side))
        with yolo.eval_mode(self.inner):
            exp = self.cam(_stack([x for x, _ in batch], self.device), [[_ImageBoxes(nms, b)] for b in range(len(batch))])
        results = []
        for b, (_, shown) in enumerate(batch):
            boxes, confidences, indices, classes = nms.kept[b]
            n = len(indices)
            view = SimpleNamespace(scores=exp.scores[b : b + 1, :n], method=exp.method, layers=exp.layers)
            results.append(_explanation(shown, exp.maps[b, :n], view, boxes.clamp(0, self.side), classes, self.names, confidences, indices, self.conf, self.side))
        return results


class _BatchKeptBoxes:
    """NMS on the first batch output scored; ``kept[b]`` = (boxes, confidences, raw indices,
    classes) of image b; ``padded(b)`` = its (indices, classes) padded to the batch's max K."""

    def __init__(self, conf: float, iou: float, nc: int, max_det: int = 300, input_size: "tuple[int, int] | None" = None):
        self.conf, self.iou, self.nc, self.max_det, self.input_size = conf, iou, nc, max_det, input_size
        self.kept: list[tuple[torch.Tensor, torch.Tensor, list[int], list[int]]] | None = None

    def padded(self, output: Any, b: int) -> tuple[list[int], list[int]]:
        if self.kept is None:
            from ultralytics.utils.nms import non_max_suppression

            from ..adapters.ultralytics import decoded, drop_empty_masks

            dets, idxs = non_max_suppression(decoded(output).detach(), conf_thres=self.conf, iou_thres=self.iou, max_det=self.max_det, nc=self.nc, return_idxs=True)
            self.kept = []
            for i, (d, ix) in enumerate(zip(dets, idxs)):
                indices = [int(j) for j in ix.flatten().tolist()]
                keep = drop_empty_masks(output, i, indices, d[:, :4], self.input_size)  # as a segment model's predictor
                d = d[keep]
                self.kept.append((d[:, :4], d[:, 4], [j for j, k in zip(indices, keep.tolist()) if k], [int(c) for c in d[:, 5].tolist()]))
        k = max(len(kept[2]) for kept in self.kept)
        _, _, indices, classes = self.kept[b]
        fill = (indices[0], classes[0]) if indices else (0, 0)
        return indices + [fill[0]] * (k - len(indices)), classes + [fill[1]] * (k - len(classes))


class _ImageBoxes:
    """Image b's target: the class logits ``(N, K)`` of its kept boxes (padded)."""

    def __init__(self, nms: _BatchKeptBoxes, b: int):
        self.nms, self.b = nms, b

    def __call__(self, output: Any) -> torch.Tensor:
        from ..targets import DetectionBoxScore

        return DetectionBoxScore(*self.nms.padded(output, self.b))(output)

    def __repr__(self) -> str:
        return f"KeptBoxes(image={self.b})"


class PerImageEngine(Engine):
    """One call of a single-image function per image (``fn(uint8 array) -> TaskExplanation``)."""

    def __init__(self, task: str, fn: Callable[[np.ndarray], TaskExplanation]):
        self.task, self.fn = task, fn

    def explain(self, batch: list[Any]) -> list[TaskExplanation]:
        return [self.fn(image) for image in batch]


def build_engine(
    task: str, model: Any, processor: Any, *, method: str | None, layers: Any, topk: int = 1, conf: float | None = None,
    question: str | None = None, device: str = "cpu",
) -> Engine:
    """The engine of ``task`` (see the module docstring for which tasks batch). ``device``:
    where batched tasks send their stacked inputs (the per-image tasks run on the CPU)."""
    if task == "classify":
        return ClassifyEngine(model, processor, method or "gradcam", layers, topk, device=device)
    extra = {} if method is None else {"method": method}
    if task == "segment":
        from ..adapters.ultralytics import is_yolo

        if is_yolo(model):  # instance masks: per image, as explain_segmentation explains them
            from ..tasks.segmentation import explain_segmentation

            return PerImageEngine(task, lambda image: explain_segmentation(model, image, layers=layers, conf=0.25 if conf is None else conf, **extra))
        return SegmentEngine(model, processor, method or "gradcam", layers, device=device)
    if task == "detect":
        from ..adapters.ultralytics import is_yolo
        from ..tasks.detection import explain_detections

        if is_yolo(model):
            return DetectEngine(model, method, layers, conf=conf, device=device)

        return PerImageEngine(task, lambda image: explain_detections(model, image, processor=processor, layers=layers, conf=conf, **extra))
    if task in ("caption", "vqa") and processor is None:
        raise InputError(f"the {task} task needs a model with a processor (e.g. --model zoo:{'captioner' if task == 'caption' else 'vqa'})")
    if task == "caption":
        from ..tasks.caption import explain_caption

        return PerImageEngine(task, lambda image: explain_caption(model, processor, image, layers=layers, **extra))
    if task == "vqa":
        from ..tasks.vqa import explain_vqa

        if not question:
            raise InputError("the vqa task needs a question, e.g. --question 'what color is the circle ?'")
        return PerImageEngine(task, lambda image: explain_vqa(model, processor, image, question, layers=layers, **extra))
    if task == "action":
        return ActionEngine(model, method or "gradcam", layers, device=device)
    raise InputError(f"unknown task {task!r}; pass one of {', '.join(TASKS)}")


def _signature(inputs: Any) -> Any:
    if isinstance(inputs, torch.Tensor):
        return tuple(inputs.shape[1:])
    return tuple(sorted((k, tuple(v.shape[1:]) if isinstance(v, torch.Tensor) else repr(v)) for k, v in inputs.items()))


def _same_shape_groups(inputs: list[Any]) -> list[list[int]]:
    """Positions of the inputs that can be stacked together, in first-seen order."""
    groups: dict[Any, list[int]] = {}
    for i, x in enumerate(inputs):
        groups.setdefault(_signature(x), []).append(i)
    return list(groups.values())


def _stack(inputs: list[Any], device: str) -> Any:
    if isinstance(inputs[0], torch.Tensor):
        return torch.cat(inputs).to(device)
    return {k: torch.cat([x[k] for x in inputs]).to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs[0].items()}


def _take(inputs: Any, rows: list[int]) -> Any:
    if isinstance(inputs, torch.Tensor):
        return inputs[rows]
    return {k: v[rows] if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


def _run(model: torch.nn.Module, inputs: Any) -> Any:
    return model(**inputs) if isinstance(inputs, dict) else model(inputs)


def _at_size(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return torch.stack([torch.from_numpy(resize_map(m, size)) for m in maps])
