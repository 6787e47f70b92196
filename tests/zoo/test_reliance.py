"""Deleting objects by exact re-rendering, and the zoo's reliance on the referred object."""

from __future__ import annotations

import numpy as np
import pytest

from mmcam import zoo
from mmcam.data import SceneConfig, classification_config, generate_scenes
from mmcam.errors import InputError
from mmcam.zoo.reliance import measure, render_without, scene_layers

SEED = 616_161


@pytest.mark.parametrize(
    "config", [SceneConfig(background="cluttered"), SceneConfig(background="textured", min_gap=-4), classification_config(background="cluttered")]
)
def test_rerender_reproduces_every_scene_exactly(config):
    for scene in generate_scenes(20, SEED, config):
        assert np.array_equal(render_without(scene, config), scene.image)


def test_deleting_an_object_changes_exactly_its_pixels_to_background():
    config = SceneConfig(min_objects=2, background="cluttered")
    for scene in generate_scenes(20, SEED, config):
        canvas, blobs = scene_layers(scene, config)
        assert len(blobs) == config.n_distractors
        image = render_without(scene, config, objects=[0])
        changed = (image != scene.image).any(-1)
        assert np.array_equal(changed, scene.objects[0].mask)  # objects do not overlap by default
        under = canvas.copy()
        for mask, rgb in blobs:
            under[mask] = rgb
        assert np.array_equal(image[changed], under[changed])
        blob_gone = render_without(scene, config, blobs=[0])
        assert ((blob_gone != scene.image).any(-1) <= blobs[0][0]).all()  # only the blob's pixels change


def test_occluded_scenes_are_refused():
    config = SceneConfig(occluders=True)
    with pytest.raises(InputError, match="occluders=False"):
        render_without(generate_scenes(1, SEED, config)[0], config)


@pytest.mark.parametrize("name", ["segmenter", "qnet"])
def test_predictions_rely_on_the_referred_object(name):
    if name not in zoo.available():
        pytest.fail(f"zoo model {name!r} is expected in this build")
    rates = measure(name, n=24, seed=SEED)
    assert rates["cases"] >= 5
    assert rates["referred_change"] >= 0.8 and rates["distractor_change"] <= 0.2, rates
