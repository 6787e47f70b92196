"""A gridworld for RL explanations: agent, goal and walls, with the optimal action and the
cells that decide it, exact by construction (breadth-first search).

>>> from mmcam.data import generate_grid, ACTIONS
>>> state = generate_grid(0)
>>> state.obs.shape, ACTIONS[state.optimal_action] in ACTIONS
((3, 7, 7), True)

Definitions:

* ``distance(cell)``: BFS steps from ``cell`` to the goal through non-wall cells (the grid
  border is a wall).
* ``q_values[a] = -(1 + distance(cell after a))``: the steps to the goal when taking
  action ``a`` first; a move into a wall or off the grid leaves the agent in place, so it
  costs ``-(1 + distance(agent))``.
* ``optimal_action``: ``argmax q_values``. By default states are resampled until exactly
  one action is optimal (``GridConfig.unique_optimal``); otherwise ties go to the first
  action in ``ACTIONS`` order.
* ``decisive_cells``: the agent cell, the goal cell, then the wall cells orthogonally next to
  the agent, in ``ACTIONS`` order. Those walls are what rule moves out (a wall can never
  sit in the optimal direction); together with the agent and goal positions they decide
  the action.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from ..errors import InputError

__all__ = ["ACTIONS", "MOVES", "GridConfig", "GridState", "generate_grid", "generate_grids", "EMPTY", "WALL", "AGENT", "GOAL"]

ACTIONS: tuple[str, ...] = ("up", "down", "left", "right")
#: (row, column) step of each action, in ``ACTIONS`` order.
MOVES: tuple[tuple[int, int], ...] = ((-1, 0), (1, 0), (0, -1), (0, 1))
EMPTY, WALL, AGENT, GOAL = 0, 1, 2, 3
#: RGB of EMPTY, WALL, AGENT, GOAL in ``GridState.obs_image``.
PALETTE = np.array([[235, 235, 235], [60, 60, 60], [50, 80, 230], [40, 170, 60]], np.uint8)

_MAX_TRIES = 10_000


@dataclass(frozen=True)
class GridConfig:
    """A ``size`` × ``size`` grid with ``n_walls`` wall cells, one agent and one goal."""

    size: int = 7
    n_walls: int = 8
    unique_optimal: bool = True  # resample until exactly one action is optimal

    def __post_init__(self) -> None:
        if self.size < 2:
            raise InputError(f"GridConfig.size must be >= 2, got {self.size}")
        if not 0 <= self.n_walls <= self.size * self.size - 2:
            raise InputError(f"GridConfig.n_walls must be in 0..{self.size * self.size - 2} for size {self.size}, got {self.n_walls}")


@dataclass
class GridState:
    """One state: the grid, where the agent and goal are, and the exact answers."""

    seed: int
    grid: np.ndarray  # int64 (H, W): EMPTY / WALL / AGENT / GOAL
    agent: tuple[int, int]  # (row, column)
    goal: tuple[int, int]
    optimal_action: int  # index into ACTIONS
    q_values: np.ndarray  # float32 (4,): -(1 + BFS steps to the goal after each action)
    decisive_cells: list[tuple[int, int]]  # agent, goal, walls next to the agent

    @property
    def obs(self) -> np.ndarray:
        """Float32 one-hot planes (3, H, W): agent, goal, walls."""
        return np.stack([self.grid == AGENT, self.grid == GOAL, self.grid == WALL]).astype(np.float32)

    def obs_image(self, scale: int = 8) -> np.ndarray:
        """uint8 (H·scale, W·scale, 3) rendering: agent blue, goal green, walls dark grey."""
        return np.kron(PALETTE[self.grid], np.ones((scale, scale, 1), np.uint8))

    def decisive_mask(self) -> np.ndarray:
        """Bool (H, W): True on the decisive cells."""
        mask = np.zeros(self.grid.shape, bool)
        for cell in self.decisive_cells:
            mask[cell] = True
        return mask


def _on_grid(cell: tuple[int, int], grid: np.ndarray) -> bool:
    return 0 <= cell[0] < grid.shape[0] and 0 <= cell[1] < grid.shape[1]


def _step(cell: tuple[int, int], move: tuple[int, int], grid: np.ndarray) -> tuple[int, int] | None:
    """The cell a move leads to, or None if it leaves the grid or hits a wall."""
    nxt = (cell[0] + move[0], cell[1] + move[1])
    return nxt if _on_grid(nxt, grid) and grid[nxt] != WALL else None


def distances(grid: np.ndarray, goal: tuple[int, int]) -> np.ndarray:
    """BFS steps from every cell to ``goal`` (inf for walls and unreachable cells)."""
    dist = np.full(grid.shape, np.inf)
    dist[goal] = 0
    queue = deque([goal])
    while queue:
        cell = queue.popleft()
        for move in MOVES:
            nxt = _step(cell, move, grid)
            if nxt is not None and dist[nxt] == np.inf:
                dist[nxt] = dist[cell] + 1
                queue.append(nxt)
    return dist


def _random_grid(rng: np.random.Generator, config: GridConfig) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    size = config.size
    cells = [divmod(int(c), size) for c in rng.permutation(size * size)[: config.n_walls + 2]]
    grid = np.full((size, size), EMPTY, np.int64)
    for cell in cells[2:]:
        grid[cell] = WALL
    agent, goal = cells[0], cells[1]
    grid[agent], grid[goal] = AGENT, GOAL
    return grid, agent, goal


def _q_values(grid: np.ndarray, agent: tuple[int, int], dist: np.ndarray) -> np.ndarray:
    q = np.empty(len(ACTIONS), np.float32)
    for a, move in enumerate(MOVES):
        nxt = _step(agent, move, grid)
        q[a] = -(1 + dist[agent if nxt is None else nxt])
    return q


def generate_grid(seed: int, config: GridConfig = GridConfig()) -> GridState:
    """A solvable state (agent not on the goal), fully determined by ``seed`` and ``config``."""
    rng = np.random.default_rng(seed)
    for _ in range(_MAX_TRIES):
        grid, agent, goal = _random_grid(rng, config)
        dist = distances(grid, goal)
        if not np.isfinite(dist[agent]):
            continue
        q = _q_values(grid, agent, dist)
        best = np.flatnonzero(q == q.max())
        if config.unique_optimal and len(best) != 1:
            continue
        walls = [nxt for nxt in ((agent[0] + dr, agent[1] + dc) for dr, dc in MOVES) if _on_grid(nxt, grid) and grid[nxt] == WALL]
        return GridState(seed, grid, agent, goal, int(best[0]), q, [agent, goal, *walls])
    raise InputError(f"no solvable state found for {config}; lower n_walls or pass unique_optimal=False")


def generate_grids(n: int, seed: int, config: GridConfig = GridConfig()) -> list[GridState]:
    """``n`` states; state ``i`` is ``generate_grid(seed * 100_003 + i, config)``."""
    return [generate_grid(seed * 100_003 + i, config) for i in range(n)]
