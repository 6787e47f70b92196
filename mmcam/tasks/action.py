"""Explain an agent's action: which cells of the observation made it choose (or value) it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..adapters.base import Family, Prepared
from ..adapters.frame import Frame
from ..engine import CAM
from ..errors import InputError
from ..explain import TaskExplanation
from ..loading import load_observation
from ..render.overlay import to_uint8_image
from ..targets import ActionValue, GreedyActionValue
from .base import Task, device_of, stack

__all__ = ["ActionExplanation", "ActionTask", "explain_action"]


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


class ActionTask(Task):
    """The requested actions (default: each observation's greedy action), one map each, for
    a batch of observations in one forward (see :func:`explain_action`)."""

    name = "action"

    def __init__(
        self,
        model: nn.Module,
        action: "int | list[int] | None" = None,
        *,
        method: str | None = "gradcam",
        layers: Any = None,
        action_names: "list[str] | None" = None,
        image: Any = None,
        scale: int = 8,
        device: Any = None,
    ):
        self.model, self.image, self.scale, self.device = model, image, scale, device
        self.actions = None if action is None else ([action] if isinstance(action, int) else list(action))
        self.action_names = action_names
        self.cam = CAM(model, layers, method=method or "gradcam")
        self.family = Family(model)

    def read(self, path: str) -> Any:
        """An observation ``(C, H, W)`` (frame stacks on C) from a ``.npy`` file (no pickles)."""
        return load_observation(path)

    def prepare(self, obs: Any) -> Prepared:
        x = _observation(obs)
        shown = _display(x, self.image, self.scale)
        return Prepared(x, shown, Frame.resize(tuple(x.shape[-2:]), tuple(x.shape[-2:]), "the observation as given"))

    def run(self, batch: list[Prepared]) -> list[ActionExplanation]:
        results: list[Any] = [None] * len(batch)
        for rows in self.groups(batch):
            x = stack([batch[i] for i in rows], self.device or device_of(self.model))
            targets = [GreedyActionValue()] if self.actions is None else [ActionValue(a) for a in self.actions]
            exp = self.cam(x, targets, input_size=tuple(x.shape[-2:]))
            q_all = exp.output if isinstance(exp.output, torch.Tensor) else getattr(exp.output, "logits", exp.output)
            q_all = torch.as_tensor(q_all)
            names = self.action_names or list(getattr(self.model, "labels", None) or []) or [str(a) for a in range(q_all.shape[1])]
            for b, i in enumerate(rows):
                q, shown = q_all[b], batch[i].photo
                greedy = int(q.argmax())
                actions = self.actions if self.actions is not None else [greedy]
                # maps on the display (cells upscaled); the grid-aligned cell maps say which cells mattered
                display = Frame.resize(shown.shape[:2], tuple(x.shape[-2:]), "cells upscaled for display")
                results[i] = ActionExplanation(
                    image=shown,
                    maps=display.maps_to_photo(exp.maps[b]),
                    items=[names[a] if a < len(names) else str(a) for a in actions],
                    scores=exp.scores[b],
                    method=exp.method,
                    layers=exp.layers,
                    meta={
                        "actions": actions,
                        "action": greedy,
                        "action_name": names[greedy] if greedy < len(names) else str(greedy),
                        "q_values": [round(float(v), 4) for v in q],
                        "cell_maps": exp.maps[b].tolist(),
                    },
                )
        return results


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

    ``method``: any registered method; for cell-grid observations the cell methods
    ``"cell-occlusion"``, ``"sarfa"`` and ``"shapley"`` (:mod:`mmcam.methods.cells`) remove
    cells by writing the empty cell's encoding (all-zero planes) — on the zoo Q-network they
    point at a decisive cell in 1.00 / 0.93 / 1.00 of fresh states vs 0.15 for Grad-CAM
    (``docs/methods.md``).
    """
    return ActionTask(model, action, method=method, layers=layers, action_names=action_names, image=image, scale=scale)(obs)
