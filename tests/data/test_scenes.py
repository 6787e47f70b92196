"""Scenes: the ground truth agrees with the pixels, and captions/answers are true to the scene.

Every check recomputes the fact from the image or the objects' attributes, never from the
generator's own helpers.
"""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pytest

from mmcam.data import (
    CATEGORIES,
    COLORS,
    SHAPES,
    VOCAB,
    Scene,
    SceneConfig,
    classification_config,
    generate_scene,
    generate_scenes,
)
from mmcam.errors import InputError

CONFIGS = {
    "default": SceneConfig(),
    "textured+occluders": SceneConfig(background="textured", occluders=True),
    "cluttered-4": SceneConfig(background="cluttered", max_objects=4),
    "overlapping": SceneConfig(min_objects=2, max_objects=3, min_gap=-8, occluders=True, distractors=3),
    "classification": classification_config(background="cluttered"),
}
COUNTS = ("zero", "one", "two", "three", "four", "five")
RELATION_WORDS = {"left", "right", "above", "below", "of"}


def _same(a: Scene, b: Scene) -> bool:
    return (
        a.image.tobytes() == b.image.tobytes()
        and a.semantic.tobytes() == b.semantic.tobytes()
        and a.caption == b.caption
        and a.word_links == b.word_links
        and a.qa == b.qa
        and all(x.mask.tobytes() == y.mask.tobytes() and x.box == y.box for x, y in zip(a.objects, b.objects))
    )


def test_same_seed_same_bytes_different_seed_different_image():
    for config in CONFIGS.values():
        assert _same(generate_scene(5, config), generate_scene(5, config))
        assert generate_scene(5, config).image.tobytes() != generate_scene(6, config).image.tobytes()
    batch = generate_scenes(4, 9)
    assert all(_same(scene, generate_scene(9 * 100_003 + i)) for i, scene in enumerate(batch))
    assert len({s.image.tobytes() for s in generate_scenes(50, 1)}) == 50


def test_image_and_maps_have_the_documented_types():
    scene = generate_scene(0)
    assert scene.image.shape == (64, 64, 3) and scene.image.dtype == np.uint8
    assert scene.semantic.shape == scene.instance.shape == (64, 64)
    assert scene.semantic.dtype == np.int64
    for obj in scene.objects:
        assert obj.mask.dtype == bool and obj.mask.shape == (64, 64)
        assert obj.category_id == SHAPES.index(obj.shape) + 1 == CATEGORIES[obj.category_id - 1]["id"]
        assert CATEGORIES[obj.category_id - 1]["name"] == obj.shape
        assert obj.size == 2 * obj.radius and 14 <= obj.size <= 22


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_masks_are_exactly_the_pixels_of_each_colour(config):
    for scene in generate_scenes(60, 3, config):
        assert config.min_objects <= len(scene.objects) <= config.max_objects
        claimed = np.zeros(scene.image.shape[:2], bool)
        for obj in scene.objects:
            assert obj.mask.any()
            assert not (claimed & obj.mask).any()  # visible masks are disjoint
            claimed |= obj.mask
        for name, rgb in COLORS.items():  # a pixel has colour c  <=>  it is in a mask of a c-object
            has_color = (scene.image == rgb).all(-1)
            union = np.zeros_like(claimed)
            for obj in scene.objects:
                if obj.color == name:
                    union |= obj.mask
            assert np.array_equal(has_color, union)


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_boxes_are_tight_and_maps_agree_with_masks(config):
    for scene in generate_scenes(60, 4, config):
        expected_semantic = np.zeros(scene.semantic.shape, np.int64)
        expected_instance = np.zeros(scene.instance.shape, np.int64)
        for i, obj in enumerate(scene.objects):
            ys, xs = np.nonzero(obj.mask)
            assert obj.box == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
            expected_semantic[obj.mask] = SHAPES.index(obj.shape) + 1
            expected_instance[obj.mask] = i + 1
        assert np.array_equal(scene.semantic, expected_semantic)
        assert np.array_equal(scene.instance, expected_instance)


def _grow(mask: np.ndarray) -> np.ndarray:
    """The mask plus its 4-neighbours."""
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


def test_occluders_cut_objects_and_masks_exclude_them():
    for scene in generate_scenes(40, 5, SceneConfig(occluders=True)):
        bar = (scene.image == (70, 70, 70)).all(-1)
        assert bar.any()
        assert not any((obj.mask & bar).any() for obj in scene.objects)
        assert any((_grow(obj.mask) & bar).any() for obj in scene.objects)  # the bar lies on an object


def test_overlapping_objects_touch_and_stay_exact():
    touching = 0
    for scene in generate_scenes(80, 6, CONFIGS["overlapping"]):
        masks = [o.mask for o in scene.objects]
        touching += any((_grow(a) & b).any() for i, a in enumerate(masks) for b in masks[i + 1 :])
    # overlaps really happen; test_masks_are_exactly_the_pixels_of_each_colour covers this config
    assert touching > 10


def test_later_objects_leave_earlier_ones_mostly_visible():
    nominal_area = {"circle": 3.14159, "square": 1.7**2, "triangle": 1.8, "diamond": 2 * 1.1**2}  # × r²
    config = SceneConfig(min_objects=3, max_objects=3, min_gap=-20, relation_margin=0, min_visible=0.6)
    squeezed = 0
    for scene in generate_scenes(60, 16, config):
        for obj in scene.objects:
            share = obj.mask.sum() / (nominal_area[obj.shape] * obj.radius**2)
            assert share > 0.6 - 0.1  # pixel rounding of the nominal area
            squeezed += share < 0.9
    assert squeezed > 10  # the config really hides parts of objects


def test_backgrounds_and_clutter_never_take_an_object_colour():
    for background in ("plain", "textured", "cluttered"):
        for scene in generate_scenes(30, 7, SceneConfig(background=background, occluders=True)):
            outside = scene.image[scene.instance == 0]
            for rgb in COLORS.values():
                assert not (outside == rgb).all(-1).any()
            grey = (outside[:, 0] == outside[:, 1]) & (outside[:, 1] == outside[:, 2])
            if background == "textured":
                assert grey.all()
            if background == "cluttered":
                assert (~grey).any()  # slate-blue clutter blobs are present
    assert SceneConfig(background="cluttered").n_distractors == 4
    assert SceneConfig(background="cluttered", distractors=0).n_distractors == 0


def test_caption_words_are_in_vocab_and_link_to_matching_objects():
    for scene in generate_scenes(300, 8):
        assert len(scene.caption_tokens) == len(scene.word_links)
        assert scene.caption == " ".join(scene.caption_tokens)
        for word, links in zip(scene.caption_tokens, scene.word_links):
            assert word in VOCAB and word == word.lower()
            if word in COLORS:
                assert len(links) == 1 and scene.objects[links[0]].color == word
            elif word in SHAPES:
                assert len(links) == 1 and scene.objects[links[0]].shape == word
            elif word in RELATION_WORDS:
                assert len(scene.objects) == 2 and sorted(links) == [0, 1]
            else:
                assert word in ("a", ",", "and") and links == []
        assert {i for links in scene.word_links for i in links} == set(range(len(scene.objects)))
        # each object is mentioned by exactly one "<colour> <shape>" pair
        mentions = [links[0] for word, links in zip(scene.caption_tokens, scene.word_links) if word in SHAPES]
        assert sorted(mentions) == list(range(len(scene.objects)))


def _true_relation(a, b) -> str:
    dx, dy = a.center[0] - b.center[0], a.center[1] - b.center[1]
    if abs(dx) > abs(dy):
        return "left" if dx < 0 else "right"
    return "above" if dy < 0 else "below"


def test_two_object_captions_are_true_and_decidable():
    colors = list(COLORS)
    for scene in generate_scenes(300, 9, SceneConfig(min_objects=2, max_objects=2)):
        tokens = scene.caption_tokens
        first, second = scene.word_links[1][0], scene.word_links[-1][0]
        rel = tokens[3]
        assert scene.word_links[3] == [first, second]
        assert rel == _true_relation(scene.objects[first], scene.objects[second])
        assert tokens[4:5] == (["of"] if rel in ("left", "right") else ["a"])
        a, b = scene.objects[first], scene.objects[second]
        assert (colors.index(a.color), SHAPES.index(a.shape)) < (colors.index(b.color), SHAPES.index(b.shape))
        dx, dy = abs(a.center[0] - b.center[0]), abs(a.center[1] - b.center[1])
        assert abs(dx - dy) >= 4.0  # never near the diagonal where left/above would be a toss-up


def test_three_object_captions_go_left_to_right():
    for scene in generate_scenes(200, 10, SceneConfig(min_objects=3, max_objects=3)):
        order = [links[0] for word, links in zip(scene.caption_tokens, scene.word_links) if word in SHAPES]
        xs = [scene.objects[i].center[0] for i in order]
        assert all(b - a >= 4.0 for a, b in zip(xs, xs[1:]))
        assert scene.caption_tokens.count(",") == 1 and scene.caption_tokens.count("and") == 1


def test_answers_are_true_to_the_scene():
    types, existence = Counter(), Counter()
    for scene in generate_scenes(300, 11):
        objs = scene.objects
        asked = {qa.question for qa in scene.qa}
        assert len(asked) == len(scene.qa)  # no duplicate questions
        for qa in scene.qa:
            types[qa.type] += 1
            words = qa.question.split()
            assert all(w in VOCAB for w in words) and qa.answer in VOCAB and words[-1] == "?"
            if qa.type == "color":
                matches = [i for i, o in enumerate(objs) if o.shape == words[-2]]
                assert len(matches) == 1 and qa.object_ids == matches and objs[matches[0]].color == qa.answer
            elif qa.type == "shape":
                matches = [i for i, o in enumerate(objs) if o.color == words[-3]]
                assert len(matches) == 1 and qa.object_ids == matches and objs[matches[0]].shape == qa.answer
            elif qa.type == "count":
                assert qa.answer == COUNTS[len(objs)] and qa.object_ids == list(range(len(objs)))
            elif qa.type == "existence":
                color, shape = words[3:5]
                matches = [i for i, o in enumerate(objs) if (o.color, o.shape) == (color, shape)]
                assert qa.answer == ("yes" if matches else "no") and qa.object_ids == matches
                existence[qa.answer] += 1
            elif qa.type == "position":
                (a,) = qa.object_ids
                color, shape = words[-3:-1]
                (b,) = [i for i, o in enumerate(objs) if (o.color, o.shape) == (color, shape)]
                assert a != b and objs[a].shape == qa.answer
                assert words[2] == _true_relation(objs[a], objs[b])
            else:
                pytest.fail(f"unknown question type {qa.type}")
        # every unambiguous colour/shape question is asked
        assert types and sum(q.type == "color" for q in scene.qa) == sum([o.shape for o in objs].count(o.shape) == 1 for o in objs)
        assert sum(q.type == "shape" for q in scene.qa) == sum([o.color for o in objs].count(o.color) == 1 for o in objs)
    assert set(types) == {"color", "shape", "count", "existence", "position"}
    assert existence["yes"] == existence["no"] == 300  # balanced: one of each per scene


def test_label_is_the_largest_object_and_classification_has_one_object():
    for scene in generate_scenes(100, 12):
        largest = max(scene.objects, key=lambda o: int(o.mask.sum()))
        assert scene.label == largest.category_id
    labels = Counter(s.label for s in generate_scenes(400, 13, classification_config()))
    assert set(labels) == {1, 2, 3, 4} and min(labels.values()) > 60  # every class, roughly balanced


def test_restricted_vocabularies_and_bad_configs():
    config = SceneConfig(shapes=("circle", "square"), colors=("red", "blue"), max_objects=4)
    for scene in generate_scenes(50, 14, config):
        assert {o.shape for o in scene.objects} <= {"circle", "square"}
        assert {o.color for o in scene.objects} <= {"red", "blue"}
    bad = [
        {"background": "stripes"},
        {"max_objects": 6},
        {"min_objects": 3, "max_objects": 2},
        {"shapes": ("hexagon",)},
        {"colors": ()},
        {"image_size": 16},
        {"shapes": ("circle",), "colors": ("red",), "max_objects": 2},
    ]
    for overrides in bad:
        with pytest.raises(InputError):
            SceneConfig(**overrides)
    with pytest.raises(InputError, match="lower max_objects"):
        generate_scene(0, SceneConfig(image_size=32, min_objects=5, max_objects=5))


def test_a_thousand_scenes_take_a_few_seconds():
    start = time.perf_counter()
    generate_scenes(1000, 15, SceneConfig(background="cluttered", occluders=True))
    assert time.perf_counter() - start < 10.0
