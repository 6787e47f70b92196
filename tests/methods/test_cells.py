"""Cell occlusion, SARFA and exact Shapley values over cells, against values worked out by
hand on a fixed-weight Q-network and against brute-force enumeration on a 3x3 grid."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from modelstate import assert_same_state, snapshot
from torch import nn

import mmcam
from mmcam.errors import MethodError
from mmcam.methods.cells import SARFA, CellOcclusion, CellShapley
from mmcam.targets import ActionValue, GreedyActionValue

# linear weights of the hand model, (actions, planes, 3, 3)
W = torch.zeros(2, 3, 3, 3)
W[0, 0, 0, 0], W[0, 1, 2, 2], W[0, 2, 1, 1] = 1.0, 0.5, -1.0
W[1, 0, 0, 0], W[1, 1, 2, 2], W[1, 2, 0, 1] = -0.5, 2.0, 1.5


class CellNet(nn.Module):
    """Q(s, a) = Σ W[a] ⊙ s + 2·[a = 0]·s[agent, 0, 0]·s[wall, 1, 1], behind a cell-aligned
    identity 1x1 conv (``features``, the layer the engine hooks)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Conv2d(3, 3, 1, bias=False)
        with torch.no_grad():
            self.features.weight.copy_(torch.eye(3).view(3, 3, 1, 1))

    def forward(self, x):
        a = self.features(x)
        linear = torch.einsum("bchw,kchw->bk", a, W)
        return linear + (a[:, 0, 0, 0] * a[:, 2, 1, 1])[:, None] * torch.tensor([2.0, 0.0])


def grid_obs() -> torch.Tensor:
    """Agent (0, 0), goal (2, 2), walls (1, 1) and (0, 1): one-hot planes, empty = zeros."""
    x = torch.zeros(1, 3, 3, 3)
    x[0, 0, 0, 0] = x[0, 1, 2, 2] = x[0, 2, 1, 1] = x[0, 2, 0, 1] = 1.0
    return x


def test_cell_occlusion_hand_values():
    exp = mmcam.CAM(CellNet(), "features", method="cell-occlusion")(grid_obs(), [ActionValue(0), ActionValue(1)])
    # Q0 = 1 + .5 - 1 + 2 (agent x wall(1,1)) = 2.5; emptying a cell removes its linear term,
    # and the agent or the (1,1) wall also the interaction 2
    q0 = torch.zeros(3, 3)
    q0[0, 0], q0[2, 2], q0[1, 1] = 1.0 + 2.0, 0.5, -1.0 + 2.0
    q1 = torch.zeros(3, 3)
    q1[0, 0], q1[2, 2], q1[0, 1] = -0.5, 2.0, 1.5
    torch.testing.assert_close(exp.scores[0], torch.tensor([2.5, 3.0]))
    torch.testing.assert_close(exp.raw[0, 0], torch.relu(q0))
    torch.testing.assert_close(exp.raw[0, 1], torch.relu(q1))


def test_shapley_hand_values_split_the_interaction():
    exp = mmcam.CAM(CellNet(), "features", method="shapley")(grid_obs(), [ActionValue(0)])
    # the interaction 2 is shared equally by its two cells; linear terms are their own
    expected = torch.zeros(3, 3)
    expected[0, 0], expected[2, 2], expected[1, 1] = 1.0 + 1.0, 0.5, -1.0 + 1.0
    torch.testing.assert_close(exp.raw[0, 0], torch.relu(expected))


def test_sarfa_matches_the_formula_worked_by_hand():
    exp = mmcam.CAM(CellNet(), "features", method="sarfa")(grid_obs(), [GreedyActionValue()])

    # greedy action 1 (Q = 2.5, 3.0); with two actions P_rem is one point mass, so K = 1
    def p1(q0, q1):
        return math.exp(q1) / (math.exp(q0) + math.exp(q1))

    base = p1(2.5, 3.0)
    emptied = {(0, 0): (2.5 - 3.0, 3.0 + 0.5), (2, 2): (2.0, 1.0), (1, 1): (1.5, 3.0), (0, 1): (2.5, 1.5)}
    expected = torch.zeros(3, 3)
    for cell, (q0, q1) in emptied.items():
        dp = base - p1(q0, q1)
        expected[cell] = 2 * dp / (1 + dp) if dp > 0 else 0.0
    torch.testing.assert_close(exp.raw[0, 0], expected)


def test_sarfa_relevance_term_with_three_actions():
    """K = 1 / (1 + KL(P_rem(s) || P_rem(s'))), the authors' scipy.stats.entropy(p, p')."""
    from mmcam.methods.cells import sarfa_scores

    q = torch.tensor([1.0, 2.0, 0.5])
    qp = torch.tensor([[1.5, 1.0, -0.5]])
    p, pp = np.exp(q.numpy()) / np.exp(q.numpy()).sum(), np.exp(qp[0].numpy()) / np.exp(qp[0].numpy()).sum()
    dp = p[1] - pp[1]
    rem, rem_new = p[[0, 2]] / p[[0, 2]].sum(), pp[[0, 2]] / pp[[0, 2]].sum()
    k = 1 / (1 + float((rem * np.log(rem / rem_new)).sum()))
    torch.testing.assert_close(sarfa_scores(q, qp, [1]), torch.tensor([[2 * k * dp / (k + dp)]], dtype=torch.float32))
    assert float(sarfa_scores(q, qp, [0])[0, 0]) == 0.0  # the probability of action 0 rose: no saliency


class TinyQ(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh())
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(36, 3))

    def forward(self, x):
        return self.head(self.features(x))


def test_shapley_equals_permutation_enumeration_on_a_3x3_grid():
    model = TinyQ().eval()
    x = torch.rand(1, 3, 3, 3) + 0.1  # all nine cells occupied: nine players
    with torch.no_grad():
        subsets = torch.stack([torch.tensor([(m >> c) & 1 for c in range(9)]) for m in range(512)]).bool()
        keep = subsets.view(512, 1, 3, 3)
        values = model(torch.where(keep, x, torch.zeros(())))[:, 2].double().numpy()  # v(S), action 2
    # average marginal contribution over all 9! orders
    orders = np.array(list(itertools.permutations(range(9))))
    bits = np.left_shift(1, orders)
    after = np.cumsum(bits, 1)
    marginal = values[after] - values[after - bits]
    phi = np.zeros(9)
    np.add.at(phi, orders.ravel(), marginal.ravel())
    phi /= len(orders)
    exp = mmcam.CAM(model, "features", method=CellShapley())(x, [ActionValue(2)])
    torch.testing.assert_close(exp.raw[0, 0].double(), torch.relu(torch.from_numpy(phi).view(3, 3)), atol=1e-5, rtol=1e-5)
    assert abs(phi.sum() - (values[511] - values[0])) < 1e-6  # efficiency


def test_empty_cells_cost_nothing_and_score_zero():
    calls = []
    model = CellNet()
    model.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    exp = mmcam.CAM(model, "features", method="cell-occlusion")(grid_obs(), [ActionValue(0)])
    assert sum(calls) == 1 + 4  # the explained forward, then one row per occupied cell
    assert exp.raw[0, 0][grid_obs()[0].sum(0) == 0].abs().sum() == 0


def test_cells_of_several_positions_match_single_position_cells():
    """A 6x6 rendering with 2x2 cells, read by a model that average-pools it back to 3x3."""
    small = CellNet()
    model = nn.Sequential(nn.AvgPool2d(2), small)
    big = grid_obs().repeat_interleave(2, 2).repeat_interleave(2, 3)
    for method in ("cell-occlusion", "sarfa", "shapley"):
        name = {"cell-occlusion": CellOcclusion, "sarfa": SARFA, "shapley": CellShapley}[method]
        want = mmcam.CAM(small, "features", method=method)(grid_obs(), [ActionValue(1)]).raw
        got = mmcam.CAM(model, "1.features", method=name(cell=2))(big, [ActionValue(1)]).raw
        torch.testing.assert_close(got, want)


def test_zoo_qnet_batch_efficiency_and_untouched_model():
    from mmcam.data import generate_grids

    model, _ = mmcam.zoo.load("qnet")
    states = generate_grids(2, 7)
    x = torch.from_numpy(np.stack([s.obs for s in states]))
    a = [s.optimal_action for s in states]
    targets = [[ActionValue(a[b]), lambda out, b=b: -out[:, a[b]]] for b in range(2)]
    before = snapshot(model)
    exp = mmcam.CAM(model, "features", method="shapley")(x, targets)
    assert_same_state(before, snapshot(model))
    # ReLU(φ) - ReLU(-φ) = φ: the signed values add up to v(N) - v(∅) on the real network
    phi = (exp.raw[:, 0] - exp.raw[:, 1]).flatten(1).sum(1)
    with torch.no_grad():
        q, q_empty = model(x), model(torch.zeros_like(x))
    rows = torch.arange(2)
    torch.testing.assert_close(phi, q[rows, a] - q_empty[rows, a], atol=1e-4, rtol=1e-4)


def test_errors_say_what_to_pass():
    x = torch.rand(1, 3, 4, 4) + 0.1  # 16 occupied cells
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.Flatten(), nn.Linear(32, 2))
    with pytest.raises(MethodError, match="cell-occlusion"):
        mmcam.CAM(model, "0", method="shapley")(x, [ActionValue(0)])
    with pytest.raises(MethodError, match="divisor"):
        mmcam.CAM(model, "0", method=CellOcclusion(cell=3))(x, [ActionValue(0)])
    with pytest.raises(MethodError, match="ActionValue"):
        mmcam.CAM(model, "0", method="sarfa")(x, [lambda out: out[:, 0] - out[:, 1]])
    assert {"cell-occlusion", "sarfa", "shapley"} <= set(mmcam.methods.available())


def test_explain_action_takes_the_cell_methods():
    from mmcam.data import generate_grid

    model, _ = mmcam.zoo.load("qnet")
    state = generate_grid(3)
    for method in ("cell-occlusion", "sarfa", "shapley"):
        exp = mmcam.explain_action(model, state.obs, method=method)
        cells = torch.tensor(exp.meta["cell_maps"][0])
        assert cells.shape == (7, 7) and exp.method == method
        assert float(cells[torch.from_numpy(state.obs.sum(0) == 0)].abs().sum()) == 0.0
