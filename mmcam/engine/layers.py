"""Choose a default layer by structure, from one probing forward — never by attribute names.

The rule, from what actually ran:

* the candidates are modules that ran exactly once and output a batch-first tensor of
  rank 3 or 4 with more than one position (pooling, dropout, flatten and identity
  modules excluded), in the order they *finished* (a container finishes after its
  children, so ``layer4`` wins over ``layer4.1.conv2``);
* if the last candidate is a token sequence ``(B, N, D)`` — a ViT, DeiT, CLIP, BEiT, Swin
  — the layer is the first LayerNorm of the last block of the last list of repeated
  blocks, i.e. the pre-attention norm (``ln_1``, ``layernorm_before``, ``layer_norm1``):
  for CLS-pooled models the patch gradients at a block's *output* are exactly zero;
* otherwise the last candidate (``layer4``, ``features``, ``trunk_output``, …).
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import LayerError
from .guard import cast_to_model, model_lock, run_model, transient_capture_hooks
from .hooks import first_tensor, frozen_parameters

__all__ = ["default_layers", "per_layout", "probe"]

_SKIP = (
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._MaxPoolNd,
    nn.Dropout,
    nn.Flatten,
    nn.Identity,
)


def probe(model: nn.Module, inputs: Any) -> list[tuple[str, nn.Module, tuple[int, ...], int, bool]]:
    """Run ``model`` once without gradients; ``(name, module, output shape, calls, plain)`` for
    every module that returned a tensor (``plain``) or a container holding one (first
    tensor's shape), in the order modules finished. The model is left as found (a train-mode
    model's BatchNorm statistics restored) and locked for the forward, whoever calls this."""
    from .inputs import Inputs

    batch = cast_to_model(inputs if isinstance(inputs, Inputs) else Inputs(inputs), model)
    finished: list[str] = []
    calls: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    plain: dict[str, bool] = {}
    modules = dict(model.named_modules())
    handles = []

    def hook(name: str):
        def record(module: nn.Module, args: Any, output: Any) -> None:
            calls[name] = calls.get(name, 0) + 1
            tensor = first_tensor(output)
            if tensor is not None and name not in shapes:
                shapes[name] = tuple(tensor.shape)
                plain[name] = isinstance(output, torch.Tensor)
                finished.append(name)

        return record

    with model_lock(model), transient_capture_hooks(model), frozen_parameters(model):
        try:
            for name, module in modules.items():
                if name:
                    handles.append(module.register_forward_hook(hook(name)))
            with torch.no_grad():
                run_model(model, batch)
        finally:
            for handle in handles:
                handle.remove()
    return [(n, modules[n], shapes[n], calls[n], plain[n]) for n in finished]


#: model -> {(what, module count, input signature): result}: structural choices made from a
#: probing forward are made once per model and input layout, not once per explain call
_PER_LAYOUT: "weakref.WeakKeyDictionary[nn.Module, dict[tuple, Any]]" = weakref.WeakKeyDictionary()


def per_layout(model: nn.Module, inputs: Any, choose: Callable[[nn.Module, Any], Any]) -> Any:
    """``choose(model, inputs)`` — a choice read from a probing forward — computed once per
    model and input layout (shapes after the batch dimension, dtypes, non-tensor arguments)
    and reused; a change in the model's module count computes it again."""
    from .inputs import Inputs

    inputs = inputs if isinstance(inputs, Inputs) else Inputs(inputs)
    key = (choose.__qualname__, sum(1 for _ in model.modules()), _signature(inputs.value))
    cache = _PER_LAYOUT.setdefault(model, {})
    if key not in cache:
        cache[key] = choose(model, inputs)
    return copy.deepcopy(cache[key])


def default_layers(model: nn.Module, inputs: Any) -> list[str]:
    """The default layer name(s) for ``model`` on ``inputs`` (see the module docstring); the
    probing forward runs once per model and input layout (:func:`per_layout`)."""
    return per_layout(model, inputs, _probe_default)


def _signature(value: Any) -> tuple:
    if isinstance(value, torch.Tensor):
        return (tuple(value.shape[1:]), str(value.dtype))
    if isinstance(value, dict):
        return tuple((k, _signature(v)) for k, v in value.items())
    return (type(value).__name__, repr(value) if isinstance(value, (bool, int, float, str, type(None))) else id(value))


def _probe_default(model: nn.Module, inputs: Any) -> list[str]:
    size = inputs.spatial_size
    records = probe(model, inputs)
    batch = records[0][2][0] if records else None
    candidates = [
        (name, module, shape)
        for name, module, shape, calls, is_tensor in records
        if calls == 1
        and is_tensor  # a container output's first tensor may not be what flows on
        and not isinstance(module, _SKIP)
        and len(shape) in (3, 4)
        and shape[0] == batch
        and _positions(shape, size) > 1
    ]
    if not candidates:
        raise LayerError(
            f"found no layer with a spatial or token output in {type(model).__name__}; pass layers= explicitly (a module or a name from model.named_modules())"
        )
    name, module, shape = candidates[-1]
    if len(shape) == 3:
        norm = _pre_attention_norm(model, name, records)
        if norm is not None:
            return [norm]
    return [name]


def _positions(shape: tuple[int, ...], size: tuple[int, int] | None) -> int:
    """Spatial positions of an output: tokens, or the grid of an NCHW/NHWC map whose stride
    over the input is the same on both axes."""
    from ..reshape import _consistent

    if len(shape) == 3:
        return shape[1]
    if size is None:
        return shape[2] * shape[3]
    nchw = shape[2] * shape[3] if _consistent(shape[2], shape[3], size) else 0
    nhwc = shape[1] * shape[2] if _consistent(shape[1], shape[2], size) else 0
    return max(nchw, nhwc)


def _pre_attention_norm(model: nn.Module, name: str, records) -> str | None:
    """First LayerNorm (in execution order) inside the last block of the last executed list
    of repeated blocks."""
    ran = {n for n, *_ in records}
    order = {n: i for i, (n, *_) in enumerate(records)}
    lists = []
    for list_name, module in model.named_modules():
        if not isinstance(module, (nn.ModuleList, nn.Sequential)) or len(module) < 2:
            continue
        children = list(module.named_children())
        kinds = {type(m) for _, m in children}
        if len(kinds) == 1 and any(isinstance(m, nn.LayerNorm) for _, c in children for m in c.modules()):
            last = f"{list_name}.{children[-1][0]}" if list_name else children[-1][0]
            if last in ran:
                lists.append(last)
    if not lists:
        return None
    block = max(lists, key=lambda n: order[n])
    norms = [f"{block}.{n}" for n, m in model.get_submodule(block).named_modules() if n and isinstance(m, nn.LayerNorm) and f"{block}.{n}" in order]
    if not norms:
        return None
    # first to *run*: a LayerNorm has no children, so finishing order is running order
    return min(norms, key=lambda n: order[n])


def spatial_maps(seen: list[tuple], size: "tuple[int, int] | None") -> list[tuple[str, tuple]]:
    """``(name, shape)`` of each probed module (:func:`mmcam.engine.layers.probe` rows) with a
    learned, once-called, plain ``(B, C, h, w)`` output on a grid consistent with the input ``size``."""
    from ..reshape import _consistent

    return [
        (name, shape)
        for name, module, shape, calls, plain in seen
        if plain
        and calls == 1
        and len(shape) == 4
        and shape[2] * shape[3] > 1
        and any(True for _ in module.parameters())
        and (size is None or _consistent(shape[2], shape[3], size))
    ]
