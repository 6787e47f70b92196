"""Image–text similarity targets (CLIP-style dual encoders, Radford et al. 2021,
https://arxiv.org/abs/2103.00020)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..errors import TargetError
from .base import Target

__all__ = ["ImageTextSimilarity"]


def _field(output: Any, name: str) -> torch.Tensor | None:
    value = output.get(name) if isinstance(output, dict) else getattr(output, name, None)
    return value if isinstance(value, torch.Tensor) else None


class ImageTextSimilarity(Target):
    """``(B, K)``: how well each image matches texts ``texts`` (indices into the text batch
    run with the image; default: every text).

    ``scaled=True`` explains CLIP's ``logits_per_image[b, j] = exp(τ) · cos(v_b, t_j)``;
    ``scaled=False`` the cosine ``v_b · t_j / (‖v_b‖ ‖t_j‖)`` of ``image_embeds`` and
    ``text_embeds``. The two differ by the constant ``exp(τ)``, so gradient maps are the same
    after normalisation; only the reported scores differ. Compose for contrast:
    ``ImageTextSimilarity([0]) - ImageTextSimilarity([1])`` asks "why text 0 rather than 1".
    """

    def __init__(self, texts: "int | Sequence[int] | None" = None, scaled: bool = True):
        self.texts = None if texts is None else ([int(texts)] if isinstance(texts, int) else [int(t) for t in texts])
        self.scaled = scaled

    def similarities(self, output: Any) -> torch.Tensor:
        """All ``(B_images, N_texts)`` similarities of an output."""
        if self.scaled:
            logits = _field(output, "logits_per_image")
            if logits is not None:
                return logits
        image, text = _field(output, "image_embeds"), _field(output, "text_embeds")
        if image is None or text is None:
            raise TargetError(
                f"a {type(output).__name__} has no logits_per_image nor image_embeds/text_embeds; "
                "ImageTextSimilarity needs a CLIP-style output (run the model with both pixel_values "
                "and input_ids), or pass a target callable that picks the similarity"
            )
        image = torch.nn.functional.normalize(image, dim=-1)
        text = torch.nn.functional.normalize(text, dim=-1)
        return image @ text.T

    def __call__(self, output: Any) -> torch.Tensor:
        sims = self.similarities(output)
        if self.texts is None:
            return sims
        n = sims.shape[1]
        bad = [t for t in self.texts if not -n <= t < n]
        if bad:
            raise TargetError(f"text index {bad[0]} is out of range for {n} texts; pass indices 0..{n - 1}")
        return sims[:, self.texts]

    def __repr__(self) -> str:
        which = "all texts" if self.texts is None else f"texts {self.texts}"
        return f"ImageTextSimilarity({which}{'' if self.scaled else ', cosine'})"
