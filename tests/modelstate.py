"""Snapshots of a model's full state, to prove mmcam leaves it exactly as found."""

from __future__ import annotations

import torch
from torch import nn

HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_pre_hooks_with_kwargs",
    "_state_dict_hooks",
    "_load_state_dict_pre_hooks",
)


def snapshot(model: nn.Module) -> dict:
    return {
        "params": {n: p.detach().clone() for n, p in model.named_parameters()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "grad": {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
        "buffers": {n: b.clone() for n, b in model.named_buffers()},
        "training": {n: m.training for n, m in model.named_modules()},
        "hooks": {n: tuple(len(getattr(m, d, {})) for d in HOOK_DICTS) for n, m in model.named_modules()},
    }


def assert_same_state(before: dict, after: dict) -> None:
    assert before["requires_grad"] == after["requires_grad"]
    assert before["training"] == after["training"]
    assert before["hooks"] == after["hooks"]
    for key in ("params", "buffers"):
        assert before[key].keys() == after[key].keys()
        for name, value in before[key].items():
            assert torch.equal(value, after[key][name]), f"{key} {name} changed"
    for name, grad in before["grad"].items():
        other = after["grad"][name]
        assert (grad is None) == (other is None), f".grad of {name} changed"
        if grad is not None:
            assert torch.equal(grad, other), f".grad of {name} changed"
