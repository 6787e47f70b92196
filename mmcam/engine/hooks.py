"""Per-call hooks: find layers, capture their outputs with the prefix cut, restore the model.

Rules (see DESIGN.md, "Engine rules"): hooks exist for one call and are removed in
``finally``; parameters are frozen for the call and their ``requires_grad`` restored
exactly; the hooked output is replaced by a differentiable copy of a detached leaf, so
nothing before the layer is traced by autograd; a layer that fires more than once per
forward is rejected; in-place modification of the captured activation is detected.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import LayerError, close_matches

__all__ = ["resolve_layers", "frozen_parameters", "Capture", "first_tensor", "replace_first_tensor"]

LayerSpec = "nn.Module | str | Sequence[nn.Module | str]"


def resolve_layers(model: nn.Module, layers: Any) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` pairs for a module, a dotted name, or a list of them."""
    if isinstance(layers, (nn.Module, str)):
        layers = [layers]
    if not isinstance(layers, Sequence) or not layers:
        raise LayerError(f"cannot use {layers!r} as layers; pass a module, a dotted name such as 'layer4', or a non-empty list of them")
    names = {id(m): n for n, m in model.named_modules()}
    out = []
    for spec in layers:
        if isinstance(spec, str):
            try:
                module = model.get_submodule(spec)
            except AttributeError:
                all_names = [n for n, _ in model.named_modules() if n]
                raise LayerError(
                    f"{type(model).__name__} has no layer {spec!r}; close matches: "
                    f"{close_matches(spec, all_names)}. Pass a name from model.named_modules() "
                    "or the module itself"
                ) from None
            out.append((spec, module))
        elif isinstance(spec, nn.Module):
            if id(spec) not in names:
                raise LayerError(
                    f"the {type(spec).__name__} module passed as a layer is not part of the model; "
                    "pass a submodule of the model you explain (e.g. model.layer4)"
                )
            out.append((names[id(spec)] or type(spec).__name__, spec))
        else:
            raise LayerError(f"cannot use {type(spec).__name__} as a layer; pass a module or a dotted name")
    return out


@contextmanager
def frozen_parameters(model: nn.Module, requires_grad: bool = False) -> Iterator[None]:
    """For the call: ``requires_grad=False`` on every parameter (``requires_grad=True``: on
    every floating-point one, for methods that differentiate intermediate tensors of the
    whole model), restored exactly after; and, when any module is in training mode
    (BatchNorm updating running statistics), the buffers are restored to their values
    before the call."""
    params = list(model.parameters())
    saved = [p.requires_grad for p in params]
    training = any(m.training for m in model.modules())
    buffers = [(b, b.detach().clone()) for b in model.buffers()] if training else []
    try:
        for p in params:
            p.requires_grad_(requires_grad and (p.is_floating_point() or p.is_complex()))
        yield
    finally:
        for p, flag in zip(params, saved):
            p.requires_grad_(flag)
        with torch.no_grad():
            for buffer, value in buffers:
                buffer.copy_(value)


def first_tensor(value: Any) -> torch.Tensor | None:
    """The tensor a module outputs, or the first tensor of a tuple/list/dict output."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        for item in value:
            if isinstance(item, torch.Tensor):
                return item
    return None


def replace_first_tensor(value: Any, new: torch.Tensor) -> Any:
    """``value`` with its first tensor replaced by ``new`` (same container type)."""
    if isinstance(value, torch.Tensor):
        return new
    if isinstance(value, dict):
        key = next(k for k, v in value.items() if isinstance(v, torch.Tensor))
        out = value.copy()
        out[key] = new
        return out
    items = list(value)
    index = next(i for i, v in enumerate(items) if isinstance(v, torch.Tensor))
    items[index] = new
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*items)
    return type(value)(items)


@dataclass
class _Record:
    name: str
    module: nn.Module
    calls: int = 0
    leaf: torch.Tensor | None = None
    version: int = 0


@dataclass
class Capture:
    """Hooks on ``layers`` for one forward.

    With ``cut=True`` a hooked output that is not yet on an autograd graph becomes a leaf
    that requires grad (the prefix cut: the earliest hooked layer, or one on a branch of its
    own); a later layer that depends on an earlier one stays connected to it, so every
    layer gets its gradient. Downstream code always receives a clone, so its in-place
    operations cannot corrupt the captured activation. ``edit`` may rewrite the flowing
    tensor (used by ablation).
    """

    layers: list[tuple[str, nn.Module]]
    cut: bool = True
    edit: Callable[[int, torch.Tensor], torch.Tensor] | None = None
    records: list[_Record] = field(default_factory=list)

    def __enter__(self) -> "Capture":
        self.records = [_Record(name, module) for name, module in self.layers]
        self._handles = []
        try:
            for index, record in enumerate(self.records):
                # first among the module's forward hooks: hooks the model installed earlier (transformers 5
                # records hidden states with forward hooks) must see the captured leaf, not the cut-off original
                self._handles.append(record.module.register_forward_hook(self._hook(index), prepend=True))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, index: int) -> Callable:
        record = self.records[index]

        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            record.calls += 1
            if record.calls > 1:
                return None
            tensor = first_tensor(output)
            if tensor is None:
                raise LayerError(
                    f"layer {record.name!r} ({type(module).__name__}) returned {type(output).__name__} with no tensor; hook a layer that outputs a feature map"
                )
            if self.cut and tensor.requires_grad:
                # already on the graph of an earlier hooked layer: keep the connection
                record.leaf, record.version = tensor, tensor._version
                flowing = tensor.clone()
            elif self.cut:
                # the prefix cut: nothing before this layer is traced by autograd
                leaf = tensor.detach().requires_grad_(tensor.is_floating_point())
                record.leaf, record.version = leaf, leaf._version
                flowing = leaf.clone() if tensor.is_floating_point() else leaf
            else:
                record.leaf, record.version = tensor, tensor._version
                flowing = tensor
            if self.edit is not None:
                flowing = self.edit(index, flowing)
            return replace_first_tensor(output, flowing) if flowing is not tensor else None

        return hook

    def check(self, model: nn.Module) -> list[torch.Tensor]:
        """The captured activations, after checking each layer ran exactly once, unmodified."""
        for record in self.records:
            if record.calls == 0:
                raise LayerError(
                    f"layer {record.name!r} did not run during the forward pass; pass a layer "
                    "on the path from the input to the output (see model.named_modules())"
                )
            if record.calls > 1:
                raise LayerError(
                    f"layer {record.name!r} ({type(record.module).__name__}) ran {record.calls} "
                    "times in one forward (a module reused in several places), so its activation "
                    f"is ambiguous; hook a module that runs once instead, e.g. "
                    f"{_alternatives(model, record.name)}"
                )
            if record.leaf is not None and record.leaf._version != record.version:
                raise LayerError(
                    f"the activation of layer {record.name!r} was modified in place after the "
                    "layer ran (e.g. an inplace ReLU or `+=` on its output); hook the module that "
                    "performs the in-place operation or its parent block instead"
                )
        return [r.leaf for r in self.records]


def _alternatives(model: nn.Module, name: str) -> str:
    """Names near ``name`` that are plausible single-use layers: its parent and siblings."""
    parent_name = name.rsplit(".", 1)[0] if "." in name else ""
    parent = model.get_submodule(parent_name) if parent_name else model
    siblings = [
        f"{parent_name}.{n}" if parent_name else n
        for n, m in parent.named_children()
        if not isinstance(m, (nn.ReLU, nn.SiLU, nn.GELU, nn.Identity, nn.Dropout))
    ][-3:]
    options = ([repr(parent_name)] if parent_name else []) + [repr(s) for s in siblings]
    return ", ".join(options) if options else "a block containing it"
