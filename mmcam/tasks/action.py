"""Explain an agent's action: which cells of the observation made it choose (or value) it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..engine import CAM
from ..errors import InputError
from ..explain import TaskExplanation
from ..render.overlay import resize_map, to_uint8_image
from ..targets import ActionValue, GreedyActionValue

__all__ = ["ActionExplanation", "explain_action"]


@dataclass
class ActionExplanation(TaskExplanation):
    """Maps for the requested actions; ``meta``: greedy ``action``, all ``q_values``."""

    task: str = "action"


def _observation(obs: Any) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(obs) if not isinstance(obs, torch.Tensor) else obs)
    if not x.is_floating_point():
        x = x.float()
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[0] != 1:
        raise InputError(f"obs must be one observation (C, H, W) or (1, C, H, W) (frame stacks on C), got {tuple(x.shape)}")
    return x


def _display(x: torch.Tensor, image: Any, scale: int) -> np.ndarray:
    if image is not None:
        return to_uint8_image(image)
    planes = x[0]
    if planes.shape[0] >= 3:
        planes = planes[:3]
    shown = planes.float()
    shown = (shown - shown.min()) / (shown.max() - shown.min() + 1e-8)
    arr = to_uint8_image(shown)
    return np.kron(arr, np.ones((scale, scale, 1), np.uint8))


def explain_action(
    model: nn.Module,
    obs: Any,
    action: "int | list[int] | None" = None,
    *,
    method: str = "gradcam",
    layers: Any = None,
    action_names: list[str] | None = None,
    image: Any = None,
    scale: int = 8,
) -> ActionExplanation:
    """One map per requested action (default: the greedy action), from one forward.

    ``obs``: ``(C, H, W)`` or ``(1, C, H, W)`` (stacked frames on C). ``image``: an RGB
    rendering to draw the maps on (else the first planes, upscaled ``scale`` times).
    """
    x = _observation(obs)
    actions = None if action is None else ([action] if isinstance(action, int) else list(action))
    targets = [GreedyActionValue()] if actions is None else [ActionValue(a) for a in actions]
    exp = CAM(model, layers, method=method)(x, targets, input_size=tuple(x.shape[-2:]))
    q = exp.output if isinstance(exp.output, torch.Tensor) else getattr(exp.output, "logits", exp.output)
    q = torch.as_tensor(q)[0]
    greedy = int(q.argmax())
    actions = actions if actions is not None else [greedy]
    names = action_names or list(getattr(model, "labels", None) or []) or [str(a) for a in range(q.shape[0])]
    shown = _display(x, image, scale)
    maps = torch.stack([torch.from_numpy(resize_map(m.numpy(), shown.shape[:2])) for m in exp.maps[0]])
    # the grid-aligned raw map says which cells mattered, without interpolation
    return ActionExplanation(
        image=shown,
        maps=maps,
        items=[names[a] if a < len(names) else str(a) for a in actions],
        scores=exp.scores[0],
        method=exp.method,
        layers=exp.layers,
        meta={
            "actions": actions,
            "action": greedy,
            "action_name": names[greedy] if greedy < len(names) else str(greedy),
            "q_values": [round(float(v), 4) for v in q],
            "cell_maps": exp.maps[0].tolist(),
        },
    )
