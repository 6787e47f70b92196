"""The engine: one forward, every target, any layer, any method.

``CAM(model, layers, method)(inputs, targets)`` hooks the layers for one call, runs one
forward with the prefix cut, evaluates the targets to ``(B, K)`` scores, takes the
gradients of all K scores with one batched vector-Jacobian product (or a retained-graph
loop, whichever is faster for the model), lets the method weight the activations, and
returns ReLU'd, fused, upsampled and normalised maps.
"""

from __future__ import annotations

import time
import weakref
from typing import Any

import torch
from torch import nn

from .. import methods as methods_mod
from .. import reshape as reshape_mod
from ..errors import GradientError, InputError, LayerError, MethodError
from ..methods.base import Context
from .attention import explain_with_attention
from .combine import EDGES, fuse, normalize, upsample
from .explanation import Explanation, detached
from .gradients import batched_grads, looped_grads
from .guard import model_lock, prepare_inputs, run_model, transient_capture_hooks, warn_zero_maps
from .hooks import Capture, frozen_parameters, resolve_layers
from .inputs import Inputs
from .shifts import mean_over_shifts
from .targets import TargetSet

__all__ = ["CAM", "Explanation"]

GRAD_MODES = ("auto", "batched", "loop")

# model -> the gradient strategy "auto" measured faster on it, shared by every CAM on that model
# (the one-call task functions build a new CAM per call and would otherwise measure each time);
# a task's thin per-call view of a model (``_wrapped``: DecoderLogits, GenerateThenForce) counts as the model
_MEASURED: "weakref.WeakKeyDictionary[nn.Module, str]" = weakref.WeakKeyDictionary()


def _owner(model: nn.Module) -> nn.Module:
    return getattr(model, "_wrapped", model)


class CAM:
    """Class activation maps of ``model`` at ``layers`` with ``method``.

    Args:
        model: any ``nn.Module``; left exactly as found (parameters, ``requires_grad``,
            ``.grad``, ``training``, hooks), even when a call fails.
        layers: a module, a dotted name (``"layer4"``), a list of them (maps are summed at
            the finest grid, in the score's units),
            or ``None``/``"auto"`` to pick the last spatial layer by structure (for token
            models, the last block's pre-attention norm). Attention methods (``"gae"``) read
            every attention layer and take ``None``.
        method: a registered name (``mmcam.methods.available()``) or a ``Method``.
        reshape: ``"auto"``, ``"nchw"``, ``"nhwc"``, ``"tokens"``, a
            :class:`mmcam.reshape.Reshape` or a callable ``tensor -> (B, C, h, w)``.
        grad_mode: ``"batched"`` (one ``autograd.grad(is_grads_batched=True)``), ``"loop"``
            (one retained-graph ``autograd.grad`` per target) or ``"auto"`` (time both on
            the first multi-target call and keep the faster for this model).
        batch_size: rows per extra forward for perturbation methods (scorecam, ablationcam).
        progress: show progress bars on long work (``None``: only on a terminal).
        edge: how maps are resampled past their outermost cell centres when fused and
            upsampled (:func:`mmcam.engine.combine.upsample`): ``"replicate"`` (the outer half
            cell flat, ``F.interpolate``'s bilinear) or ``"reflect"`` (mirrored about the
            edge cell's centre; the YOLO tasks' choice, see ``docs/detectors.md``).

    Example::

        cam = mmcam.CAM(resnet, "layer4", method="gradcam")
        exp = cam(images, targets=[3, 7])          # (B, 2, H, W) maps from one forward
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Any = None,
        method: "str | methods_mod.Method" = "gradcam",
        reshape: Any = "auto",
        *,
        grad_mode: str = "auto",
        batch_size: int = 32,
        progress: bool | None = None,
        edge: str = "replicate",
    ):
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}; pass the model itself")
        if grad_mode not in GRAD_MODES:
            raise InputError(f"grad_mode must be one of {GRAD_MODES}, got {grad_mode!r}; pass one of those")
        self.model = model
        self.method = methods_mod.get(method)
        self.reshape = reshape_mod.resolve(reshape, model)
        self.layers = None if layers is None or layers == "auto" else resolve_layers(model, layers)
        if getattr(self.method, "attention", False) and self.layers is not None:
            raise InputError(
                f"method {self.method.name!r} builds its maps from every attention layer of the model; "
                "leave layers=None (or pick a CAM method to explain one layer)"
            )
        self.grad_mode = grad_mode
        self.batch_size = batch_size
        self.progress = progress
        if edge not in EDGES:
            raise InputError(f"edge must be one of {EDGES}, got {edge!r}; pass one of those")
        self.edge = edge
        self._chosen_mode: str | None = None

    def __call__(self, inputs: Any, targets: Any = None, *, input_size: tuple[int, int] | None = None) -> Explanation:
        if torch.is_inference_mode_enabled():
            raise InputError("mmcam needs autograd: call it outside torch.inference_mode() (use torch.no_grad() around your own code instead)")
        # one call at a time per model: hooks, frozen parameters and restored buffers are the
        # model's, so concurrent calls would interleave them (see engine/guard.py)
        with model_lock(self.model):
            batch = prepare_inputs(Inputs(inputs), self.model)
            size = tuple(input_size) if input_size is not None else batch.spatial_size
            if getattr(self.method, "attention", False):
                run = getattr(self.method, "run_attention", None)  # a method with its own rules (gae-detr)
                if run is not None:
                    return run(self.model, self.reshape, self.grad_mode, batch, TargetSet(targets, batch.batch_size), size)
                return explain_with_attention(self.model, self.method, self.reshape, self.grad_mode, batch, TargetSet(targets, batch.batch_size), size)
            exp = self._explain(batch, TargetSet(targets, batch.batch_size), size)
            if int(getattr(self.method, "phases", 1)) > 1:  # gradcam-shift, layercam-shift
                pass_ = lambda moved, pinned: self._explain(moved, TargetSet(pinned, batch.batch_size), size)  # noqa: E731
                patch = getattr(self.method, "patch", None)
                if isinstance(patch, str):
                    raise MethodError(f"method {self.method.name!r} shifts by its model's {patch} tokens; run it through its task (explain_detections)")
                exp = mean_over_shifts(pass_, batch, exp, self.method.phases, size, self.method.name, patch)
        warn_zero_maps(exp.raw, exp.targets, exp.layers)
        return exp

    def _explain(self, batch: Inputs, targets_set: TargetSet, size: tuple[int, int] | None) -> Explanation:
        with transient_capture_hooks(self.model), frozen_parameters(self.model):
            if self.layers is None:
                # the probing forward runs inside the same restore: a train-mode model's
                # BatchNorm statistics come back exactly
                from .layers import default_layers

                self.layers = resolve_layers(self.model, default_layers(self.model, batch))
            with Capture(self.layers) as capture, torch.enable_grad():
                output = run_model(self.model, batch)
            leaves = capture.check(self.model)
            with torch.enable_grad():
                if not targets_set.resolved:
                    targets_set.resolve_default(output)
                scores = targets_set.scores(output)
                if scores.shape[1] == 0:  # e.g. a detector that kept no box: nothing to explain
                    return self._empty(batch, targets_set, scores, output, leaves, size)
                grads = self._gradients(scores, leaves) if self.method.needs_grads else [None] * len(leaves)
            per_layer = [self._layer_map(index, leaf, grad, scores.detach(), batch, targets_set, size) for index, (leaf, grad) in enumerate(zip(leaves, grads))]
        finest = max((m.shape[-2:] for m in per_layer), key=lambda s: s[0] * s[1])
        raw = per_layer[0] if len(per_layer) == 1 else fuse(per_layer, tuple(finest), self.edge)
        maps = normalize(upsample(raw, size, self.edge) if size is not None else raw)
        return Explanation(
            maps=maps,
            raw=raw,
            scores=scores.detach(),
            method=self.method.name,
            layers=[name for name, _ in self.layers],
            targets=[[repr(t) for t in targets_set.items(b)] for b in range(batch.batch_size)],
            output=detached(output),
            layer_raw=per_layer,
            resolved_targets=[list(targets_set.items(b)) for b in range(batch.batch_size)],
        )

    def _empty(self, batch, targets_set, scores, output, leaves, size) -> Explanation:
        grid = self.reshape.for_tensor(leaves[0], size)(leaves[0].detach(), size).shape[-2:]
        b = batch.batch_size
        return Explanation(
            maps=scores.new_zeros((b, 0, *(size or grid))),
            raw=scores.new_zeros((b, 0, *grid)),
            scores=scores.detach(),
            method=self.method.name,
            layers=[name for name, _ in self.layers],
            targets=[[repr(t) for t in targets_set.items(i)] for i in range(b)],
            output=detached(output),
            resolved_targets=[list(targets_set.items(i)) for i in range(b)],
        )

    # -- gradients ---------------------------------------------------------------------

    def _gradients(self, scores: torch.Tensor, leaves: list[torch.Tensor]) -> list[torch.Tensor]:
        """``d scores[:, k] / d leaf`` for every k, as ``(K, *leaf.shape)`` per leaf."""
        if not scores.requires_grad:
            raise GradientError(
                "the explained scores do not depend on the hooked layer(s) "
                f"{[n for n, _ in self.layers]}: the layer is not on the path to the output, or the "
                "model computes its output under torch.no_grad(), detaches it, or converts it "
                "(.item(), .numpy()). Hook a layer the output depends on, or pass a target that "
                "keeps the graph"
            )
        k = scores.shape[1]
        mode = self.grad_mode
        if mode == "auto":
            self._chosen_mode = self._chosen_mode or _MEASURED.get(_owner(self.model))
            mode = self._chosen_mode or ("loop" if k == 1 else None)
        if mode is None:
            return self._measure_modes(scores, leaves)
        if mode == "batched" and k > 1:
            try:
                # keep the graph when a failure falls back to the loop: a batched backward that
                # fails midway has already freed the buffers of the nodes it ran
                return self._check_grads(batched_grads(scores, leaves, retain=self.grad_mode == "auto"), leaves)
            except RuntimeError as error:
                if self.grad_mode == "batched":
                    raise GradientError(f"batched gradients failed for this model ({error}); use grad_mode='loop'") from error
                self._choose("loop")
        return self._check_grads(looped_grads(scores, leaves), leaves)

    def _measure_modes(self, scores: torch.Tensor, leaves: list[torch.Tensor]) -> list[torch.Tensor]:
        """Time both gradient strategies once and keep the faster for this model."""
        start = time.perf_counter()
        try:
            batched = batched_grads(scores, leaves, retain=True)
        except RuntimeError:
            self._choose("loop")
            return self._check_grads(looped_grads(scores, leaves), leaves)
        middle = time.perf_counter()
        looped = looped_grads(scores, leaves)
        end = time.perf_counter()
        self._choose("batched" if middle - start <= end - middle else "loop")
        return self._check_grads(batched if self._chosen_mode == "batched" else looped, leaves)

    def _choose(self, mode: str) -> None:
        """Keep ``mode`` for this instance and for later ``CAM``s on the same model."""
        self._chosen_mode = mode
        _MEASURED[_owner(self.model)] = mode

    def _check_grads(self, grads: list[torch.Tensor | None], leaves: list[torch.Tensor]) -> list[torch.Tensor]:
        for (name, _), grad in zip(self.layers, grads):
            if grad is None:
                raise LayerError(
                    f"layer {name!r} is not on the path from the input to the explained scores; hook a layer the target depends on (one before the output head)"
                )
        if not any(bool(torch.count_nonzero(g)) for g in grads):
            raise GradientError(
                f"the gradients of the targets at {[n for n, _ in self.layers]} are all zero, so every "
                "gradient-based map would be empty. Common causes: a CLS-pooled transformer hooked "
                "at a block output (hook the last block's pre-attention norm, e.g. "
                "'...layer.11.layernorm_before'); a saturated or constant target; a dead ReLU "
                "layer. Try another layer, or a gradient-free method (eigencam, scorecam)"
            )
        return grads

    # -- one layer ---------------------------------------------------------------------

    def _layer_map(self, index, leaf, grad, scores, batch, targets_set, size) -> torch.Tensor:
        name, module = self.layers[index]
        shape = self.reshape.for_tensor(leaf, size)
        acts = _wide(shape(leaf.detach(), size))
        scores = _wide(scores)
        b, c, h, w = acts.shape
        k = scores.shape[1]
        grid_grads = None
        if grad is not None:
            grid_grads = _wide(shape(grad.flatten(0, 1), size).unflatten(0, (k, b)).transpose(0, 1))
            if not bool(torch.count_nonzero(grid_grads)) and bool(torch.count_nonzero(grad)):
                raise GradientError(
                    f"at layer {name!r} only the prefix (CLS/register) tokens receive gradient: the "
                    "model pools the CLS token, so patch tokens at a block's output do not affect "
                    "it. Hook the last block's pre-attention norm instead (layernorm_before, ln_1, "
                    "layer_norm1) or leave layers=None"
                )
            grid_grads = grid_grads.flatten(3)

        def rescore(inputs: Inputs, rows: torch.Tensor, edit=None) -> torch.Tensor:
            with torch.no_grad():
                if edit is None:
                    out = inputs.run(self.model)
                else:
                    with Capture([self.layers[index]], cut=False, edit=edit):
                        out = inputs.run(self.model)
                return targets_set.scores(out, rows)

        ctx = Context(
            model=self.model,
            inputs=batch,
            targets=targets_set,
            layer=(name, module),
            grid=(h, w),
            channel_dim=shape.channel_dim,
            scores=scores,
            batch_size=self.batch_size,
            rescore=rescore,
            progress=self.progress,
        )
        cam = self.method.cam(acts.flatten(2), grid_grads, ctx)
        return torch.relu(cam).reshape(b, k, h, w)


def _wide(tensor: torch.Tensor) -> torch.Tensor:
    """fp16/bf16 activations and gradients weighted and normalised in float32: maps of a
    half-precision model match its float32 twin's to float16 precision, not worse."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor
