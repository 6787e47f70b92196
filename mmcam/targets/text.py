"""Text targets: per-token (or per-word) scores of a teacher-forced caption."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..errors import TargetError
from .base import Target, logits_of

__all__ = ["CaptionTokens"]


class CaptionTokens(Target):
    """``(B, W)``: for each word, the summed log-probability (or logit) of its tokens.

    ``token_ids[t]`` is the token predicted at logit position ``positions[t]`` (teacher
    forcing: position t predicts token t + 1); ``groups`` lists, per word, the indices into
    ``token_ids`` of its sub-word tokens (default: one word per token). A word's score is
    ``Σ_{t ∈ word} log p(token_t | tokens_<t, image)``, so its gradient explains the whole word.

    ``text_length``: for models whose logits hold other positions before the text (GIT puts
    the image tokens first), the number of text positions fed in; ``positions`` then count
    within the last ``text_length`` logits.
    """

    def __init__(
        self,
        positions: Sequence[int],
        token_ids: Sequence[int],
        groups: Sequence[Sequence[int]] | None = None,
        log_prob: bool = True,
        text_length: int | None = None,
    ):
        if len(positions) != len(token_ids):
            raise TargetError(f"CaptionTokens got {len(positions)} positions and {len(token_ids)} token ids; pass one position per token id")
        self.positions = [int(p) for p in positions]
        self.token_ids = [int(t) for t in token_ids]
        self.groups = [list(g) for g in groups] if groups is not None else [[t] for t in range(len(self.token_ids))]
        self.log_prob = log_prob
        self.text_length = text_length
        if any(i < 0 or i >= len(self.token_ids) for g in self.groups for i in g):
            raise TargetError(f"CaptionTokens groups index tokens 0..{len(self.token_ids) - 1}, got {self.groups}; pass indices in that range")

    def __call__(self, output: Any) -> torch.Tensor:
        logits = logits_of(output)
        if logits.ndim != 3:
            raise TargetError(
                f"caption targets need (B, T, vocab) logits, got {tuple(logits.shape)}; pass the teacher-forced forward's output (or a callable target)"
            )
        offset = 0
        if self.text_length is not None:
            offset = logits.shape[1] - self.text_length
            if offset < 0:
                raise TargetError(f"text_length={self.text_length} exceeds the {logits.shape[1]} logit positions; pass at most {logits.shape[1]}")
        span = logits.shape[1] - offset
        if self.positions and (max(self.positions) >= span or min(self.positions) < 0):
            raise TargetError(
                f"token position {max(self.positions)} is out of range for {span} text positions; positions index the teacher-forced text (0..{span - 1})"
            )
        if self.token_ids and (max(self.token_ids) >= logits.shape[2] or min(self.token_ids) < 0):
            bad = next(t for t in self.token_ids if not 0 <= t < logits.shape[2])
            raise TargetError(f"token id {bad} is out of range for a vocabulary of {logits.shape[2]}; pass ids 0..{logits.shape[2] - 1}")
        positions = [p + offset for p in self.positions]
        scores = logits.log_softmax(-1) if self.log_prob else logits
        per_token = scores[:, positions, self.token_ids]  # (B, T)
        return torch.stack([per_token[:, g].sum(1) for g in self.groups], 1)

    def __repr__(self) -> str:
        return f"CaptionTokens({len(self.groups)} words)"
