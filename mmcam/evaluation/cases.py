"""Per-task evaluation cases: one image (or question, or grid state) prepared once with the
trained model — its targets frozen, its ground truth linked to each explained item.

A :class:`Case` can then re-explain the *same* targets with any method on any version of the
model (the trained one, or a randomized copy for the sanity check), and score perturbed
inputs as probabilities for the faithfulness metrics. Ground truth per task follows
``EVALUATION.md``:

- classify: the objects of the predicted class;
- detect: the instance matched to each kept box at IoU >= 0.5 (others: every other object);
- segment: the objects of the region's class;
- caption: the object(s) each word is linked to (relation words: both); only captions the
  model generates exactly, so the links apply;
- vqa: the object(s) the question is about (its answer's objects);
- action: the decisive cells (agent, goal, walls next to the agent).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import SHAPES
from ..errors import InputError
from .detection import detector_scoring, iou

_iou = iou  # the matching rule, under its older name

__all__ = ["Case", "TASKS", "prepare"]

TASKS = ("classify", "detect", "segment", "caption", "vqa", "action")


@dataclass
class Case:
    """One evaluated sample. ``masks[k]``/``others[k]`` are bool ``(H, W)`` at the model
    input's size: the ground truth of item ``k`` and the other objects in the image."""

    sample_id: str
    items: list[str]
    pixels: torch.Tensor  # (C, H, W) the model input
    masks: torch.Tensor  # (K, H, W) bool
    others: torch.Tensor  # (K, H, W) bool
    probabilities: Callable[[torch.Tensor], torch.Tensor]  # (N, C, H, W) -> (N, K)
    explain: Callable[[nn.Module, str], torch.Tensor]  # (model, method) -> (K, H, W) maps, fixed targets
    explain_other: Callable[[nn.Module, str], torch.Tensor] | None = None  # a different target, (K, H, W)
    guided: Callable[[nn.Module], torch.Tensor] | None = None  # Guided Backprop maps (K, H, W)
    # for the interventions (mmcam.evaluation.interventions): a photo -> the model input
    # (C, H, W); every object's mask (M, H, W) in annotation order; per item, its objects
    encode: Callable[[np.ndarray], torch.Tensor] | None = None
    objects: torch.Tensor | None = None
    referred: list[list[int]] | None = None


def _fit(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    maps = maps.float()
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def _union(masks: np.ndarray, indices: list[int], size: tuple[int, int]) -> torch.Tensor:
    out = torch.zeros(size, dtype=torch.bool)
    for i in indices:
        out |= torch.from_numpy(masks[i])
    return out


def _objects(sample: Any, size: tuple[int, int]) -> torch.Tensor:
    """Every annotated object's mask at the model input's size, (M, H, W) bool."""
    return _fit(torch.from_numpy(sample.masks).float(), size) > 0.5


def _encoder(processor: Any) -> Callable[[np.ndarray], torch.Tensor]:
    from ..explain import prepare_image

    return lambda photo: _pixels(prepare_image(photo, processor)[0])


def _category(name: str) -> int | None:
    """COCO category id of a class name in the scenes dataset (1-based index into SHAPES)."""
    return SHAPES.index(name) + 1 if name in SHAPES else None


def _pixels(inputs: Any) -> torch.Tensor:
    x = inputs if isinstance(inputs, torch.Tensor) else inputs["pixel_values"]
    return x[0].detach()


def _classify(model, processor, sample, layers=None) -> list[Case]:
    from ..engine.guided import GuidedBackprop
    from ..explain import label_names, prepare_image
    from ..targets import logits_of
    from ..tasks.classification import explain_classification

    image = sample.load_image()
    inputs, _ = prepare_image(image, processor)
    x = _pixels(inputs)
    size = tuple(x.shape[-2:])

    def run(m, xs):
        return logits_of(m(xs) if isinstance(inputs, torch.Tensor) else m(pixel_values=xs))

    with torch.no_grad():
        logits = run(model, x[None])[0]
    order = logits.argsort(descending=True).tolist()
    c, runner_up = order[0], order[1] if len(order) > 1 else order[0]
    names = label_names(model, None)
    category = _category(names.get(c, str(c)))
    hits = [i for i, cat in enumerate(sample.categories) if cat == category]
    if not hits:
        return []  # the predicted class is not in the image: no ground truth to point at
    mask = _union(sample.masks, hits, size)
    rest = _union(sample.masks, [i for i in range(len(sample.categories)) if i not in hits], size)

    def explain(m, method, cls=c):
        return _fit(explain_classification(m, image, target=cls, processor=processor, method=method, layers=layers).maps, size)

    return [
        Case(
            sample_id=str(sample.image_id),
            items=[names.get(c, str(c))],
            pixels=x,
            masks=mask[None],
            others=rest[None],
            probabilities=lambda xs: run(model, xs).softmax(-1)[:, [c]],
            explain=explain,
            explain_other=lambda m, method: explain(m, method, runner_up),
            guided=lambda m: _fit(GuidedBackprop(m)(x[None] if isinstance(inputs, torch.Tensor) else {"pixel_values": x[None]}, [c]).maps[0], size),
            encode=_encoder(processor),
            objects=_objects(sample, size),
            referred=[hits],
        )
    ]


def _detect(model, processor, sample, layers=None) -> list[Case]:
    from ..tasks.detection import explain_detections

    image = sample.load_image()
    first = explain_detections(model, image, processor=processor)
    if not first.meta["raw_indices"]:
        return []
    gt = [(b[0], b[1], b[0] + b[2], b[1] + b[3]) for b in sample.boxes.tolist()]  # boxes and maps are in the photo's pixels
    keep, matched = [], []
    for k, box in enumerate(first.meta["boxes"]):
        if gt:
            best = max(range(len(gt)), key=lambda i: iou(box, gt[i]))
            if iou(box, gt[best]) >= 0.5:
                keep.append(k)
                matched.append(best)
    if not keep:
        return []
    size = tuple(first.image.shape[:2])
    masks = _fit(torch.from_numpy(sample.masks).float(), size) > 0.5
    indices = [first.meta["raw_indices"][k] for k in keep]
    classes = [first.meta["class_ids"][k] for k in keep]
    x, probabilities, encode = detector_scoring(model, processor, first.image, indices, classes)

    def explain(m, method):
        return _fit(explain_detections(m, image, processor=processor, method=method, layers=layers, candidates=(indices, classes)).maps, size)

    return [
        Case(
            sample_id=str(sample.image_id),
            items=[first.items[k] for k in keep],
            pixels=x,
            masks=torch.stack([masks[i] for i in matched]),
            others=torch.stack(
                [masks[[j for j in range(len(masks)) if j != i]].any(0) if len(masks) > 1 else torch.zeros(size, dtype=torch.bool) for i in matched]
            ),
            probabilities=probabilities,
            explain=explain,
            encode=encode,
            objects=masks,
            referred=[[i] for i in matched],
        )
    ]


def _segment(model, processor, sample, layers=None) -> list[Case]:
    from ..explain import prepare_image
    from ..targets import segmentation_logits
    from ..tasks.segmentation import explain_segmentation

    image = sample.load_image()
    first = explain_segmentation(model, image, processor=processor)
    classes = first.meta.get("classes", [])
    if not classes:
        return []
    inputs, _ = prepare_image(image, processor)
    x = _pixels(inputs)
    size = tuple(x.shape[-2:])
    keep = [k for k, c in enumerate(classes) if (sample.categories == c).any()]
    if not keep:
        return []
    regions = _fit(torch.stack([torch.as_tensor(first.regions[k]).float() for k in keep]), size) > 0.5
    present = regions.flatten(1).any(1).tolist()  # a region too thin to survive at the input's size has nothing to explain
    keep, regions = [k for k, ok in zip(keep, present) if ok], regions[torch.tensor(present, dtype=torch.bool)]
    if not keep:
        return []
    classes = [classes[k] for k in keep]
    masks = torch.stack([_union(sample.masks, [i for i, cat in enumerate(sample.categories) if cat == c], size) for c in classes])
    others = torch.stack([_union(sample.masks, [i for i, cat in enumerate(sample.categories) if cat != c], size) for c in classes])

    def probabilities(xs):
        logits = segmentation_logits(model(pixel_values=xs) if isinstance(inputs, dict) else model(xs))
        probs = F.interpolate(logits, size=size, mode="bilinear", align_corners=False).softmax(1)[:, classes]  # (N, K, H, W)
        area = regions.flatten(1).sum(1).clamp_min(1)
        return (probs * regions[None]).flatten(2).sum(2) / area

    def explain(m, method):
        maps = [
            explain_segmentation(m, image, class_id=c, mask=regions[k].numpy(), processor=processor, method=method, layers=layers).maps[0]
            for k, c in enumerate(classes)
        ]
        return _fit(torch.stack(maps), size)

    referred = [[i for i, cat in enumerate(sample.categories) if cat == c] for c in classes]
    return [
        Case(
            str(sample.image_id),
            [first.items[k] for k in keep],
            x,
            masks,
            others,
            probabilities,
            explain,
            None,
            None,
            _encoder(processor),
            _objects(sample, size),
            referred,
        )
    ]


def _caption(model, processor, sample, layers=None) -> list[Case]:
    from ..explain import prepare_image
    from ..targets import CaptionTokens
    from ..tasks.caption import explain_caption, merge_subwords

    image = sample.load_image()
    first = explain_caption(model, processor, image)
    if first.items != list(sample.tokens):
        return []  # only an exactly generated caption has the dataset's word links
    keep = [k for k, links in enumerate(sample.word_links) if links]
    if not keep:
        return []
    inputs, _ = prepare_image(image, processor)
    x = _pixels(inputs)
    size = tuple(x.shape[-2:])
    token_ids = first.meta["token_ids"]
    start = model.config.decoder_start_token_id
    decoder_input = torch.tensor([[start, *token_ids[:-1]]])
    target = CaptionTokens(list(range(len(token_ids))), token_ids, merge_subwords(first.tokens))
    n = len(sample.masks)

    def probabilities(xs):
        out = model(pixel_values=xs, decoder_input_ids=decoder_input.expand(xs.shape[0], -1))
        return target(out).exp()[:, keep]

    def explain(m, method):
        return _fit(explain_caption(m, processor, image, caption=first.meta["caption"], method=method, layers=layers).maps[keep], size)

    masks = torch.stack([_union(sample.masks, sample.word_links[k], size) for k in keep])
    others = torch.stack([_union(sample.masks, [i for i in range(n) if i not in sample.word_links[k]], size) for k in keep])
    referred = [list(sample.word_links[k]) for k in keep]
    return [
        Case(
            str(sample.image_id),
            [first.items[k] for k in keep],
            x,
            masks,
            others,
            probabilities,
            explain,
            None,
            None,
            _encoder(processor),
            _objects(sample, size),
            referred,
        )
    ]


def _vqa(model, processor, sample, layers=None) -> list[Case]:
    from ..tasks.vqa import explain_vqa

    image = sample.load_image()
    cases = []
    n = len(sample.masks)
    for qi, qa in enumerate(sample.qa):
        if not qa.object_ids:
            continue  # e.g. "is there a ...? no": nothing in the image to point at
        first = explain_vqa(model, processor, image, qa.question)
        answer = first.items[0]
        label2id = {v: int(k) for k, v in model.config.id2label.items()}
        a = label2id[answer]
        enc = dict(processor(images=image, text=qa.question, return_tensors="pt"))
        x = enc.pop("pixel_values")[0]
        enc.pop("pixel_mask", None)
        size = tuple(x.shape[-2:])
        other = next((t[0] for t in first.meta["top"] if t[0] != answer), None)  # the runner-up answer

        def probabilities(xs, enc=enc, a=a):
            batch = {k: v.expand(xs.shape[0], *v.shape[1:]) for k, v in enc.items()}
            mask = torch.ones(xs.shape[0], *xs.shape[-2:], dtype=torch.long)
            return model(**batch, pixel_values=xs, pixel_mask=mask).logits.sigmoid()[:, [a]]

        def explain(m, method, q=qa.question, ans=answer, size=size):
            return _fit(explain_vqa(m, processor, image, q, answer=ans, method=method, layers=layers).maps, size)

        masks = _union(sample.masks, qa.object_ids, size)[None]
        others = _union(sample.masks, [i for i in range(n) if i not in qa.object_ids], size)[None]
        cases.append(
            Case(
                f"{sample.image_id}/q{qi}",
                [f"{qa.question} -> {answer}"],
                x,
                masks,
                others,
                probabilities,
                explain,
                explain_other=(lambda m, method, explain=explain, other=other: explain(m, method, ans=other)) if other else None,
                encode=lambda photo, q=qa.question: processor(images=photo, text=q, return_tensors="pt")["pixel_values"][0],
                objects=_objects(sample, size),
                referred=[list(qa.object_ids)],
            )
        )
    return cases


def _action(model, processor, state, layers=None) -> list[Case]:
    from ..engine.guided import GuidedBackprop
    from ..tasks.action import explain_action

    obs = torch.from_numpy(state.obs)
    with torch.no_grad():
        q = model(obs[None])[0]
    order = q.argsort(descending=True).tolist()
    a, runner_up = order[0], order[1]
    size = tuple(obs.shape[-2:])

    def explain(m, method, action=a):
        return torch.tensor(explain_action(m, obs, action=action, method=method, layers=layers).meta["cell_maps"]).float()

    mask = torch.from_numpy(state.decisive_mask())
    walls = torch.from_numpy(state.obs[2] > 0) & ~mask
    return [
        Case(
            str(state.seed),
            [f"action {a}"],
            obs,
            mask[None],
            walls[None],
            probabilities=lambda xs: model(xs).softmax(-1)[:, [a]],
            explain=explain,
            explain_other=lambda m, method: explain(m, method, runner_up),
            guided=lambda m: _fit(GuidedBackprop(m)(obs[None], [a]).maps[0], size),
        )
    ]


_PREPARE = {"classify": _classify, "detect": _detect, "segment": _segment, "caption": _caption, "vqa": _vqa, "action": _action}


def prepare(task: str, model: Any, processor: Any, sample: Any, layers: Any = None) -> list[Case]:
    """The cases of one sample (a :class:`mmcam.data.CocoImage`, or a
    :class:`mmcam.data.GridState` for ``action``); empty when nothing has ground truth.
    ``layers``: passed to every explanation (``None``: each task's default). Generative VLMs'
    caption / vqa cases are :mod:`mmcam.evaluation.generative`'s (the runner picks them)."""
    if task not in _PREPARE:
        raise InputError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    return _PREPARE[task](model, processor, sample, layers=layers)
