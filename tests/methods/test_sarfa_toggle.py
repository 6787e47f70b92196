"""sarfa-toggle: SARFA with every cell a feature (occupied cells emptied, empty cells filled
with the most common occupant), against values worked out by hand on a linear Q-network."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import mmcam
from mmcam.errors import MethodError
from mmcam.methods.cells import SARFAToggle, common_occupant, toggle_cells
from mmcam.targets import ActionValue, GreedyActionValue

# Q(s, a) = Σ W[a] ⊙ s, (actions, planes agent/goal/wall, 3, 3)
W = torch.zeros(2, 3, 3, 3)
W[0, 0, 0, 0], W[0, 1, 2, 2], W[0, 2, 1, 1], W[0, 2, 1, 0] = 1.0, 0.5, -1.0, 0.7
W[1, 0, 0, 0], W[1, 1, 2, 2], W[1, 2, 0, 1], W[1, 2, 2, 0] = -0.5, 2.0, 1.5, -1.0


class LinearQ(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Conv2d(3, 3, 1, bias=False)
        with torch.no_grad():
            self.features.weight.copy_(torch.eye(3).view(3, 3, 1, 1))

    def forward(self, x):
        return torch.einsum("bchw,kchw->bk", self.features(x), W)


def grid_obs() -> torch.Tensor:
    """Agent (0, 0), goal (2, 2), walls (1, 1) and (0, 1); the wall is the common occupant."""
    x = torch.zeros(1, 3, 3, 3)
    x[0, 0, 0, 0] = x[0, 1, 2, 2] = x[0, 2, 1, 1] = x[0, 2, 0, 1] = 1.0
    return x


def _p1(q0: float, q1: float) -> float:
    return math.exp(q1) / (math.exp(q0) + math.exp(q1))


def test_sarfa_toggle_hand_values():
    calls = []
    model = LinearQ()
    model.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    exp = mmcam.CAM(model, "features", method="sarfa-toggle")(grid_obs(), [GreedyActionValue()])
    assert sum(calls) == 1 + 1 + 9  # the explained forward, the method's unperturbed one, one per cell
    q0, q1 = 1.0 + 0.5 - 1.0, -0.5 + 2.0 + 1.5  # 0.5, 3.0: greedy action 1
    base = _p1(q0, q1)
    changed = {  # (Q0, Q1) after toggling each cell whose toggle moves a value
        (0, 0): (q0 - 1.0, q1 + 0.5),  # agent emptied
        (2, 2): (q0 - 0.5, q1 - 2.0),  # goal emptied
        (1, 1): (q0 + 1.0, q1),  # wall emptied
        (0, 1): (q0, q1 - 1.5),  # wall emptied
        (1, 0): (q0 + 0.7, q1),  # empty cell walled
        (2, 0): (q0, q1 - 1.0),  # empty cell walled
    }
    expected = torch.zeros(3, 3)
    for cell, (a, b) in changed.items():
        dp = base - _p1(a, b)  # two actions: P_rem is a point mass, K = 1
        expected[cell] = 2 * dp / (1 + dp) if dp > 0 else 0.0
    torch.testing.assert_close(exp.raw[0, 0], expected)
    assert float(exp.raw[0, 0, 1, 0]) > 0 and float(exp.raw[0, 0, 2, 0]) > 0  # open cells scored
    plain = mmcam.CAM(LinearQ(), "features", method="sarfa")(grid_obs(), [ActionValue(1)])
    assert float(plain.raw[0, 0, 1, 0]) == float(plain.raw[0, 0, 2, 0]) == 0.0  # sarfa cannot see them
    occupied = grid_obs()[0].ne(0).any(0)
    torch.testing.assert_close(exp.raw[0, 0][occupied], plain.raw[0, 0][occupied])


def test_fill_helpers_and_explicit_fill():
    obs = grid_obs()[0]
    empty = torch.zeros(3)
    assert common_occupant(obs, empty).tolist() == [0.0, 0.0, 1.0]
    assert common_occupant(torch.zeros(3, 3, 3), empty) is None
    changed = torch.zeros(2, 3, 3, dtype=torch.bool)
    changed[0, 0, 0] = changed[1, 2, 0] = True
    out = toggle_cells(obs, changed, obs.ne(0).any(0), empty, torch.tensor([0.0, 1.0, 0.0]), 1)
    assert out[0, :, 0, 0].tolist() == [0, 0, 0] and out[1, :, 2, 0].tolist() == [0, 1, 0]
    assert torch.equal(out[0, :, 1:], obs[:, 1:]) and torch.equal(out[1, :, :2], obs[:, :2])
    goal_fill = mmcam.CAM(LinearQ(), "features", method=SARFAToggle(fill=[0.0, 1.0, 0.0]))(grid_obs(), [ActionValue(1)])
    assert float(goal_fill.raw[0, 0, 2, 0]) == 0.0  # a goal plane at (2, 0) moves no value
    blank = mmcam.CAM(LinearQ(), "features", method="sarfa-toggle")(torch.zeros(1, 3, 3, 3), [ActionValue(1)])
    assert float(blank.raw.abs().sum()) == 0.0  # nothing to fill with: as sarfa, all zero
    with pytest.raises(MethodError, match="differ from the empty"):
        mmcam.CAM(LinearQ(), "features", method=SARFAToggle(fill=[0.0, 0.0, 0.0]))(grid_obs(), [ActionValue(1)])
    with pytest.raises(MethodError, match="'common'"):
        SARFAToggle(fill="wall")
