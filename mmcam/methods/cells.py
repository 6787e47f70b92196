"""Cell-level perturbation methods for cell-grid observations (gridworlds, board games).

An observation ``(B, C, H, W)`` is a grid of cells of ``cell`` × ``cell`` input positions
(one position per cell for the zoo's gridworld planes). A cell is *removed* by writing the
**empty cell's encoding** into it (``empty``: a ``(C,)`` vector, default all zeros — the
gridworld's one-hot planes of an empty cell), an input the model saw in training, not a blur
or a grey patch. Cells that already hold the empty encoding cannot change anything when
removed: every method gives them 0 and spends no forward on them — so the map's zeros are
the observation's empty cells under any network (the cascading randomization's Spearman over
all cells keeps that shared support; ``bench/rl_sanity.py``). ``sarfa-toggle``
(:class:`SARFAToggle`) also perturbs the empty cells, by *filling* each with an occupant's
encoding (``fill``), so they are scored too.

Each method runs its perturbed observations through the model in chunks of
``ctx.batch_size`` rows under ``torch.no_grad`` and returns its cell map on the hooked
layer's grid (resampled with nearest neighbours when that grid is not the cell grid: hook a
cell-aligned layer, such as the zoo Q-network's ``features``, for exact cell maps). The
engine's ReLU keeps the evidence *for* the explained score.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import MethodError
from ..targets.rl import GreedyActionValue, action_values
from .base import Context, Method

__all__ = ["SARFA", "SARFAToggle", "CellOcclusion", "CellShapley", "is_cell_grid", "occupied_cells", "remove_cells", "MAX_GRID_CELLS"]

#: The most cells :func:`is_cell_grid` calls a (small) cell grid: one forward per occupied cell stays cheap.
MAX_GRID_CELLS = 1024


def occupied_cells(obs: torch.Tensor, empty: torch.Tensor, cell: int) -> torch.Tensor:
    """Bool ``(Hc, Wc)``: the cells of one observation ``(C, H, W)`` not equal to ``empty``."""
    diff = (obs != empty[:, None, None]).any(0).float()
    return F.max_pool2d(diff[None, None], cell)[0, 0] > 0


def is_cell_grid(obs: torch.Tensor, max_cells: int = MAX_GRID_CELLS) -> bool:
    """Whether one observation ``(C, H, W)`` is in the cell-grid encoding the cell methods
    assume with their defaults (``cell=1``, ``empty`` all zeros): every value is 0 or 1
    (one-hot or binary planes, frame stacks allowed), at least one cell is empty (all planes
    0, so writing the empty encoding is an input the observation itself holds), at least one
    is occupied, and ``H · W <= max_cells``. A float pixel frame (values in between) is not."""
    if obs.ndim != 3 or obs.shape[-2] * obs.shape[-1] > max_cells:
        return False
    if not bool(((obs == 0) | (obs == 1)).all()):
        return False
    occupied = occupied_cells(obs, obs.new_zeros(obs.shape[0]), 1)
    return bool(occupied.any()) and not bool(occupied.all())


def remove_cells(obs: torch.Tensor, removed: torch.Tensor, empty: torch.Tensor, cell: int) -> torch.Tensor:
    """``(N, C, H, W)``: copies of ``obs`` ``(C, H, W)`` with the cells set in ``removed``
    ``(N, Hc, Wc)`` replaced by the empty encoding."""
    up = removed.repeat_interleave(cell, 1).repeat_interleave(cell, 2)
    return torch.where(up[:, None], empty[None, :, None, None].to(obs.dtype), obs[None])


def toggle_cells(obs: torch.Tensor, changed: torch.Tensor, occupied: torch.Tensor, empty: torch.Tensor, fill: torch.Tensor, cell: int) -> torch.Tensor:
    """``(N, C, H, W)``: copies of ``obs`` with each cell set in ``changed`` ``(N, Hc, Wc)``
    toggled: an ``occupied`` cell emptied, an empty one filled with the encoding ``fill`` ``(C,)``."""
    out = remove_cells(obs, changed & occupied, empty, cell)
    up = (changed & ~occupied).repeat_interleave(cell, 1).repeat_interleave(cell, 2)
    return torch.where(up[:, None], fill[None, :, None, None].to(obs.dtype), out)


def common_occupant(obs: torch.Tensor, empty: torch.Tensor) -> torch.Tensor | None:
    """The encoding ``(C,)`` held by the most input positions of ``obs`` ``(C, H, W)`` other
    than ``empty`` (the gridworld's wall; ties: the first in sorted order); ``None`` if all are empty."""
    codes = obs.flatten(1).T  # (H·W, C)
    codes = codes[(codes != empty).any(1)]
    if not len(codes):
        return None
    values, counts = codes.unique(dim=0, return_counts=True)
    return values[int(counts.argmax())]


class _CellMethod(Method):
    needs_grads = False

    def __init__(self, cell: int = 1, empty: torch.Tensor | list[float] | None = None):
        if int(cell) < 1:
            raise MethodError(f"cell must be a positive number of input positions per cell side, got {cell}")
        self.cell = int(cell)
        self.empty = None if empty is None else torch.as_tensor(empty, dtype=torch.float32)

    def cam(self, acts: torch.Tensor, grads: torch.Tensor | None, ctx: Context) -> torch.Tensor:
        image = ctx.inputs.image
        if image is None or image.ndim != 4:
            raise MethodError(
                f"{self.name} removes cells of the observation, but no (B, C, H, W) observation tensor was found "
                "in the inputs; pass the observation as the tensor input"
            )
        h, w = image.shape[-2:]
        if h % self.cell or w % self.cell:
            raise MethodError(f"the observation is {h}x{w}, not a whole number of {self.cell}x{self.cell} cells; pass cell= a divisor of both")
        empty = self._empty(image)
        maps = torch.stack([self.cell_map(b, image[b], empty, ctx) for b in range(image.shape[0])])
        if tuple(maps.shape[-2:]) != tuple(ctx.grid):
            maps = F.interpolate(maps, size=ctx.grid, mode="nearest")
        return maps.to(acts.dtype).flatten(2)

    def _empty(self, image: torch.Tensor) -> torch.Tensor:
        if self.empty is None:
            return image.new_zeros(image.shape[1])
        if self.empty.shape != (image.shape[1],):
            raise MethodError(f"empty must hold one value per observation channel ({image.shape[1]}), got shape {tuple(self.empty.shape)}")
        return self.empty.to(image.device, image.dtype)

    def cell_map(self, b: int, obs: torch.Tensor, empty: torch.Tensor, ctx: Context) -> torch.Tensor:
        """``(K, Hc, Wc)``: the map of observation ``b`` for each explained item."""
        raise NotImplementedError


def _run(ctx: Context, b: int, images: torch.Tensor, raw: bool = False) -> torch.Tensor:
    """The explained scores ``(N, K)`` (or, ``raw``, every action value ``(N, A)``) of
    perturbed copies ``images`` of observation ``b``."""
    out = []
    for chunk in images.split(max(1, ctx.batch_size)):
        rows = torch.full((chunk.shape[0],), b, dtype=torch.long)
        inputs = ctx.inputs.take(rows, image=chunk)
        if raw:
            with torch.no_grad():
                out.append(action_values(inputs.run(ctx.model)).float())
        else:
            out.append(ctx.rescore(inputs, rows).float())
    return torch.cat(out)


def _singles(mask: torch.Tensor) -> torch.Tensor:
    """``(N, Hc, Wc)``: one removal per occupied cell of ``mask``, in row-major order."""
    where = mask.flatten().nonzero()[:, 0]
    single = torch.zeros(len(where), mask.numel(), dtype=torch.bool, device=mask.device)
    single[torch.arange(len(where)), where] = True
    return single.reshape(-1, *mask.shape)


class CellOcclusion(_CellMethod):
    """Cell occlusion with an in-distribution replacement (Zeiler & Fergus, ECCV 2014,
    https://arxiv.org/abs/1311.2901, on cells instead of image patches).

    ``L^k(c) = y^k(s) − y^k(s with cell c emptied)``: how much the explained score (an action
    value) falls when cell ``c`` is replaced by the empty cell's encoding. One forward per
    occupied cell.
    """

    name = "cell-occlusion"

    def cell_map(self, b, obs, empty, ctx):
        mask = occupied_cells(obs, empty, self.cell)
        out = obs.new_zeros(ctx.scores.shape[1], *mask.shape)
        single = _singles(mask)
        if len(single):
            drop = ctx.scores[b].float()[None] - _run(ctx, b, remove_cells(obs, single, empty, self.cell))
            out[:, mask] = drop.T.to(out.dtype)
        return out


class SARFA(_CellMethod):
    """SARFA, specific and relevant feature attribution (Puri et al., *Explain Your Move*,
    ICLR 2020, https://arxiv.org/abs/1912.12191), with cells as features.

    With ``P(s, a) = softmax_a Q(s, a)`` over all actions, ``â`` the explained action and
    ``s'`` the state with cell ``c`` emptied:

    * specificity ``ΔP = P(s, â) − P(s', â)``;
    * relevance ``K = 1 / (1 + D_KL(P_rem(s) ‖ P_rem(s')))``, ``P_rem`` the softmax over the
      *other* actions only (the authors' code, ``scipy.stats.entropy(p, p')``, renormalises
      the remaining probabilities; the KL's argument order follows that code);
    * ``S(c) = 2 K ΔP / (K + ΔP)`` (their harmonic mean) where ``ΔP > 0``, else 0.

    A cell scores high when removing it lowers the chosen action's probability *and* leaves
    the other actions' relative preferences alone. Items must be actions: an
    :class:`mmcam.targets.ActionValue` (or an action index) or
    :class:`mmcam.targets.GreedyActionValue`. One forward per occupied cell.
    """

    name = "sarfa"

    def cell_map(self, b, obs, empty, ctx):
        mask = occupied_cells(obs, empty, self.cell)
        single = _singles(mask)
        q = _run(ctx, b, torch.cat([obs[None], remove_cells(obs, single, empty, self.cell)]), raw=True)
        actions = self._actions(ctx, b, q[0])
        out = obs.new_zeros(len(actions), *mask.shape)
        if len(single):
            out[:, mask] = sarfa_scores(q[0], q[1:], actions).T.to(out.dtype)
        return out

    def _actions(self, ctx: Context, b: int, q: torch.Tensor) -> list[int]:
        actions = []
        for t in ctx.targets.items(b):
            if isinstance(t, GreedyActionValue):
                actions.append(int(q.argmax()))
            elif isinstance(getattr(t, "index", None), int):
                actions.append(t.index)
            else:
                raise MethodError(f"sarfa explains actions; got target {t!r}. Pass ActionValue(a), an action index or GreedyActionValue()")
        if len(actions) != ctx.scores.shape[1]:
            raise MethodError("sarfa needs one action per explained item; pass one ActionValue per action")
        return actions


class SARFAToggle(SARFA):
    """SARFA (:class:`SARFA`, same score ``S(c)``) with every cell a feature: an occupied
    cell is emptied as in ``sarfa``, an **empty** cell is *filled* with ``fill`` (default
    ``"common"``: the encoding most of the observation's occupied positions hold — the
    gridworld's wall), an input of the kind the observation itself holds. So the map also says
    which open cells the action relies on (closing the corridor it moves into), and empty cells
    get values that depend on the network. One forward per cell. Not in Puri et al.'s paper
    (they remove pieces); an extension written here, opt-in.
    """

    name = "sarfa-toggle"

    def __init__(self, cell: int = 1, empty: torch.Tensor | list[float] | None = None, fill: "torch.Tensor | list[float] | str" = "common"):
        super().__init__(cell, empty)
        if isinstance(fill, str) and fill != "common":
            raise MethodError(f"fill must be 'common' or one value per observation channel, got {fill!r}")
        self.fill = fill if isinstance(fill, str) else torch.as_tensor(fill, dtype=torch.float32)

    def cell_map(self, b, obs, empty, ctx):
        mask = occupied_cells(obs, empty, self.cell)
        fill = common_occupant(obs, empty) if isinstance(self.fill, str) else self.fill.to(obs.device, obs.dtype)
        if fill is None:
            return super().cell_map(b, obs, empty, ctx)
        if fill.shape != empty.shape or bool((fill == empty).all()):
            raise MethodError(f"fill must be one value per observation channel ({empty.numel()}) and differ from the empty encoding, got {fill.tolist()}")
        single = _singles(torch.ones_like(mask))
        q = _run(ctx, b, torch.cat([obs[None], toggle_cells(obs, single, mask, empty, fill, self.cell)]), raw=True)
        actions = self._actions(ctx, b, q[0])
        return sarfa_scores(q[0], q[1:], actions).T.reshape(len(actions), *mask.shape).to(obs.dtype)


def sarfa_scores(q: torch.Tensor, q_perturbed: torch.Tensor, actions: list[int]) -> torch.Tensor:
    """SARFA saliency ``(N, K)`` of ``N`` perturbed states ``q_perturbed`` ``(N, A)`` against
    the original action values ``q`` ``(A,)`` for each action in ``actions`` (see :class:`SARFA`)."""
    p, p_new = q.softmax(-1), q_perturbed.softmax(-1)
    out = []
    for a in actions:
        rest = [i for i in range(q.shape[-1]) if i != a]
        dp = p[a] - p_new[:, a]
        rem, rem_new = q[rest].softmax(-1), q_perturbed[:, rest].softmax(-1)
        kl = (rem * (rem.log() - rem_new.log())).sum(-1)
        k = 1.0 / (1.0 + kl)
        out.append(torch.where(dp > 0, 2 * k * dp / (k + dp).clamp_min(1e-12), torch.zeros_like(dp)))
    return torch.stack(out, 1)


class CellShapley(_CellMethod):
    """Exact Shapley values over cells (Shapley 1953; as attribution: Lundberg & Lee, NeurIPS
    2017, https://arxiv.org/abs/1705.07874).

    Players are the occupied cells ``N`` (an empty cell is a null player: its value is 0).
    ``v(S) = y^k(s with the cells outside S emptied)`` and

        ``φ_c = Σ_{S ⊆ N∖{c}} |S|! (n − |S| − 1)! / n! · (v(S ∪ {c}) − v(S))``,

    evaluated on all ``2^n`` coalitions (one forward each), so the values add up exactly:
    ``Σ_c φ_c = v(N) − v(∅)``. Refuses more than ``max_players`` occupied cells (2^n
    forwards); use ``cell-occlusion`` or ``sarfa`` there.
    """

    name = "shapley"

    def __init__(self, cell: int = 1, empty: torch.Tensor | list[float] | None = None, max_players: int = 14):
        super().__init__(cell, empty)
        self.max_players = int(max_players)

    def cell_map(self, b, obs, empty, ctx):
        mask = occupied_cells(obs, empty, self.cell)
        n = int(mask.sum())
        out = obs.new_zeros(ctx.scores.shape[1], *mask.shape)
        if n > self.max_players:
            raise MethodError(
                f"exact Shapley values over {n} occupied cells need 2^{n} forwards (max_players={self.max_players}); "
                "use method='cell-occlusion' or 'sarfa', or CellShapley(max_players=...) if you can wait"
            )
        if n == 0:
            return out
        players = mask.flatten().nonzero()[:, 0]
        coalitions = (torch.arange(2**n, device=obs.device)[:, None] >> torch.arange(n, device=obs.device)) & 1  # (2^n, n)
        removed = torch.zeros(2**n, mask.numel(), dtype=torch.bool, device=obs.device)
        removed[:, players] = coalitions == 0
        values = _run(ctx, b, remove_cells(obs, removed.reshape(-1, *mask.shape), empty, self.cell)).double()  # (2^n, K)
        out[:, mask] = shapley_from_values(values, n).T.to(out.dtype)
        return out


def shapley_from_values(values: torch.Tensor, n: int) -> torch.Tensor:
    """``(n, K)`` Shapley values from ``values`` ``(2^n, K)``, row ``m`` the value of the
    coalition whose members are the set bits of ``m``."""
    index = torch.arange(2**n, device=values.device)
    sizes = torch.stack([(index >> i) & 1 for i in range(n)]).sum(0)
    weight = torch.tensor([math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n) for s in range(n)], dtype=values.dtype, device=values.device)
    phi = []
    for i in range(n):
        without = index[(index >> i) & 1 == 0]
        phi.append((weight[sizes[without]][:, None] * (values[without | (1 << i)] - values[without])).sum(0))
    return torch.stack(phi)
