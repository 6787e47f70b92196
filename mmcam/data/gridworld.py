"""A gridworld for RL explanations: agent, goal and walls, with the optimal action and the
cells that decide it, exact by construction (breadth-first search)."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

__all__ = ["ACTIONS", "GridConfig", "GridState", "generate_grid", "generate_grids", "EMPTY", "WALL", "AGENT", "GOAL"]

ACTIONS: tuple[str, ...] = ("up", "down", "left", "right")
MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))
EMPTY, WALL, AGENT, GOAL = 0, 1, 2, 3


@dataclass(frozen=True)
class GridConfig:
    size: int = 7
    n_walls: int = 8
    unique_optimal: bool = True  # resample until exactly one action is optimal


@dataclass
class GridState:
    seed: int
    grid: np.ndarray  # int (H, W): EMPTY / WALL / AGENT / GOAL
    agent: tuple[int, int]
    goal: tuple[int, int]
    optimal_action: int  # index into ACTIONS
    q_values: np.ndarray  # float32 (4,): -(steps to the goal) after each action
    decisive_cells: list[tuple[int, int]]

    @property
    def obs(self) -> np.ndarray:
        """Float32 one-hot planes (3, H, W): agent, goal, walls."""
        return np.stack([self.grid == AGENT, self.grid == GOAL, self.grid == WALL]).astype(np.float32)

    def obs_image(self, scale: int = 8) -> np.ndarray:
        """An RGB rendering (uint8), each cell ``scale`` pixels: agent blue, goal green, walls dark."""
        palette = np.array([[235, 235, 235], [60, 60, 60], [50, 80, 230], [40, 170, 60]], np.uint8)
        return np.kron(palette[self.grid], np.ones((scale, scale, 1), np.uint8))


def _distances(grid: np.ndarray, goal: tuple[int, int]) -> np.ndarray:
    """Steps from every cell to the goal (inf where unreachable), walls excluded."""
    h, w = grid.shape
    dist = np.full((h, w), np.inf)
    dist[goal] = 0
    queue = deque([goal])
    while queue:
        r, c = queue.popleft()
        for dr, dc in MOVES:
            nr, nc = r + dr, c + dc
            if 0 <= nr < h and 0 <= nc < w and grid[nr, nc] != WALL and dist[nr, nc] == np.inf:
                dist[nr, nc] = dist[r, c] + 1
                queue.append((nr, nc))
    return dist


def generate_grid(seed: int, config: GridConfig = GridConfig()) -> GridState:
    """A solvable state. Decisive cells: the agent, the goal, and the walls next to the agent
    that block a move (they decide which of the four actions are possible)."""
    rng = np.random.default_rng(seed)
    size = config.size
    while True:
        grid = np.zeros((size, size), np.int64)
        cells = rng.permutation(size * size)[: config.n_walls + 2]
        agent = divmod(int(cells[0]), size)
        goal = divmod(int(cells[1]), size)
        for cell in cells[2:]:
            grid[divmod(int(cell), size)] = WALL
        grid[agent], grid[goal] = AGENT, GOAL
        dist = _distances(grid, goal)
        if not np.isfinite(dist[agent]) or dist[agent] < 1:
            continue
        q = np.empty(4, np.float32)
        for a, (dr, dc) in enumerate(MOVES):
            r, c = agent[0] + dr, agent[1] + dc
            blocked = not (0 <= r < size and 0 <= c < size) or grid[r, c] == WALL
            q[a] = -(1 + dist[agent]) if blocked else -(1 + dist[r, c])
        best = np.flatnonzero(q == q.max())
        if config.unique_optimal and len(best) != 1:
            continue
        decisive = [agent, goal]
        for dr, dc in MOVES:
            r, c = agent[0] + dr, agent[1] + dc
            if 0 <= r < size and 0 <= c < size and grid[r, c] == WALL:
                decisive.append((r, c))
        return GridState(seed, grid, agent, goal, int(best[0]), q, decisive)


def generate_grids(n: int, seed: int, config: GridConfig = GridConfig()) -> list[GridState]:
    return [generate_grid(seed * 100_003 + i, config) for i in range(n)]
