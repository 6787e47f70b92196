"""Reinforcement-learning targets: the value of an action, or a policy's logit for it."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import TargetError
from .base import Target, logits_of

__all__ = ["ActionValue", "GreedyActionValue", "action_values"]


def action_values(output: Any) -> torch.Tensor:
    """Every action's value (or policy logit) as ``(B, num_actions)``: the output tensor, or its
    ``q_values`` / ``logits`` / ``action_logits`` entry."""
    for key in ("q_values", "logits", "action_logits"):
        try:
            scores = logits_of(output, key)
            break
        except TargetError:
            continue
    else:
        raise TargetError(f"cannot find action values in a {type(output).__name__} output; pass a callable target")
    if scores.ndim != 2:
        raise TargetError(f"action targets need (B, num_actions) values, got {tuple(scores.shape)}; pass a callable target for this output")
    return scores


class ActionValue(Target):
    """``Q(s, a)`` (or the policy logit of ``a``) for a fixed action index."""

    def __init__(self, action: int):
        self.index = int(action)

    def __call__(self, output: Any) -> torch.Tensor:
        q = action_values(output)
        if not 0 <= self.index < q.shape[1]:
            raise TargetError(f"action {self.index} is out of range for {q.shape[1]} actions; pass 0..{q.shape[1] - 1}")
        return q[:, self.index]

    def __repr__(self) -> str:
        return f"ActionValue({self.index})"


class GreedyActionValue(Target):
    """``max_a Q(s, a)``: the value of the action the agent would take (its gradient is that
    action's, so one forward explains the greedy choice)."""

    def __call__(self, output: Any) -> torch.Tensor:
        return action_values(output).max(1).values

    def __repr__(self) -> str:
        return "GreedyActionValue()"
