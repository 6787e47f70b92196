"""The engine side of attention methods (``method="gae"``): one forward with the attention
probabilities kept, the K scores' gradients w.r.t. every attention map from one batched
vector-Jacobian product, relevance propagation (:mod:`mmcam.methods.attention`), then the
same upsampling and normalisation as every CAM.

For the call the model's attention implementation is ``"eager"`` (SDPA and flash kernels
return no probabilities) and every floating-point parameter requires grad (the attention
maps of a text-only decoder layer depend on no image pixel, yet their gradients are part
of the relevance); both are put back exactly after, even when the call fails.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..errors import ForwardError, GradientError, MethodError, MMCamError, TargetError
from ..methods.attention import encoder_decoder_relevance, self_relevance
from .combine import normalize, upsample
from .explanation import Explanation, detached
from .gradients import batched_grads, looped_grads
from .guard import forward_message, transient_capture_hooks
from .hooks import frozen_parameters
from .inputs import Inputs
from .shifts import mean_over_shifts
from .targets import TargetSet

__all__ = ["eager_attention", "explain_with_attention", "over_shifts"]

SUPPORTED = (
    "Hugging Face transformers models that return attention probabilities with "
    "output_attentions=True: VisionEncoderDecoderModel and BlipForConditionalGeneration "
    "captioners, ViltForQuestionAnswering, ViT/DeiT/BEiT-style image classifiers"
)


_TITLES = {"self": "self-attention", "encoder": "encoder self-attention", "decoder": "decoder self-attention", "cross": "cross-attention"}


def _configs(model: nn.Module) -> list[Any]:
    """Every transformers config the model and its submodels read (sub-configs included)."""
    seen: dict[int, Any] = {}
    stack = [getattr(m, "config", None) for m in model.modules()]
    while stack:
        config = stack.pop()
        if config is None or id(config) in seen or not hasattr(config, "_attn_implementation_internal"):
            continue
        seen[id(config)] = config
        stack.extend(getattr(config, key, None) for key in getattr(config, "sub_configs", {}) or {})
    return list(seen.values())


@contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """For the call: ``model.set_attn_implementation("eager")``; every config's attention
    implementation is put back exactly after."""
    setter = getattr(model, "set_attn_implementation", None)
    if setter is None:
        raise MethodError(
            f"method 'gae' reads attention probabilities, and {type(model).__name__} is not a Hugging Face "
            f"transformers model that can return them; it supports {SUPPORTED}. Use a CAM method "
            "(gradcam, layercam, scorecam, ...) for other models"
        )
    saved = [(config, config._attn_implementation_internal) for config in _configs(model)]
    quiet = logging.getLogger("transformers.modeling_utils")  # sub-models that compute their own
    level = quiet.level  # probabilities (BLIP) log "cannot set" on every call: not news here
    try:
        quiet.setLevel(logging.ERROR)
        try:
            setter("eager")
        finally:
            quiet.setLevel(level)
        yield
    finally:
        for config, value in saved:
            config._attn_implementation_internal = value


def _field(output: Any, name: str) -> Any:
    return output.get(name) if isinstance(output, Mapping) else getattr(output, name, None)


def _streams(model: nn.Module, output: Any, parts: dict[str, Any]) -> tuple[str, dict[str, list[torch.Tensor]]]:
    """The attention maps by role. ``parts``: the outputs of the model's sub-models (a
    model such as BLIP returns only its vision tower's attentions and drops the text
    decoder's; the decoder's own output still has them)."""
    cross = _field(output, "cross_attentions")
    if cross:
        found = {"encoder": _field(output, "encoder_attentions"), "decoder": _field(output, "decoder_attentions"), "cross": cross}
    else:
        decoder = next((out for name, out in parts.items() if _field(out, "cross_attentions")), None)
        vision = next((out for name, out in parts.items() if name.startswith("vision:") and _field(out, "attentions")), None)
        found = {}
        if decoder is not None and vision is not None:
            found = {"encoder": _field(vision, "attentions"), "decoder": _field(decoder, "attentions"), "cross": _field(decoder, "cross_attentions")}
    if found:
        missing = [k for k, v in found.items() if not v]
        if missing:
            raise MethodError(f"{type(model).__name__} returned cross-attentions but no {missing} attentions; method 'gae' needs all three")
        return "encoder-decoder", {k: list(v) for k, v in found.items()}
    attentions = _field(output, "attentions")
    if attentions and all(isinstance(a, torch.Tensor) for a in attentions):
        shapes = {tuple(a.shape[-2:]) for a in attentions}
        if len(shapes) != 1 or any(q != n for q, n in shapes):
            raise MethodError(
                f"{type(model).__name__}'s attention maps have shapes {sorted(shapes)}: not one full self-attention "
                "over a fixed token sequence (e.g. reduced keys or windows), which gae's rollout needs. Use a CAM method"
            )
        return "self", {"self": list(attentions)}
    raise MethodError(
        f"{type(model).__name__} returned no attention probabilities with output_attentions=True "
        f"(output: {type(output).__name__}); method 'gae' supports {SUPPORTED}. Use a CAM method for this model"
    )


def _run(model: nn.Module, batch: Inputs) -> tuple[Any, dict[str, Any]]:
    """The output of ``model(..., output_attentions=True)`` and, caught by hooks that live for
    this call, the outputs of its sub-models (keyed ``"vision:NAME"`` for an image tower)."""
    parts: dict[str, Any] = {}

    def keep(key: str):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            parts[key] = output

        return hook

    handles = [
        module.register_forward_hook(keep(("vision:" if getattr(module, "main_input_name", None) == "pixel_values" else "") + name))
        for name, module in model.named_modules()
        if name and hasattr(module, "config") and hasattr(module, "main_input_name")  # transformers sub-models
    ]
    try:
        if isinstance(batch.value, dict):
            return model(**batch.value, output_attentions=True), parts
        return model(batch.value, output_attentions=True), parts
    except MMCamError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError, KeyError, AttributeError) as error:
        raise ForwardError(forward_message(model, batch, error)) from error
    finally:
        for handle in handles:
            handle.remove()


def _gradients(scores: torch.Tensor, tensors: list[torch.Tensor], grad_mode: str) -> list[torch.Tensor]:
    """``(K, *t.shape)`` gradients of every score column w.r.t. each tensor (zeros where unused)."""
    if not scores.requires_grad:
        raise GradientError("the explained scores do not depend on the model's attention maps; pass a target computed from the model output")
    usable = [t for t in tensors if t.requires_grad]
    if not usable:
        raise GradientError("no attention map of the model is on the autograd graph; is it running under torch.no_grad()?")
    if grad_mode != "loop" and scores.shape[1] > 1:
        try:
            grads = batched_grads(scores, usable, retain=grad_mode == "auto")
        except RuntimeError as error:  # e.g. an op without a batching rule: the loop always works
            if grad_mode == "batched":
                raise GradientError(f"batched gradients failed for this model ({error}); use grad_mode='loop'") from error
            grads = looped_grads(scores, usable)
    else:
        grads = looped_grads(scores, usable)
    by_id = {id(t): g for t, g in zip(usable, grads)}
    k = scores.shape[1]
    out = [by_id.get(id(t)) for t in tensors]
    out = [g if g is not None else t.new_zeros((k, *t.shape)) for t, g in zip(tensors, out)]
    if not any(bool(torch.count_nonzero(g)) for g in out):
        raise GradientError("the gradients of the targets w.r.t. every attention map are all zero; the target may be constant or saturated")
    return out


def _rows(targets: TargetSet, image: int, columns: int, default: list[int], stream: str) -> list[list[int]]:
    """The query rows of each of ``image``'s ``columns`` score columns: on an encoder-decoder,
    each caption word's token positions; on one token stream, the method's default rows (the
    rows the head reads) for every column."""
    items = targets.items(image)
    if stream == "self":
        named = next((t for t in items if getattr(t, "positions", None) is not None), None)
        if named is not None:
            raise TargetError(
                f"target {named!r} explains text positions, but this model has one token stream "
                "(no cross-attention); method 'gae' explains token positions of encoder-decoder captioners"
            )
        return [list(default)] * columns
    rows: list[list[int]] = []
    for target in items:
        positions = getattr(target, "positions", None)
        if positions is None:
            raise TargetError(
                f"method 'gae' on an encoder-decoder model needs targets that name their decoder positions (mmcam.targets.CaptionTokens); got {target!r}"
            )
        groups = getattr(target, "groups", None) or [[i] for i in range(len(positions))]
        rows.extend([positions[i] for i in group] for group in groups)
    return rows


def explain_with_attention(
    model: nn.Module, method: Any, reshape: Any, grad_mode: str, batch: Inputs, targets: TargetSet, size: tuple[int, int] | None
) -> Explanation:
    """What ``CAM(model, method=...)(inputs, targets)`` returns for an attention method
    (``method.attention``); ``reshape`` lays token relevance out on the grid. A method with
    ``phases > 1`` (``gae-shift``) averages its maps over sub-patch shifts of the image
    (:func:`over_shifts`)."""
    return over_shifts(lambda b, t: _attention_pass(model, method, reshape, grad_mode, b, t, size), method, batch, targets, size)


def over_shifts(
    one_pass: Callable[[Inputs, TargetSet], Explanation], method: Any, batch: Inputs, targets: TargetSet, size: tuple[int, int] | None
) -> Explanation:
    """``one_pass(batch, targets)`` (one explanation of a token method), averaged over
    ``method.phases`` sub-patch shifts per axis of the image (:mod:`mmcam.engine.shifts`) when
    ``phases > 1``: every pass explains the targets of the unshifted pass (a top class is
    pinned to its index), each map is shifted back, the mean min-max scaled; scores, output and
    ``raw`` are the unshifted pass's (:func:`mmcam.engine.shifts.mean_over_shifts`, which CNN
    CAMs' ``-shift`` methods use too). Shared by ``gae-shift`` and ``attnlrp-shift``."""
    exp = one_pass(batch, targets)
    phases = int(getattr(method, "phases", 1))
    if phases <= 1 or exp.maps.shape[1] == 0:
        return exp
    spatial = batch.spatial_size
    if spatial is None or size is None:
        raise MethodError(
            f"method {method.name!r} shifts the image tensor (B, C, H, W); these inputs have none. Use its one-pass method ({method.name.removesuffix('-shift')!r})"
        )
    return mean_over_shifts(lambda moved, pinned: one_pass(moved, TargetSet(pinned, batch.batch_size)), batch, exp, phases, size, exp.method)


def _attention_pass(
    model: nn.Module, method: Any, reshape: Any, grad_mode: str, batch: Inputs, targets: TargetSet, size: tuple[int, int] | None
) -> Explanation:
    """One forward and one batched backward of :func:`explain_with_attention`."""
    with eager_attention(model), transient_capture_hooks(model), frozen_parameters(model, requires_grad=True), torch.enable_grad():
        output, parts = _run(model, batch)
        stream, maps = _streams(model, output, parts)
        if not targets.resolved:
            targets.resolve_default(output)
        scores = targets.scores(output)
        k, b = scores.shape[1], scores.shape[0]
        names = [f"{_TITLES[name]} x{len(v)}" for name, v in maps.items()]
        if k == 0:
            zeros = scores.new_zeros((b, 0, *(size or (1, 1))))
            return Explanation(zeros, zeros, scores.detach(), method.name, names, [[] for _ in range(b)], detached(output))
        tensors = [t for v in maps.values() for t in v]
        if any(t.shape[0] != b for t in tensors):
            raise MethodError(
                f"{type(model).__name__}'s attention maps come in {sorted({t.shape[0] for t in tensors})} rows for a batch of "
                f"{b}: windowed attention (e.g. Swin), not one self-attention over the image's tokens, which gae's rollout "
                "needs. Use a CAM method"
            )
        grads = _gradients(scores, tensors, grad_mode)
    with torch.no_grad():
        attns = [t.detach() for t in tensors]
        if stream == "self":
            relevance = self_relevance(attns, grads)  # (K, B, N, N)
        else:
            n_enc, n_dec = len(maps["encoder"]), len(maps["decoder"])
            relevance = encoder_decoder_relevance(
                attns[:n_enc], grads[:n_enc], attns[n_enc : n_enc + n_dec], grads[n_enc : n_enc + n_dec], attns[n_enc + n_dec :], grads[n_enc + n_dec :]
            )  # (K, B, T, N)
        vectors = relevance.new_zeros(k, b, relevance.shape[-1])
        for image in range(b):
            rows = _rows(targets, image, k, method.rows_for(model, relevance.shape[-1]), stream)
            for column, positions in enumerate(rows):
                if max(positions) >= relevance.shape[2] or min(positions) < -relevance.shape[2]:
                    raise TargetError(f"query row {max(positions)} is out of range for {relevance.shape[2]} tokens")
                vectors[column, image] = relevance[column, image, positions].sum(0)
    return token_explanation(vectors, reshape, size, scores.detach(), method.name, names, targets, output)


def token_explanation(
    relevance: torch.Tensor, reshape: Any, size: "tuple[int, int] | None", scores: torch.Tensor, method: str, layers: list[str], targets: Any, output: Any
) -> Explanation:
    """The :class:`Explanation` of per-token relevance ``(K, B, N)``: each item's tokens on the
    grid (``reshape``), ReLU, upsampled to ``size`` and min-max scaled; shared by the
    attention-relevance methods (``gae``, ``gae-detr``, ``legrad``, ``attnlrp``)."""
    k, b = relevance.shape[:2]
    with torch.no_grad():
        tokens = relevance.flatten(0, 1)[..., None]  # (K * B, N, 1), k-major like the CAM gradients
        grid = reshape.for_tensor(tokens, size)(tokens, size)  # (K * B, 1, h, w)
        raw = torch.relu(grid[:, 0].unflatten(0, (k, b)).transpose(0, 1))
        maps = normalize(upsample(raw, size) if size is not None else raw)
    return Explanation(
        maps=maps,
        raw=raw,
        scores=scores,
        method=method,
        layers=layers,
        targets=[[repr(t) for t in targets.items(i)] for i in range(b)],
        output=detached(output),
        layer_raw=[raw],
        resolved_targets=[list(targets.items(i)) for i in range(b)],
    )
