"""Where an image matches each of several texts: ``explain_similarity`` (CLIP-style models).

One forward runs the image with every text; the target
:class:`mmcam.targets.ImageTextSimilarity` gives the image's similarity to each text
(``logits_per_image``), and one batched backward gives one map per text. The default layer
is the vision tower's last block pre-attention norm (``layer_norm1``): CLIP pools the CLS
token, so patch gradients at a block's output are exactly zero. The token grid (CLS prefix,
patch size) comes from the model's config.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..adapters.hf_text import chosen_layers, processor_inputs, run_cam, vision_layers
from ..errors import InputError
from ..explain import TaskExplanation
from ..render.overlay import save_png
from ..targets import ImageTextSimilarity

__all__ = ["SimilarityExplanation", "explain_similarity"]


@dataclass
class SimilarityExplanation(TaskExplanation):
    """``items`` are the texts; ``maps[k]`` where the image matches text k; ``scores[k]`` its
    similarity logit. ``meta``: ``cosine`` and ``probability`` (softmax over the texts)."""

    task: str = "similarity"

    def save(self, out_dir: "str | Path", stem: str = "explanation", scale: int = 1) -> list[Path]:
        """Also writes ``{stem}_strip.png``: one thumbnail per text."""
        paths = super().save(out_dir, stem, scale)
        if self.items:
            from ..render.text import caption_strip

            labels = [t if len(t) <= 14 else t[:13] + "…" for t in self.items]
            paths.append(save_png(caption_strip(self.image, self.maps, labels), Path(out_dir) / f"{stem}_strip.png"))
        return paths


def explain_similarity(
    model: nn.Module,
    processor: Any,
    image: Any,
    texts: "str | Sequence[str]",
    *,
    method: str = "gradcam",
    layers: Any = None,
) -> SimilarityExplanation:
    """One map per text: where ``image`` matches it, for a CLIP-style ``model``
    (HF ``CLIPModel`` or any model whose output has ``logits_per_image``) and its processor.

    The explained score of text j is CLIP's ``logits_per_image[0, j] = exp(τ)·cos(v, t_j)``
    (Radford et al. 2021, https://arxiv.org/abs/2103.00020); all texts come from one forward.

    Example::

        exp = mmcam.explain_similarity(clip, clip_processor, "cat.png", ["a cat", "a dog"])
        exp.items, exp.meta["probability"], exp.maps   # one map per text
    """
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
        raise InputError("pass one or more non-empty texts to compare the image with")
    if not hasattr(model, "get_image_features") or not hasattr(model, "get_text_features"):
        raise InputError(
            f"explain_similarity supports CLIP-style dual encoders (HF CLIPModel); got {type(model).__name__}. "
            "For another model use mmcam.CAM(model, layers=<an image-encoder layer>) with "
            "mmcam.targets.ImageTextSimilarity() or a target callable over its similarity scores"
        )
    prepared = processor_inputs(processor, image, text=texts, padding=True)
    inputs = prepared.inputs
    chosen = chosen_layers(layers, method, lambda: vision_layers(model, inputs["pixel_values"]))  # None for legrad / gae
    exp = run_cam(model, model, chosen, method, inputs, [ImageTextSimilarity()])
    cosine = ImageTextSimilarity(scaled=False).similarities(exp.output)[0]
    probability = exp.scores[0].softmax(-1)
    return SimilarityExplanation(
        image=prepared.photo,
        maps=prepared.frame.maps_to_photo(exp.maps[0]),
        items=texts,
        scores=exp.scores[0],
        method=exp.method,
        layers=exp.layers,
        meta={
            "texts": texts,
            "cosine": [round(float(c), 5) for c in cosine],
            "probability": [round(float(p), 5) for p in probability],
            "best": texts[int(exp.scores[0].argmax())],
            "pipeline": prepared.frame.to_meta(),
        },
    )
