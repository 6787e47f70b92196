"""Guarding one call on the user's model: one lock per model, inputs checked and cast to the
model's dtype, the model's own errors translated, warnings for suspicious inputs and maps.

* **Threads.** Hooks, ``requires_grad`` toggles and BatchNorm buffers are per model, so two
  threads explaining with one model would interleave them (a layer "runs twice", parameters
  stay frozen, running statistics change). :func:`model_lock` gives every model one
  re-entrant lock, held around the whole hooked forward / backward / restore: concurrent
  calls on one model run one after the other and each is correct; calls on different models
  still run in parallel.
* **Inputs.** A 3-D tensor that reaches a 2-D convolution is one image without its batch
  dimension (refused); floating inputs are cast to the model's parameter dtype (an fp16 / bf16 model
  takes the float32 tensor every preprocessing produces); NaN/Inf inputs warn.
* **Errors.** An exception from the model's forward becomes a :class:`~mmcam.errors.ForwardError`
  saying what was passed and what to pass instead, with the original as ``__cause__``.
"""

from __future__ import annotations

import re
import threading
import warnings
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..errors import ForwardError, InputError, MMCamError, MMCamWarning
from .inputs import Inputs

__all__ = [
    "model_lock",
    "untouched",
    "transient_capture_hooks",
    "prepare_inputs",
    "cast_to_model",
    "run_model",
    "forward_message",
    "warn_zero_maps",
    "describe",
]

_LOCKS: "weakref.WeakKeyDictionary[nn.Module, threading.RLock]" = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """The re-entrant lock of ``model`` (one per model object, created on first use and
    dropped with the model): hold it around anything that hooks, freezes or runs it."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


@contextmanager
def untouched(model: nn.Module) -> Iterator[nn.Module]:
    """For code that runs the model outside :class:`~mmcam.CAM` (a task's prediction pass,
    ``generate()``, an ``eval_mode`` toggle): the model's lock held, and after the block —
    even when it fails — every ``training`` flag, ``requires_grad`` and (when a module was in
    training mode) every buffer put back as found. Nothing is changed during the block."""
    with model_lock(model), transient_capture_hooks(model):
        flags = [(m, m.training) for m in model.modules()]
        params = [(p, p.requires_grad) for p in model.parameters()]
        training = any(flag for _, flag in flags)
        buffers = [(b, b.detach().clone()) for b in model.buffers()] if training else []
        try:
            yield model
        finally:
            for module, flag in flags:
                module.training = flag
            for param, flag in params:
                param.requires_grad_(flag)
            with torch.no_grad():
                for buffer, value in buffers:
                    buffer.copy_(value)


_INSTALLED = "_output_capturing_hooks_installed"  # transformers 5 marks models it hooked so


@contextmanager
def transient_capture_hooks(model: nn.Module) -> Iterator[None]:
    """transformers 5 installs output-capturing forward hooks on a model the first time it is
    asked for attentions or hidden states (``output_attentions=True``; Segformer's head asks its
    encoder for hidden states on every forward) and keeps them, marking the model. For the call:
    hooks that appeared on a model whose mark was set during the call are removed after, and
    the mark put back, so the model keeps exactly the hooks it had. (If transformers stops
    marking models, nothing is removed: its hooks stay, as after any call of the user's.)"""
    modules = list(model.modules())
    marks = [getattr(m, _INSTALLED, None) for m in modules]
    hooks = [set(m._forward_hooks) for m in modules]
    try:
        yield
    finally:
        newly = [m for m, mark in zip(modules, marks) if not mark and getattr(m, _INSTALLED, None)]
        if newly:
            for module, before in zip(modules, hooks):
                for key in set(module._forward_hooks) - before:
                    for table in (module._forward_hooks, module._forward_hooks_with_kwargs, module._forward_hooks_always_called):
                        table.pop(key, None)
            for module, mark in zip(modules, marks):
                if module in newly:
                    if mark is None:
                        delattr(module, _INSTALLED)
                    else:
                        setattr(module, _INSTALLED, mark)


def model_dtype(model: nn.Module) -> torch.dtype | None:
    """The floating dtype of the model's first floating parameter (or buffer), if any."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return None


def prepare_inputs(batch: Inputs, model: nn.Module) -> Inputs:
    """``batch`` checked against ``model`` and with its floating tensors in the model's dtype."""
    if batch.batch_size == 0:
        raise InputError("the input batch is empty (0 rows); pass at least one image")
    dtype = model_dtype(model)
    batch = cast_to_model(batch, model)
    bad = [key for key, t in _floating(batch) if not bool(torch.isfinite(t).all())]
    if bad:
        warnings.warn(
            f"the inputs {bad} hold NaN or Inf values (after casting to the model's {dtype}); their "
            "maps will be empty or meaningless. Pass finite inputs (torch.nan_to_num(x)), in the "
            "range the model was trained on",
            MMCamWarning,
            stacklevel=3,
        )
    return batch


def _floating(batch: Inputs) -> list[tuple[str, torch.Tensor]]:
    if isinstance(batch.value, torch.Tensor):
        return [("input", batch.value)]
    return [(k, v) for k, v in batch.value.items() if isinstance(v, torch.Tensor) and v.is_floating_point()]


def cast_to_model(batch: Inputs, model: nn.Module) -> Inputs:
    """``batch`` with its floating tensors in the model's floating dtype (unchanged if they are)."""
    dtype = model_dtype(model)
    if dtype is None:
        return batch
    if isinstance(batch.value, torch.Tensor):
        return batch if batch.value.dtype == dtype else Inputs(batch.value.to(dtype))
    changed = {k: v.to(dtype) for k, v in batch.value.items() if isinstance(v, torch.Tensor) and v.is_floating_point() and v.dtype != dtype}
    return Inputs({**batch.value, **changed}, batch.image_key) if changed else batch


_CHANNELS = re.compile(r"expected input\[([\d, ]+)\] to have (\d+) channels, but got (\d+) channels")
_HINTS = (
    (
        re.compile(r"same dtype|dtype.*should be the same|type \(.*\) and (weight|bias) type|Half|BFloat16", re.IGNORECASE),
        "pass inputs in the model's dtype (x.to(next(model.parameters()).dtype))",
    ),
    (re.compile(r"same device|cuda|device type", re.IGNORECASE), "pass inputs on the model's device (x.to(next(model.parameters()).device))"),
    (
        re.compile(r"unexpected keyword argument|missing \d+ required|positional argument", re.IGNORECASE),
        "pass a dict whose keys are the model's forward() arguments, or a tensor for model(x)",
    ),
)


def run_model(model: nn.Module, batch: Inputs) -> Any:
    """``batch.run(model)``; an exception of the model's forward (not mmcam's own) becomes a
    one-line :class:`ForwardError` that says what was passed and what to pass instead."""
    image = batch.image
    handles = []
    if image is not None and image.ndim == 3:
        # torch's conv2d takes a 3-D tensor as ONE unbatched image: the "batch" of C rows would
        # silently become channels. Only a conv that actually receives a 3-D tensor proves it
        # (a spectrogram model may take (B, T, F) and add the channel itself).
        def unbatched(module: nn.Module, args: tuple) -> None:
            if args and isinstance(args[0], torch.Tensor) and args[0].ndim == 3:
                raise InputError(
                    f"the input tensor has shape {tuple(image.shape)}, and {type(model).__name__}'s "
                    f"{type(module).__name__} received it as one image without a batch dimension; pass "
                    f"x[None] (shape {(1, *image.shape)})"
                )

        handles = [m.register_forward_pre_hook(unbatched) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        return batch.run(model)
    except MMCamError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError, KeyError, AttributeError) as error:
        raise ForwardError(forward_message(model, batch, error)) from error
    finally:
        for handle in handles:
            handle.remove()


def forward_message(model: nn.Module, batch: Inputs, error: BaseException) -> str:
    """One line: what the model was given, its error's first line, and what to pass instead."""
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    name = type(model).__name__
    found = _CHANNELS.search(str(error))
    if found:
        shape = tuple(int(s) for s in found.group(1).split(","))
        want = int(found.group(2))
        return (
            f"{name} expects {want} input channels, got {found.group(3)} (inputs of shape {shape}); pass a "
            f"(B, {want}, H, W) tensor (e.g. image.convert('RGB') for 3, x.mean(1, keepdim=True) for 1)"
        )
    hint = next((h for pattern, h in _HINTS if pattern.search(first)), None)
    image = batch.image
    if hint is None and image is not None and image.ndim == 3:
        hint = f"if the tensor is one image (C, H, W), pass x[None] (shape {(1, *image.shape)})"
    if hint is None:
        hint = "pass inputs of the shape, dtype and device the model was built for"
    return f"{name}'s forward failed on inputs {describe(batch.value)}: {type(error).__name__}: {first}; {hint}"


def describe(value: Any, depth: int = 0) -> str:
    """A short description of a tensor or a (nested) model output: types and shapes."""
    if isinstance(value, torch.Tensor):
        return f"Tensor{tuple(value.shape)} {str(value.dtype).removeprefix('torch.')}"
    if depth > 1:
        return type(value).__name__
    if isinstance(value, dict) or hasattr(value, "keys") and hasattr(value, "__getitem__"):
        try:
            items = [f"{k}: {describe(value[k], depth + 1)}" for k in list(value.keys())[:6]]
        except Exception:  # noqa: BLE001 - a description never fails
            return type(value).__name__
        return f"{type(value).__name__}({', '.join(items)})"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(describe(v, depth + 1) for v in value[:4]) + (", ..." if len(value) > 4 else "")
        return f"{type(value).__name__}[{len(value)}]({inner})"
    return type(value).__name__


def warn_zero_maps(raw: torch.Tensor, targets: list[list[str]], layers: list[str]) -> None:
    """Warn when some ``(B, K, h, w)`` maps are zero everywhere after the ReLU."""
    if raw.numel() == 0:
        return
    zero = raw.flatten(2).amax(-1) <= 0
    count = int(zero.sum())
    if count == 0:
        return
    b, k = (int(i) for i in zero.nonzero()[0])
    first = targets[b][k] if b < len(targets) and k < len(targets[b]) else f"column {k}"
    warnings.warn(
        f"{count} of {zero.numel()} maps are all zero (first: target {first} of image {b}): the evidence "
        f"at {layers} is negative everywhere, so the ReLU removed it. Try another layer, a method such "
        "as 'layercam' or 'eigencam', or check the target",
        MMCamWarning,
        stacklevel=3,
    )
