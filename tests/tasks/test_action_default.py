"""explain_action's default method: SARFA on cell-grid observations, Grad-CAM on anything else;
``method=`` overrides; a mixed batch gives each observation its own default."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from modelstate import assert_same_state, snapshot

from mmcam.data import generate_grids
from mmcam.methods.cells import is_cell_grid
from mmcam.tasks.action import ActionTask, default_method, explain_action
from mmcam.zoo.models import QNetwork


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return QNetwork(in_channels=3, num_actions=4, grid=7, width=8).eval()


@pytest.fixture(scope="module")
def grids():
    return [s.obs for s in generate_grids(3, seed=7)]


def test_is_cell_grid(grids):
    obs = torch.from_numpy(grids[0])
    assert is_cell_grid(obs)
    assert is_cell_grid(torch.cat([obs, obs]))  # two stacked one-hot frames
    assert not is_cell_grid(torch.rand(3, 7, 7))  # a float pixel frame
    assert not is_cell_grid(obs * 255)  # a uint8-valued frame, 0 / 255
    assert not is_cell_grid(torch.zeros(3, 7, 7))  # nothing occupied
    assert not is_cell_grid(torch.ones(3, 7, 7))  # no empty cell: the empty encoding is not in the input
    big = torch.zeros(1, 33, 33)
    big[0, 0, 0] = 1
    assert not is_cell_grid(big)  # more than MAX_GRID_CELLS cells
    assert default_method(grids[0]) == "sarfa" and default_method(np.random.default_rng(0).random((3, 7, 7))) == "gradcam"


def test_grid_gets_sarfa_frame_gets_gradcam_and_method_overrides(model, grids):
    before = snapshot(model)
    got = explain_action(model, grids[0])
    want = explain_action(model, grids[0], method="sarfa")
    assert got.method == want.method == "sarfa"
    torch.testing.assert_close(got.maps, want.maps)
    assert got.meta["cell_maps"] == want.meta["cell_maps"]
    empty = ~torch.from_numpy(grids[0]).ne(0).any(0)
    assert (torch.tensor(got.meta["cell_maps"][0])[empty] == 0).all()  # SARFA scores occupied cells only
    frame = torch.rand(3, 7, 7, generator=torch.Generator().manual_seed(1))
    on_frame = explain_action(model, frame)
    assert on_frame.method == "gradcam"
    torch.testing.assert_close(on_frame.maps, explain_action(model, frame, method="gradcam").maps)
    assert explain_action(model, grids[0], method="gradcam").method == "gradcam"
    assert explain_action(model, frame, method="cell-occlusion").method == "cell-occlusion"
    assert explain_action(model, grids[0], action=[0, 2]).maps.shape[0] == 2
    assert_same_state(before, snapshot(model))


def test_mixed_batch_gives_each_observation_its_default(model, grids):
    frames = [np.random.default_rng(i).random((3, 7, 7)).astype(np.float32) for i in range(2)]
    inputs = [grids[0], frames[0], grids[1], frames[1], grids[2]]
    task = ActionTask(model)
    batched = task.explain([task.prepare(x) for x in inputs])
    assert [e.method for e in batched] == ["sarfa", "gradcam", "sarfa", "gradcam", "sarfa"]
    for x, got in zip(inputs, batched):
        want = explain_action(model, x)
        assert got.meta["action"] == want.meta["action"] and got.method == want.method
        torch.testing.assert_close(got.maps, want.maps, atol=1e-5, rtol=0)
    forced = ActionTask(model, method="gradcam")
    assert {e.method for e in forced.explain([forced.prepare(x) for x in inputs])} == {"gradcam"}
