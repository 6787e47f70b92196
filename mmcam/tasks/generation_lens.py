"""Generative VLMs' forward-only maps and contrastive target (:mod:`mmcam.tasks.generation`).

``logit-lens``: the language model's head on the image tokens' hidden states; ``tam``: Token
Activation Maps (Li et al., ICCV 2025, https://arxiv.org/abs/2506.23270), the logit lens with the
earlier words' interference removed; :class:`ContrastiveTokens`: a word against its strongest
competitor at the same step.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..adapters.vlm import ImageTokens
from ..engine.combine import normalize, upsample
from ..targets import CaptionTokens, logits_of

__all__ = ["LOGIT_LENS", "TAM", "FORWARD_ONLY", "ContrastiveTokens", "remove_interference", "token_activation_maps"]

LOGIT_LENS = "logit-lens"
#: Token Activation Maps (Li et al., ICCV 2025): the logit lens with earlier words' interference removed
TAM = "tam"
FORWARD_ONLY = (LOGIT_LENS, TAM)


class ContrastiveTokens(CaptionTokens):
    """``(B, W)``: per word, ``Σ_{t ∈ w} [log p(token_t) − max_{v ≠ token_t} log p(v)]`` at the
    same teacher-forced step: how far the word beats its strongest competitor (``v`` ranges over
    the tokens generation allows: ``suppress`` ids excluded). As the softmax normaliser cancels,
    this is ``logit(token_t) − max_{v ≠ token_t} logit(v)``; its gradient flows to both."""

    def __init__(self, positions, token_ids, groups=None, suppress=()):
        super().__init__(positions, token_ids, groups)
        self.suppress = [int(t) for t in suppress]

    def _rivals(self, logits: torch.Tensor) -> torch.Tensor:
        """``(B, T, V)`` logits at the target positions with the tokens themselves (and the
        suppressed ids) at -inf."""
        picked = logits[:, self.positions].clone()
        picked[:, torch.arange(len(self.positions)), self.token_ids] = -float("inf")
        if self.suppress:
            picked[..., self.suppress] = -float("inf")
        return picked

    def __call__(self, output: Any) -> torch.Tensor:
        logits = logits_of(output)
        own = super().__call__(logits)  # validates shapes; Σ log p per word
        best = self._rivals(logits.log_softmax(-1)).max(-1).values  # (B, T)
        return own - torch.stack([best[:, g].sum(1) for g in self.groups], 1)

    def competitors(self, logits: torch.Tensor) -> list[int]:
        """The strongest competitor token at each target position, ``logits`` ``(L, V)``."""
        return [int(t) for t in self._rivals(logits[None]).argmax(-1)[0]]


def remove_interference(target_map: torch.Tensor, context_maps: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """TAM's estimated causal inference (Li et al., ICCV 2025, https://arxiv.org/abs/2506.23270 §3.2)
    for one token: ``relu(A − s·I)`` with the interference map ``I = Σ_j ŵ_j A_j`` (the
    context tokens' maps ``context_maps`` ``(M, N)`` weighted by ``weights`` ``(M,)``, ≥ 0,
    normalised to sum 1) and ``s = ⟨A, I⟩ / ⟨I, I⟩``, the least-squares scale of ``I`` onto the
    token's map ``A`` (``target_map`` ``(N,)``); ``A`` itself when there is no interference."""
    total = weights.sum()
    if context_maps.shape[0] == 0 or float(total) <= 0:
        return target_map.clamp(min=0)
    interference = (weights / total) @ context_maps
    norm = (interference * interference).sum()
    scale = (target_map * interference).sum() / norm if float(norm) > 0 else target_map.new_zeros(())
    return (target_map - scale * interference).clamp(min=0)


def token_activation_maps(logits: torch.Tensor, image_positions: list[int], input_ids: list[int], target: CaptionTokens, image_token_id: int) -> torch.Tensor:
    """``(T, N)``: each target token's TAM over the ``N`` image positions, from one forward's
    ``logits`` ``(L, V)``. Every token is read at the position that predicts it: token ``x`` at
    input position ``q`` has the map ``A = relu(logits[image, x])``; the context of the target
    token at logit position ``P`` is every text token at an input position ``1 ≤ q ≤ P`` (the
    prompt's words and the answer's earlier words) whose id differs from the target's, weighted
    by its activation for the target, ``relu(logits[q − 1, target])``
    (:func:`remove_interference`)."""
    image = logits[image_positions].clamp(min=0)  # (N, V)
    ctx = [q for q in range(1, len(input_ids)) if input_ids[q] != image_token_id]
    ctx_ids = [input_ids[q] for q in ctx]
    ctx_maps = image[:, ctx_ids].T  # (M, N)
    out = []
    for position, token in zip(target.positions, target.token_ids):
        keep = [j for j, q in enumerate(ctx) if q <= position and ctx_ids[j] != token]
        weights = logits[[ctx[j] - 1 for j in keep], token].clamp(min=0)
        out.append(remove_interference(image[:, token], ctx_maps[keep], weights))
    return torch.stack(out)


def _forward_only(model: nn.Module, forced: dict[str, torch.Tensor], tokens: ImageTokens, target: CaptionTokens, method: str):
    """One no-grad forward. ``logit-lens``: word k's map is Σ_{t ∈ k} logit(token_t) at each
    grid token's position (for a contrastive target, minus its competitor's logit); ``tam``: Σ_{t
    ∈ k} of the tokens' :func:`token_activation_maps`. Min-max scaled and upsampled to the input;
    scores are the target's."""
    with torch.no_grad():
        logits = model(**forced).logits[0].float()  # (L, V)
    columns = logits[tokens.positions]  # (N, V)
    if method == TAM:
        ids = forced["input_ids"][0].tolist()
        per_token = token_activation_maps(logits, tokens.positions, ids, target, ids[tokens.positions[0]]).T
    else:
        per_token = columns[:, target.token_ids]  # (N, T)
        if isinstance(target, ContrastiveTokens):
            per_token = per_token - columns[:, target.competitors(logits)]
    words = torch.stack([per_token[:, g].sum(1) for g in target.groups])  # (K, h*w)
    maps = normalize(upsample(normalize(tokens.fold(words)[None]), tokens.input_size))[0]
    scores = target(logits[None])[0]
    return maps, scores, logits, ["lm_head"]
