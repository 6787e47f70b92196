"""Interventional ground truth for ``mmcam evaluate --interventions`` (FunnyBirds-style,
Hesse et al., ICCV 2023, https://arxiv.org/abs/2308.06248), on the generated scenes.

The pointing game assumes the model uses the referred object. Here the model is asked: every
scene is re-rendered *exactly* (background and clutter replayed from its seed as in
:mod:`mmcam.zoo.reliance`, objects repainted from their full shapes in order, an occluding
bar repainted on top) without each object, with only the referred object(s), and with one
added distractor object (a shape and colour that no referred object has, placed clear of
every object), and the explained score ``s`` (the case's ``probabilities``) is recorded:

- effect of object ``j`` on item ``k``: ``e_jk = |s_k(x) − s_k(x without j)|``;
- ``int_relies`` (model row): 1 where ``argmax_j e_jk`` is a referred object — the model uses
  what the annotation says it should (with two or more objects);
- ``keep_only`` (model row): ``s_k(only the referred objects) / s_k(x)`` (1: the rest does not
  matter);
- ``distract`` (model row): ``|s_k(x + distractor) − s_k(x)|``;
- per map (:mod:`mmcam.metrics.interventional`): ``int_top`` (the map's top object by mass is
  the object of the largest effect), ``int_spearman`` (≥ 3 objects) and ``int_kendall``
  (≥ 2) of map mass vs effect over the objects, and ``miss_method``: over the pointing
  misses, 1 where the model does rely on a referred object (so the *method* missed), 0 where
  it does not (the *model* looked elsewhere).

For the gridworld (``action``) the objects are the cells: a wall cell becomes empty, an
empty cell a wall, the agent or goal cell empty, and the model's greedy action is re-read.
The intervention-decisive cells are those whose change changes the greedy action;
``pointing_int`` is the pointing game against them (beside ``pointing`` against the
by-construction decisive cells), and ``int_relies`` is 1 where the cell of the largest effect
on the chosen action's probability is a by-construction decisive one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..data import COLORS, SHAPES, Scene, SceneConfig
from ..data.gridworld import AGENT, EMPTY, GOAL, WALL, GridState
from ..data.raster import shape_mask
from ..data.vocab import OCCLUDER_COLOR
from ..metrics.interventional import argmax_set, kendall_tau, object_mass, spearman_rho, top_object_agreement
from ..metrics.localization import pointing_game
from .cases import Case

__all__ = ["Effects", "render", "scene_effects", "grid_effects", "map_values", "SHIFT"]

#: ``--shift``: more and smaller objects than the zoo trained on (1–3 of radius 7–11), an
#: occluding bar, a cluttered background with twice the clutter blobs.
SHIFT = SceneConfig(min_objects=2, max_objects=4, min_radius=5, max_radius=8, background="cluttered", occluders=True, distractors=8)


@dataclass
class Effects:
    """One case's interventions: ``objects`` (M, H, W) bool at the input's size, ``effect``
    (M, K) score changes, per item ``relies`` / ``keep_only`` / ``distract`` (NaN where
    undefined), and for the gridworld the intervention-decisive cells ``decisive`` (K, H, W)."""

    objects: torch.Tensor
    effect: torch.Tensor
    relies: list[float]
    keep_only: list[float]
    distract: list[float]
    decisive: torch.Tensor | None = None

    def model_values(self) -> dict[str, list[float]]:
        values = {"int_relies": self.relies, "keep_only": self.keep_only, "distract": self.distract}
        if self.decisive is not None:
            values["decisive_cells"] = [float(d.sum()) for d in self.decisive]
        return values


def render(scene: Scene, config: SceneConfig, keep: "list[int] | None" = None, extra: "tuple[str, str, float, float, int] | None" = None) -> np.ndarray:
    """``scene.image`` re-rendered with only the objects ``keep`` (indices into
    ``scene.objects``, default all) plus an ``extra`` object ``(shape, colour, cx, cy, r)``
    in front of them; the occluding bar stays on top. With the defaults it equals ``scene.image``."""
    from ..zoo.reliance import scene_layers

    canvas, blobs = scene_layers(scene, replace(config, occluders=False))  # the bar is drawn after these
    image = canvas.copy()
    for mask, rgb in blobs:
        image[mask] = rgb
    keep = set(range(len(scene.objects)) if keep is None else keep)
    size = config.image_size
    for i, obj in enumerate(scene.objects):
        if i in keep:
            image[shape_mask(obj.shape, obj.center[0], obj.center[1], obj.radius, size)] = COLORS[obj.color]
    if extra is not None:
        shape, color, cx, cy, r = extra
        image[shape_mask(shape, cx, cy, r, size)] = COLORS[color]
    if config.occluders:
        bar = (scene.image == OCCLUDER_COLOR).all(-1)  # no background, clutter or object pixel has this colour
        image[bar] = OCCLUDER_COLOR
    return image


def _distractor(scene: Scene, config: SceneConfig, referred: set[int], seed: int) -> "tuple[str, str, float, float, int] | None":
    """A new object whose shape and colour no referred object has, clear of every object
    (``min_gap`` px, at least 2) and of the occluding bar; ``None`` if none fits."""
    rng = np.random.default_rng(seed)
    shapes = [s for s in SHAPES if all(scene.objects[i].shape != s for i in referred)]
    colors = [c for c in COLORS if all(scene.objects[i].color != c for i in referred)]
    if not shapes or not colors:
        return None
    shape, color = shapes[int(rng.integers(len(shapes)))], colors[int(rng.integers(len(colors)))]
    r, size, gap = config.min_radius, config.image_size, max(config.min_gap, 2.0)
    bar = (scene.image == OCCLUDER_COLOR).all(-1)
    for _ in range(200):
        cx, cy = rng.uniform(r + 1, size - r - 1, 2)
        if all(math.hypot(cx - o.center[0], cy - o.center[1]) >= r + o.radius + gap for o in scene.objects):
            if not (shape_mask(shape, cx, cy, r, size) & bar).any():
                return shape, color, float(cx), float(cy), r
    return None


def scene_effects(case: Case, scene: Scene, config: SceneConfig, seed: int) -> Effects:
    """Score the case's items on the scene without each object, with only each item's
    referred objects and with an added distractor (see the module docstring)."""
    if case.encode is None or case.objects is None or case.referred is None:
        raise ValueError("this case carries no encoder/object masks for interventions")
    n, k = len(scene.objects), len(case.items)
    if case.objects.shape[0] != n:
        raise ValueError(f"case {case.sample_id} has {case.objects.shape[0]} object masks but its scene {n} objects")
    only_sets = sorted({tuple(sorted(r)) for r in case.referred})
    referred_all = {i for r in case.referred for i in r}
    extra = _distractor(scene, config, referred_all, seed)
    photos = [render(scene, config, [i for i in range(n) if i != j]) for j in range(n)]
    photos += [render(scene, config, list(s)) for s in only_sets]
    photos += [render(scene, config, extra=extra)] if extra is not None else []
    with torch.no_grad():
        base = case.probabilities(case.pixels[None]).float()[0]  # (K,)
        scores = case.probabilities(torch.stack([case.encode(p) for p in photos])).float()  # (V, K)
    effect = (base[None] - scores[:n]).abs()
    relies = [float(bool((argmax_set(effect[:, j]) & _in(case.referred[j], n)).any())) if n >= 2 else math.nan for j in range(k)]
    only = {s: scores[n + i] for i, s in enumerate(only_sets)}
    keep_only = [float(only[tuple(sorted(r))][j] / base[j]) if base[j] > 0 else math.nan for j, r in enumerate(case.referred)]
    distract = [float((scores[-1, j] - base[j]).abs()) if extra is not None else math.nan for j in range(k)]
    return Effects(case.objects, effect, relies, keep_only, distract)


def _in(indices: list[int], n: int) -> torch.Tensor:
    mask = torch.zeros(n, dtype=torch.bool)
    mask[list(indices)] = True
    return mask


def _obs(grids: "list[np.ndarray]") -> torch.Tensor:
    return torch.from_numpy(np.stack([np.stack([g == AGENT, g == GOAL, g == WALL]).astype(np.float32) for g in grids]))


def grid_effects(model: torch.nn.Module, case: Case, state: GridState) -> Effects:
    """Change each cell of a grid state (wall <-> empty; the agent or goal cell -> empty) and
    re-read the model's greedy action and the chosen action's probability."""
    h, w = state.grid.shape
    cells = [(r, c) for r in range(h) for c in range(w)]
    grids = []
    for cell in cells:
        g = state.grid.copy()
        g[cell] = WALL if g[cell] == EMPTY else EMPTY
        grids.append(g)
    with torch.no_grad():
        q0 = model(_obs([state.grid]))[0]
        q = model(_obs(grids))
    a = int(q0.argmax())
    p0, p = q0.softmax(-1)[a], q.softmax(-1)[:, a]
    effect = (p0 - p).abs()[:, None]  # (cells, 1)
    decisive = (q.argmax(1) != a).reshape(1, h, w)
    objects = torch.zeros(len(cells), h, w, dtype=torch.bool)
    for i, cell in enumerate(cells):
        objects[(i, *cell)] = True
    by_construction = torch.from_numpy(state.decisive_mask()).flatten()
    relies = [float(bool((argmax_set(effect[:, 0]) & by_construction).any()))]
    return Effects(objects, effect, relies, [math.nan], [math.nan], decisive)


def map_values(maps: torch.Tensor, case: Case, effects: Effects) -> dict[str, list[float]]:
    """The per-map interventional columns of one case (see the module docstring)."""
    mass = object_mass(maps, effects.objects)  # (K, M)
    pointing = pointing_game(maps, case.masks).tolist()
    values: dict[str, list[float]] = {"int_top": [], "int_spearman": [], "int_kendall": [], "miss_method": []}
    for k in range(len(case.items)):
        e = effects.effect[:, k]
        informative = e.max() > 0
        values["int_top"].append(top_object_agreement(mass[k], e) if informative else math.nan)
        values["int_spearman"].append(spearman_rho(mass[k], e))
        values["int_kendall"].append(kendall_tau(mass[k], e))
        values["miss_method"].append(effects.relies[k] if pointing[k] < 1 else math.nan)
    if effects.decisive is not None:
        has = effects.decisive.flatten(1).any(1)
        hits = pointing_game(maps, effects.decisive).tolist()
        values["pointing_int"] = [v if ok else math.nan for v, ok in zip(hits, has.tolist())]
    return values
