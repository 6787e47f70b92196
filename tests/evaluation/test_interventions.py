"""Interventional ground truth: exact re-rendering (also with occluders, the --shift scenes),
effects on hand-made score functions and a hand-made Q-network, the columns end to end,
and the scene generator's defaults unchanged byte for byte."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch
from torch import nn

from mmcam.data import COLORS, SceneConfig, generate_scenes
from mmcam.data.gridworld import AGENT, GOAL, WALL, GridState
from mmcam.evaluation import evaluate
from mmcam.evaluation.cases import Case
from mmcam.evaluation.interventions import SHIFT, _distractor, grid_effects, map_values, render, scene_effects
from mmcam.zoo.reliance import render_without

CONFIGS = [SceneConfig(background=b) for b in ("plain", "textured", "cluttered")] + [SHIFT]
SMALL = dict(images=3, faithfulness_images=0, sanity_images=0, progress=False, threads=1, interventions=True)


def test_default_scenes_unchanged_bit_for_bit():
    """The zoo was trained on these draws: the generator's defaults must not move."""
    h = hashlib.sha256()
    for config in CONFIGS[:3]:
        for s in generate_scenes(4, 123, config):
            h.update(s.image.tobytes())
            h.update(s.instance.tobytes())
            h.update(" ".join(s.caption_tokens).encode())
    assert h.hexdigest() == "1f87186901a44e58f92a66bdc4d7d15fe555ea949e3549d7432a712c13f73301"


@pytest.mark.parametrize("config", CONFIGS, ids=["plain", "textured", "cluttered", "shift"])
def test_render_replays_scenes_exactly(config):
    for scene in generate_scenes(6, 77, config):
        assert np.array_equal(render(scene, config), scene.image)
        if not config.occluders:
            for j in range(len(scene.objects)):
                keep = [i for i in range(len(scene.objects)) if i != j]
                assert np.array_equal(render(scene, config, keep), render_without(scene, config, objects=[j]))


def test_shift_has_more_smaller_objects_and_occluders():
    scenes = generate_scenes(20, 5, SHIFT)
    assert np.mean([len(s.objects) for s in scenes]) > 2.5 and max(o.radius for s in scenes for o in s.objects) <= 8
    assert all((s.image == (70, 70, 70)).all(-1).any() for s in scenes)  # an occluding bar in every scene


def _colour_case(scene, j=0):
    """A case whose score is the share of pixels with object ``j``'s colour."""
    rgb = torch.tensor(COLORS[scene.objects[j].color])
    objects = torch.from_numpy(np.stack([o.mask for o in scene.objects]))

    def encode(photo):
        return torch.from_numpy(photo).permute(2, 0, 1).float()

    def probabilities(xs):
        return (xs == rgb[None, :, None, None]).all(1).flatten(1).float().mean(1, keepdim=True)

    return Case("s", ["colour"], encode(scene.image), objects[[j]], objects[1:2], probabilities, None, encode=encode, objects=objects, referred=[[j]])


def test_scene_effects_by_hand():
    config = SceneConfig(min_objects=3, background="cluttered")
    scene = next(s for s in generate_scenes(30, 3, config) if len({o.color for o in s.objects}) == 3)
    case = _colour_case(scene)
    e = scene_effects(case, scene, config, seed=0)
    share = scene.objects[0].area / scene.image.shape[0] ** 2
    assert e.effect[:, 0].tolist() == pytest.approx([share, 0.0, 0.0], abs=1e-7)  # objects 3 px apart: no overlap
    assert e.relies == [1.0] and e.keep_only == pytest.approx([1.0]) and e.distract == pytest.approx([0.0])
    extra = _distractor(scene, config, {0}, seed=0)
    assert extra[1] != scene.objects[0].color and extra[0] != scene.objects[0].shape
    # maps: mass on the object of the largest effect -> agreement 1; elsewhere -> 0 and a method miss
    good = case.objects[0].float()[None]
    bad = case.objects[1].float()[None]
    assert map_values(good, case, e)["int_top"] == [1.0] and math.isnan(map_values(good, case, e)["miss_method"][0])
    assert map_values(bad, case, e)["int_top"] == [0.0] and map_values(bad, case, e)["miss_method"] == [1.0]


class _WallNet(nn.Module):
    """Q = (wall at (0, 0), 0.5, 0, 0): action 0 iff that cell is a wall."""

    def forward(self, obs):
        wall = obs[:, 2, 0, 0]
        zeros = torch.zeros_like(wall)
        return torch.stack([wall, torch.full_like(wall, 0.5), zeros, zeros], 1)


def test_grid_effects_by_hand():
    grid = np.zeros((4, 4), np.int64)
    grid[0, 0] = grid[3, 3] = WALL
    grid[2, 1], grid[1, 3] = AGENT, GOAL
    state = GridState(0, grid, (2, 1), (1, 3), 0, np.zeros(4, np.float32), [(2, 1), (1, 3)])
    obs = torch.from_numpy(state.obs)
    case = Case("g", ["action 0"], obs, torch.from_numpy(state.decisive_mask())[None], torch.zeros(1, 4, 4, dtype=torch.bool), None, None)
    e = grid_effects(_WallNet(), case, state)
    want = torch.zeros(1, 4, 4, dtype=torch.bool)
    want[0, 0, 0] = True  # only emptying (0, 0) changes the greedy action
    assert torch.equal(e.decisive, want)
    assert e.effect.shape == (16, 1) and int(e.effect[:, 0].argmax()) == 0 and e.effect[1:].abs().max() == 0
    assert e.relies == [0.0]  # the model's cell is not a by-construction decisive one
    cell = torch.zeros(1, 4, 4)
    cell[0, 0, 0] = 1.0
    v = map_values(cell, case, e)
    assert v["pointing_int"] == [1.0] and v["int_top"] == [1.0] and v["miss_method"] == [0.0]  # the model's fault


@pytest.fixture(scope="module")
def classifier():
    from mmcam import zoo

    return zoo.load("classifier")


def test_evaluate_interventions_on_shifted_scenes(classifier):
    model, processor = classifier
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ev = evaluate("classify", model, processor, seed=1, shift=True, **SMALL)
    assert ev.settings["distribution"] == "shift" and ev.settings["interventions"]
    for column in ("int_relies", "keep_only", "distract"):
        assert column in ev.rows["model: interventions"]
    row = ev.rows["gradcam"]
    for column in ("mass_all", "rank_all", "int_top", "int_kendall"):
        assert 0 - 1e-9 <= abs(row[column]) <= 1 + 1e-9, column
    assert row["mass_all"] >= row["mass"] and "baseline: sobel" in ev.rows
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    plain = evaluate("classify", model, processor, seed=1, **{**SMALL, "interventions": False})
    assert "int_top" not in plain.rows["gradcam"] and plain.settings["distribution"] == "in-distribution"


def test_evaluate_action_interventions():
    ev = evaluate("action", "zoo:qnet", methods=("gradcam",), seed=2, **SMALL)
    assert "pointing_int" in ev.rows["gradcam"] and ev.rows["model: interventions"]["decisive_cells"] >= 1


def test_cli_flags_reach_the_command(tmp_path):
    from mmcam.cli import main

    assert (
        main(
            [
                "evaluate",
                "--task",
                "action",
                "--images",
                "2",
                "--faithfulness-images",
                "0",
                "--sanity-images",
                "0",
                "--interventions",
                "--shift",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    text = (tmp_path / "evaluate-action.md").read_text()
    assert "--interventions --shift" in text and "int. top object" in text


def test_all_zero_gradients_score_as_an_empty_map(monkeypatch):
    from mmcam.errors import GradientError
    from mmcam.evaluation import runner

    real = runner.prepare

    def prepare(*args, **kwargs):
        cases = real(*args, **kwargs)
        for case in cases[:1]:
            case.explain = lambda m, method: (_ for _ in ()).throw(GradientError("all zero"))
        return cases

    monkeypatch.setattr(runner, "prepare", prepare)
    ev = evaluate("action", "zoo:qnet", methods=("gradcam",), seed=2, **{**SMALL, "interventions": False})
    assert ev.counts["gradcam"] == 3 and any("raised GradientError" in n for n in ev.notes)
