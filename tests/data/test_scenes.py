"""The scenes' ground truth is exact: masks, boxes, maps, captions and answers match the pixels."""
from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from mmcam.data import (
    ACTIONS, COLORS, SHAPES, VOCAB, GridConfig, SceneConfig, generate_grid, generate_scene, generate_scenes, load_coco, write_coco,
)
from mmcam.data.gridworld import MOVES, WALL

CONFIGS = [SceneConfig(), SceneConfig(background="textured", occluders=True), SceneConfig(background="cluttered", max_objects=4)]


def test_same_seed_same_bytes_and_different_seeds_differ():
    a, b, c = generate_scene(5), generate_scene(5), generate_scene(6)
    assert a.image.tobytes() == b.image.tobytes() and a.caption == b.caption
    assert a.image.tobytes() != c.image.tobytes()


@pytest.mark.parametrize("config", CONFIGS)
def test_masks_boxes_and_maps_match_pixels(config):
    for scene in generate_scenes(40, 3, config):
        claimed = np.zeros(scene.image.shape[:2], bool)
        for i, obj in enumerate(scene.objects):
            assert obj.mask.any()
            assert (scene.image[obj.mask] == COLORS[obj.color]).all()  # every mask pixel has the colour
            assert not (claimed & obj.mask).any()  # visible masks are disjoint
            claimed |= obj.mask
            ys, xs = np.nonzero(obj.mask)
            assert obj.box == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
            assert (scene.semantic[obj.mask] == SHAPES.index(obj.shape) + 1).all()
            assert (scene.instance[obj.mask] == i + 1).all()
        assert (scene.semantic[~claimed] == 0).all() and (scene.instance[~claimed] == 0).all()
        # no pixel outside the masks has an object colour that would make masks ambiguous
        outside = scene.image[~claimed]
        for rgb in COLORS.values():
            assert not (outside == rgb).all(1).any()


def test_captions_link_words_to_matching_objects():
    for scene in generate_scenes(200, 4):
        assert len(scene.caption_tokens) == len(scene.word_links)
        for word, links in zip(scene.caption_tokens, scene.word_links):
            assert word in VOCAB
            if word in COLORS:
                assert len(links) == 1 and scene.objects[links[0]].color == word
            elif word in SHAPES:
                assert len(links) == 1 and scene.objects[links[0]].shape == word
            elif word in ("left", "right", "above", "below", "of"):
                assert len(links) == 2
            else:
                assert links == []
        mentioned = {i for links in scene.word_links for i in links}
        assert mentioned == set(range(len(scene.objects)))


def test_relation_words_are_true():
    for scene in generate_scenes(300, 5, SceneConfig(min_objects=2, max_objects=2)):
        tokens = scene.caption_tokens
        rel = next(t for t in tokens if t in ("left", "right", "above", "below"))
        a, b = scene.word_links[tokens.index(rel)]
        (ax, ay), (bx, by) = scene.objects[a].center, scene.objects[b].center
        assert {"left": ax < bx, "right": ax > bx, "above": ay < by, "below": ay > by}[rel]


def test_answers_are_true_to_the_scene():
    seen = set()
    for scene in generate_scenes(200, 6):
        objs = scene.objects
        for qa in scene.qa:
            seen.add(qa.type)
            assert all(w in VOCAB for w in qa.question.split()) and qa.answer in VOCAB
            if qa.type == "color":
                shape = qa.question.split()[-2]
                assert [o.color for o in objs if o.shape == shape] == [qa.answer]
            elif qa.type == "shape":
                color = qa.question.split()[-3]
                assert [o.shape for o in objs if o.color == color] == [qa.answer]
            elif qa.type == "count":
                assert qa.answer == ["zero", "one", "two", "three", "four", "five"][len(objs)]
            elif qa.type == "existence":
                color, shape = qa.question.split()[3:5]
                present = any(o.color == color and o.shape == shape for o in objs)
                assert qa.answer == ("yes" if present else "no")
                assert (qa.object_ids != []) == present
            elif qa.type == "position":
                assert objs[qa.object_ids[0]].shape == qa.answer
    assert seen == {"color", "shape", "count", "existence", "position"}


def test_coco_round_trip(tmp_path):
    scenes = generate_scenes(12, 7, SceneConfig(occluders=True))
    path = write_coco(scenes, tmp_path)
    assert path.read_bytes() == write_coco(scenes, tmp_path / "again").read_bytes()
    loaded = load_coco(path)
    assert len(loaded) == 12
    for scene, item in zip(scenes, loaded):
        assert np.array_equal(item.load_image(), scene.image)
        assert np.array_equal(item.masks, np.stack([o.mask for o in scene.objects]))
        assert item.tokens == scene.caption_tokens and item.word_links == scene.word_links
        assert [q["object_indices"] for q in item.qa] == [q.object_ids for q in scene.qa]
        assert list(item.categories) == [o.category_id for o in scene.objects]


def _bfs(grid, start, goal):
    h, w = grid.shape
    dist = {start: 0}
    queue = deque([start])
    while queue:
        cell = queue.popleft()
        if cell == goal:
            return dist[cell]
        for dr, dc in MOVES:
            r, c = cell[0] + dr, cell[1] + dc
            if 0 <= r < h and 0 <= c < w and grid[r, c] != WALL and (r, c) not in dist:
                dist[(r, c)] = dist[cell] + 1
                queue.append((r, c))
    return None


def test_gridworld_optimal_action_is_a_shortest_path_step():
    for seed in range(60):
        state = generate_grid(seed, GridConfig())
        dr, dc = MOVES[state.optimal_action]
        nxt = (state.agent[0] + dr, state.agent[1] + dc)
        assert state.grid[nxt] != WALL
        assert _bfs(state.grid, nxt, state.goal) == _bfs(state.grid, state.agent, state.goal) - 1
        assert state.agent in state.decisive_cells and state.goal in state.decisive_cells
        assert int(np.argmax(state.q_values)) == state.optimal_action
        assert state.obs.shape == (3, 7, 7) and len(ACTIONS) == 4
