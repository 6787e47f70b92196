"""``method="gae"`` for generative VLMs: Chefer et al.'s attention relevance through the
language model, read at each answer word's rows and the image tokens' columns.

Chefer, Gur & Wolf, *Generic Attention-model Explainability for Interpreting Bi-Modal and
Encoder-Decoder Transformers*, ICCV 2021 — https://arxiv.org/abs/2103.15679 (eqs. 5–6).

The image's tokens and the text share one token stream in the language model, so the
single-stream rule applies to the decoder's self-attention maps ``A_l`` (heads × L × L) of the
teacher-forced forward of prompt + answer, with the gradients ``∇A_l`` of each word's score
(the summed log-probability of its tokens, :class:`mmcam.targets.CaptionTokens`)::

    Ā_l = E_h[(∇A_l ⊙ A_l)⁺]        R = (I + Ā_L) ⋯ (I + Ā_1)   (R ← R + Ā_l R, R⁰ = I)

Word ``w``'s map is ``Σ_{p ∈ w} R[p, image]``: the rows of the positions that predict its
tokens (position ``T - 1 + i`` predicts answer token ``i``), the columns of the image tokens,
placed on the input grid through the family's layout (:meth:`ImageTokens.fold`: tiles,
thumbnails and merged patches where they belong), ReLU, upsampled and min-max scaled. The rows
are carried from the last layer to the first (:func:`mmcam.methods.attention.relevance_rows`),
so no ``L x L`` relevance matrix is formed; all words' gradients come from one batched
vector-Jacobian product.

For the call the attention implementation is ``"eager"`` (fused kernels return no
probabilities; put back exactly after) and no parameter requires grad: the language model's
input embeddings are a leaf of the graph, so nothing before the language model (vision tower,
projector) is traced. Works for a layout whose language model is a standard transformers
decoder that returns ``attentions`` with ``output_attentions=True`` (LLaVA, Qwen2-VL, ...);
not for Q-Former layouts, whose query tokens cover no region of the image.

``method="gae-tower"`` (LLaVA layouts, the default there: :func:`default_method`) carries the
image columns on through the vision tower's own rollout with Chefer's normalisation (eqs. 8–9),
``r ← r · R̄_tower``, and averages the maps over half-patch shifts of the input (:func:`gae_maps`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..adapters.vlm import ImageLayout, ImageTokens, LlavaLayout
from ..engine.attention import _gradients, eager_attention
from ..engine.combine import normalize, upsample
from ..engine.guard import untouched
from ..engine.hooks import frozen_parameters
from ..engine.shifts import shift_grid, shifted, unshifted
from ..errors import ForwardError, MethodError
from ..methods.attention import normalized, relevance_rows, self_relevance
from ..targets import CaptionTokens

__all__ = ["GAE", "GAE_TOWER", "Relevance", "default_method", "lm_relevance", "gae_maps", "shift_phases"]

#: the registered name this task routes to :func:`gae_maps`
GAE = "gae"
#: the same through the language model, then through the vision tower's self-attention too
GAE_TOWER = "gae-tower"
#: ``gae-tower``'s input shifts per axis, offsets ``round(k p / n)`` for ``k < n`` (``p``: pixels per
#: token): 2 is ``0`` and half a patch, 4 passes; 3 is ``0, p/3, 2p/3``, 9 passes
SHIFT_PHASES = 2
#: per task (``GenerationTask.task``) where it differs from :data:`SHIFT_PHASES`: captions take 3
#: (9 passes; zoo:vlm caption words 0.913 against 2's 0.890, answer words 0.951 at 2; docs/vlm.md)
TASK_PHASES = {"caption": 3}


def shift_phases(task: str) -> int:
    """``gae-tower``'s shifts per axis for a ``GenerationTask`` of ``task`` (:data:`TASK_PHASES`,
    else :data:`SHIFT_PHASES`)."""
    return TASK_PHASES.get(task, SHIFT_PHASES)


def default_method(layout: ImageLayout, layers: Any, fallback: str) -> str:
    """The generative VLMs' default method: ``gae-tower`` for a LLaVA layout (one image on the
    token grid, the tower's tokens one to one; on ``zoo:vlm`` it points 0.951 / 0.913 at answer /
    caption words against LayerCAM's 0.685 / 0.675, docs/vlm.md) when no ``layers`` are given;
    else ``fallback`` (LayerCAM), as ``gae-tower`` needs that layout and reads no layer."""
    return GAE_TOWER if type(layout) is LlavaLayout and layers is None else fallback


def _word_rows(target: CaptionTokens) -> list[list[int]]:
    return [[target.positions[i] for i in group] for group in target.groups]


@dataclass
class Relevance:
    """What :func:`lm_relevance` returns: ``rows`` ``(K, L)``, word k's ``Σ_{p ∈ word k} R_k[p]``
    over every position of the sequence; ``scores`` ``(K,)``; ``logits`` ``(L, V)``; ``layers``:
    what was propagated through; ``tower`` ``(K, N, N)``: the vision tower's own ``R`` per word
    (``tower=True``), else ``None``."""

    rows: torch.Tensor
    scores: torch.Tensor
    logits: torch.Tensor
    layers: list[str]
    tower: torch.Tensor | None = None


def _tower_attention_modules(model: nn.Module) -> tuple[list[nn.Module], int]:
    """The vision tower's attention modules (the class its ``_can_record_outputs["attentions"]``
    names) and the index of the probabilities in their output."""
    vision = getattr(model.config, "vision_config", None)
    tower = next((m for n, m in model.named_modules() if n and vision is not None and getattr(m, "config", None) is vision), None)
    spec = None
    for module in tower.modules() if tower is not None else ():
        spec = (getattr(module, "_can_record_outputs", None) or {}).get("attentions")
        if spec is not None:
            break
    if spec is None:
        raise MethodError(f"found no vision tower that records attentions in {type(model).__name__}; use method 'gae' (the language model only)")
    cls, index = (spec, 1) if isinstance(spec, type) else (spec.target_class, spec.index)
    return [m for m in tower.modules() if isinstance(m, cls)], index


def lm_relevance(model: nn.Module, forced: dict[str, torch.Tensor], target: CaptionTokens, grad_mode: str = "auto", tower: bool = False) -> Relevance:
    """The relevance of one teacher-forced forward ``forced`` (a batch of one sequence of ``L``
    tokens), see :class:`Relevance` and the module docstring; with ``tower``, the vision tower's
    self-attention maps too (the pixels, not the language model's embeddings, are the graph's
    leaf then). The model is left as found."""
    getter = getattr(model, "get_input_embeddings", None)
    embeddings = getter() if callable(getter) else None
    if not isinstance(embeddings, nn.Module):
        raise MethodError(
            f"{type(model).__name__} has no input embeddings (get_input_embeddings()); method 'gae' needs a transformers VLM whose "
            "language model returns attentions with output_attentions=True. Use a CAM method (layercam, gradcam, ...) or 'tam'"
        )
    captured: list[torch.Tensor] = []

    def leaf(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        return output.detach().requires_grad_(output.is_floating_point())

    def keep(module: nn.Module, args: Any, output: Any) -> None:
        captured.append(output[index])

    if tower:
        modules, index = _tower_attention_modules(model)
        forced = {**forced, "pixel_values": forced["pixel_values"].detach().clone().requires_grad_()}
    with untouched(model), frozen_parameters(model), eager_attention(model), torch.enable_grad():
        handles = [m.register_forward_hook(keep) for m in modules] if tower else [embeddings.register_forward_hook(leaf)]
        try:
            output = model(**forced, output_attentions=True)
        except (RuntimeError, ValueError, TypeError, IndexError) as error:
            raise ForwardError(f"{type(model).__name__}'s teacher-forced forward with output_attentions=True failed: {error}") from error
        finally:
            for handle in handles:
                handle.remove()
        attentions = list(getattr(output, "attentions", None) or [])
        length = forced["input_ids"].shape[1]
        if not attentions or any(not isinstance(a, torch.Tensor) or a.ndim != 4 or tuple(a.shape[-2:]) != (length, length) for a in attentions):
            raise MethodError(
                f"{type(model).__name__} returned no full self-attention maps over its {length} tokens with output_attentions=True "
                f"(got {[tuple(a.shape) for a in attentions if isinstance(a, torch.Tensor)]}); method 'gae' needs a standard "
                "transformers decoder. Use a CAM method (layercam, gradcam, ...) or 'tam'"
            )
        scores = target(output)  # (1, K)
        grads = _gradients(scores, attentions + captured, grad_mode)
    layers = [f"language-model self-attention x{len(attentions)}"]
    with torch.no_grad():
        rows = relevance_rows([a.detach() for a in attentions], grads[: len(attentions)], _word_rows(target))[:, 0]
        r_tower = None
        if tower:
            if any(a.shape[0] != 1 for a in captured):
                raise MethodError("the vision tower ran on more than one image (tiles): the full rollout needs one tower image; use method 'gae'")
            r_tower = self_relevance([a.detach().float() for a in captured], [g.float() for g in grads[len(attentions) :]])[:, 0]
            layers.append(f"vision-tower self-attention x{len(captured)}")
    return Relevance(rows, scores.detach()[0], output.logits.detach()[0].float(), layers, r_tower)


def _image_relevance(out: Relevance, tokens: ImageTokens) -> torch.Tensor:
    """``(K, N)``: each word's relevance at the image tokens, carried through the tower's
    normalised relevance ``R̄`` (eqs. 8–9) when ``out.tower`` is set."""
    image = out.rows[:, tokens.positions]
    if out.tower is None:
        return image
    extra = out.tower.shape[-1] - image.shape[1]  # tower tokens the language model does not get (LLaVA's dropped CLS)
    if tokens.cells is not None or extra not in (0, 1):
        raise MethodError(
            f"{GAE_TOWER!r} needs image tokens that are the vision tower's own tokens one to one (LLaVA); the tower has "
            f"{out.tower.shape[-1]} tokens for {image.shape[1]} image tokens. Use method {GAE!r}"
        )
    padded = torch.cat([image.new_zeros(image.shape[0], extra), image], 1)
    return (padded[:, None] @ normalized(out.tower))[:, 0, extra:]


def gae_maps(model: nn.Module, forced: dict[str, torch.Tensor], tokens: ImageTokens, target: CaptionTokens, method: str = GAE, phases: int | None = None):
    """What ``GenerationTask`` needs for ``method="gae"`` / ``"gae-tower"``: ``(maps (K, H, W) at
    the input size, scores (K,), logits (L, V), layer names)``. ``gae``: each word's relevance at
    the image tokens' columns, folded on the grid, ReLU, upsampled and min-max scaled.
    ``gae-tower``: the same relevance carried on through the vision tower's self-attention to its
    input patches (``r ← r · R̄_tower``), and — as one patch is the finest cell the rollout can
    tell apart — averaged over the input shifted by half a patch along each axis
    (``(0, 0), (0, p/2), (p/2, 0), (p/2, p/2)`` pixels, edges replicated, each map shifted back):
    the grid at four phases, a map at twice its resolution. ``phases``: shifts per axis (default
    :data:`SHIFT_PHASES`; ``GenerationTask`` passes :func:`shift_phases` of its task: 3 for
    captions, ``0, p/3, 2p/3``, 9 passes). Scores and logits are the unshifted input's."""
    if tokens.cells is not None and not any(tokens.cells):
        raise MethodError("these image tokens (a Q-Former's queries) cover no region of the image: method 'gae' cannot place them on it; use a CAM method")
    tower = method == GAE_TOWER
    pixels = forced.get("pixel_values")
    if tower and (not isinstance(pixels, torch.Tensor) or pixels.ndim != 4 or tuple(pixels.shape[-2:]) != tuple(tokens.input_size)):
        raise MethodError(f"{GAE_TOWER!r} shifts one (1, C, H, W) image on the token grid; this layout's pixel_values are not that. Use method {GAE!r}")
    (h, w), (H, W) = tokens.grid, tokens.input_size
    shifts = shift_grid((H // h, W // w), SHIFT_PHASES if phases is None else phases) if tower else [(0, 0)]
    maps, first = [], None
    for dy, dx in dict.fromkeys(shifts):
        moved = forced if (dy, dx) == (0, 0) else {**forced, "pixel_values": shifted(pixels, dy, dx)}
        out = lm_relevance(model, moved, target, tower=tower)
        first = first or out
        grid = tokens.fold(_image_relevance(out, tokens)).clamp(min=0)  # (K, h, w)
        maps.append(unshifted(normalize(upsample(grid[None], tokens.input_size))[0], dy, dx))
    layers = first.layers + ([f"mean over input shifts {list(dict.fromkeys(shifts))}"] if len(shifts) > 1 else [])
    return normalize(torch.stack(maps).mean(0)), first.scores, first.logits, layers
