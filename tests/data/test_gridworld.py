"""Gridworld: optimal actions, Q-values and decisive cells checked against an independent BFS."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from mmcam.data import ACTIONS, GridConfig, generate_grid, generate_grids
from mmcam.data.gridworld import AGENT, EMPTY, GOAL, WALL
from mmcam.errors import InputError

STEPS = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}


def _bfs(grid: np.ndarray, start: tuple[int, int], goal: tuple[int, int]) -> int | None:
    """Shortest number of steps from start to goal avoiding walls, None if unreachable."""
    seen = {start: 0}
    queue = deque([start])
    while queue:
        cell = queue.popleft()
        if cell == goal:
            return seen[cell]
        for dr, dc in STEPS.values():
            r, c = cell[0] + dr, cell[1] + dc
            if 0 <= r < grid.shape[0] and 0 <= c < grid.shape[1] and grid[r, c] != WALL and (r, c) not in seen:
                seen[(r, c)] = seen[cell] + 1
                queue.append((r, c))
    return None


def _neighbour(grid, cell, action):
    """The cell an action leads to, or the same cell if blocked by a wall or the border."""
    dr, dc = STEPS[action]
    r, c = cell[0] + dr, cell[1] + dc
    if 0 <= r < grid.shape[0] and 0 <= c < grid.shape[1] and grid[r, c] != WALL:
        return (r, c)
    return cell


@pytest.mark.parametrize("config", [GridConfig(), GridConfig(size=9, n_walls=20), GridConfig(size=5, n_walls=3)])
def test_optimal_action_is_the_unique_shortest_path_step(config):
    for seed in range(150):
        state = generate_grid(seed, config)
        grid = state.grid
        assert grid[state.agent] == AGENT and grid[state.goal] == GOAL
        assert (grid == WALL).sum() == config.n_walls and (grid == AGENT).sum() == (grid == GOAL).sum() == 1
        # distance after each action, from a BFS started at that neighbour
        after = [_bfs(grid, _neighbour(grid, state.agent, a), state.goal) for a in ACTIONS]
        assert None not in after
        assert state.q_values.dtype == np.float32
        assert state.q_values.tolist() == [-(1 + d) for d in after]
        best = [i for i, d in enumerate(after) if d == min(after)]
        assert best == [state.optimal_action]  # unique by default
        assert min(after) == _bfs(grid, state.agent, state.goal) - 1
        assert _neighbour(grid, state.agent, ACTIONS[state.optimal_action]) != state.agent


def test_decisive_cells_are_agent_goal_and_adjacent_walls():
    with_walls = 0
    for state in generate_grids(200, 3):
        (r, c), grid = state.agent, state.grid
        adjacent_walls = [
            (r + dr, c + dc) for dr, dc in STEPS.values() if 0 <= r + dr < grid.shape[0] and 0 <= c + dc < grid.shape[1] and grid[r + dr, c + dc] == WALL
        ]
        assert state.decisive_cells == [state.agent, state.goal, *adjacent_walls]
        assert state.decisive_mask().sum() == len(state.decisive_cells)
        with_walls += bool(adjacent_walls)
        # a wall never sits where the optimal action goes
        dr, dc = STEPS[ACTIONS[state.optimal_action]]
        assert (r + dr, c + dc) not in adjacent_walls
    assert with_walls > 20


def test_observation_planes_and_rendering():
    state = generate_grid(11)
    obs = state.obs
    assert obs.shape == (3, 7, 7) and obs.dtype == np.float32
    assert np.array_equal(obs[0], state.grid == AGENT) and np.array_equal(obs[1], state.grid == GOAL)
    assert np.array_equal(obs[2], state.grid == WALL)
    assert obs.sum(0).max() == 1 and np.array_equal(obs.sum(0) == 0, state.grid == EMPTY)
    image = state.obs_image(4)
    assert image.shape == (28, 28, 3) and image.dtype == np.uint8
    r, c = state.agent
    assert (image[4 * r : 4 * r + 4, 4 * c : 4 * c + 4] == image[4 * r, 4 * c]).all()


def test_deterministic_and_varied():
    a, b = generate_grids(20, 5), generate_grids(20, 5)
    assert all(np.array_equal(x.grid, y.grid) and x.optimal_action == y.optimal_action for x, y in zip(a, b))
    assert len({s.grid.tobytes() for s in a}) == 20
    actions = [s.optimal_action for s in generate_grids(400, 6)]
    assert set(actions) == {0, 1, 2, 3} and min(np.bincount(actions)) > 60


def test_ties_allowed_when_asked_and_bad_configs_raise(monkeypatch):
    ties = 0
    for seed in range(100):
        state = generate_grid(seed, GridConfig(unique_optimal=False))
        best = np.flatnonzero(state.q_values == state.q_values.max())
        assert state.optimal_action == best[0]  # ties go to the first action
        ties += len(best) > 1
    assert ties > 0
    for bad in ({"size": 1}, {"n_walls": 48}, {"n_walls": -1}):
        with pytest.raises(InputError):
            GridConfig(**bad)
    monkeypatch.setattr("mmcam.data.gridworld._MAX_TRIES", 0)  # as if no sampled state were solvable
    with pytest.raises(InputError, match="lower n_walls"):
        generate_grid(0)
