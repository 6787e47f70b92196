"""The zoo Q-network: supervised on BFS action values of fresh gridworld states."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...data import GridConfig, generate_grids
from ..models import build
from .common import EVAL_SEED, fit, save

__all__ = ["train_qnet", "qnet_quality"]


def qnet_quality(model: torch.nn.Module, n: int = 1000, seed: int = EVAL_SEED) -> dict[str, float]:
    states = generate_grids(n, seed, GridConfig())
    with torch.no_grad():
        q = model(torch.from_numpy(np.stack([s.obs for s in states])))
    target = torch.tensor([s.optimal_action for s in states])
    return {"optimal_action_agreement": round(float((q.argmax(1) == target).float().mean()), 4), "eval_states": n}


def train_qnet(seed: int, minutes: float, out: Path) -> None:
    """Supervised on BFS action values (a DQN's regression target at convergence), plus a
    cross-entropy term on the optimal action."""
    torch.manual_seed(seed)
    cfg = {"architecture": {"type": "qnet", "in_channels": 3, "num_actions": 4, "grid": 7, "width": 48, "depth": 6}}
    model = build(cfg)

    def loss(step: int) -> torch.Tensor:
        states = generate_grids(128, seed * 1_000_003 + step, GridConfig())
        q = model(torch.from_numpy(np.stack([s.obs for s in states])))
        target = torch.from_numpy(np.stack([s.q_values for s in states]))
        best = torch.tensor([s.optimal_action for s in states])
        return F.smooth_l1_loss(q, target) + 0.5 * F.cross_entropy(q, best)

    start = time.perf_counter()
    steps = fit(model, loss, minutes, 6000, 2e-3, "qnet")
    cfg.update(
        labels=["up", "down", "left", "right"],
        data={
            "config": "GridConfig()",
            "states_per_step": 128,
            "target": "q = -(1 + BFS steps to goal after the action); loss smooth-L1 + 0.5 CE on the optimal action",
        },
        train={
            "seed": seed,
            "steps": steps,
            "minutes": round((time.perf_counter() - start) / 60, 2),
            "command": f"python -m mmcam.zoo.train qnet --seed {seed}",
        },
        metrics=qnet_quality(model),
    )
    save("qnet", model, cfg, out)
