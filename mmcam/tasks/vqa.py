"""Ground a VQA answer in the image: ``explain_vqa``.

Supported: HF ``ViltForQuestionAnswering`` (answer classifier). ViLT shuffles its image
patches on every call (``visual_embed`` draws them with ``torch.multinomial``, even in eval
and even when it keeps all of them). mmcam runs ``visual_embed`` once, passes the result as
``image_embeds`` and keeps the drawn ``patch_index``, so the map is scattered back onto the
right patches and repeated calls give the same map.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..adapters.layers import default_layers
from ..engine import CAM
from ..errors import InputError, TargetError
from ..explain import TaskExplanation, prepare_image
from ..io import load_image
from ..reshape import ScatterTokens
from ..targets import ClassLogit, TopClasses, logits_of

__all__ = ["VQAExplanation", "explain_vqa"]


@dataclass
class VQAExplanation(TaskExplanation):
    """``items`` = [answer]; ``meta``: ``question``, ``answer``, ``probability``, ``top``."""

    task: str = "vqa"


def explain_vqa(
    model: nn.Module,
    processor: Any,
    image: Any,
    question: str,
    answer: str | None = None,
    *,
    method: str = "gradcam",
    layers: Any = None,
) -> VQAExplanation:
    """The map of the model's answer (or of ``answer``) to ``question`` about ``image``."""
    if type(model).__name__ != "ViltForQuestionAnswering":
        raise InputError(
            f"explain_vqa supports HF ViltForQuestionAnswering; got {type(model).__name__}. For other models "
            "use mmcam.CAM with layers= and a target over the answer logits"
        )
    if not question or not question.strip():
        raise InputError("the question is empty; pass a question about the image")
    pil = load_image(image)
    inputs = dict(processor(images=pil, text=question, return_tensors="pt"))
    _, shown = prepare_image(pil, None, size=tuple(inputs["pixel_values"].shape[-2:]))
    pixel_values = inputs.pop("pixel_values")
    pixel_mask = inputs.pop("pixel_mask", torch.ones(pixel_values.shape[0], *pixel_values.shape[-2:], dtype=torch.long))
    embeddings = model.vilt.embeddings
    with torch.no_grad():
        image_embeds, image_masks, (patch_index, (h, w)) = embeddings.visual_embed(
            pixel_values, pixel_mask, max_image_length=model.config.max_image_length
        )
    inputs.update(image_embeds=image_embeds, pixel_mask=image_masks)
    id2label = {int(k): v for k, v in model.config.id2label.items()}
    if answer is None:
        target: Any = TopClasses(1)
    else:
        label2id = {v: k for k, v in id2label.items()}
        if answer not in label2id:
            raise TargetError(f"{answer!r} is not one of the model's answers; e.g. {sorted(label2id)[:12]}")
        target = ClassLogit(label2id[answer])
    text_len = inputs["input_ids"].shape[1]
    reshape = ScatterTokens(start=text_len + 1, index=patch_index[..., 0] * w + patch_index[..., 1], grid=(int(h), int(w)))
    chosen = layers if layers is not None else default_layers(model, inputs)
    exp = CAM(model, chosen, method=method, reshape=reshape)(inputs, [target], input_size=tuple(pixel_values.shape[-2:]))
    probs = logits_of(exp.output)[0].sigmoid()
    index = int(probs.argmax()) if answer is None else target.index
    top = probs.topk(min(3, probs.numel()))
    return VQAExplanation(
        image=shown,
        maps=exp.maps[0],
        items=[id2label.get(index, str(index))],
        scores=exp.scores[0],
        method=exp.method,
        layers=exp.layers,
        meta={
            "question": question,
            "answer": id2label.get(index, str(index)),
            "probability": round(float(probs[index]), 5),
            "top": [[id2label.get(int(i), str(int(i))), round(float(p), 5)] for p, i in zip(top.values, top.indices)],
        },
    )
