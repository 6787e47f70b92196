"""The zoo's YOLO26 (end-to-end head) and pose model, and the scenes' keypoints they are measured on."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import mmcam
from mmcam import zoo
from mmcam.data import SceneConfig, generate_scenes
from mmcam.data.keypoints import KEYPOINT_NAMES, NUM_KEYPOINTS, object_keypoints, outline_points, scene_keypoints
from mmcam.data.raster import shape_mask

SEED = 616_161  # fresh: neither a training seed nor the recipes' EVAL_SEED


def _needs(name):
    if name not in zoo.available():
        pytest.fail(f"zoo model {name!r} is expected in this build but missing")


def _bench():
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bench import localization  # the benchmark's own matching and defaults

    return localization


def test_keypoints_hand_computed():
    """A circle of radius 8 at (20, 20): the full mask's pixel centres nearest to (20, 12),
    (28, 20), (20, 28), (12, 20); ties go to the first pixel in row-major order."""
    mask = shape_mask("circle", 20.0, 20.0, 8, 64)
    obj = SimpleNamespace(shape="circle", center=(20.0, 20.0), radius=8, mask=mask)
    expected = [[19.5, 12.5, 2], [27.5, 19.5, 2], [19.5, 27.5, 2], [12.5, 19.5, 2]]
    np.testing.assert_array_equal(object_keypoints(obj, 64), expected)
    hidden = mask.copy()
    hidden[12, 19] = False  # an occluder over the top keypoint's pixel
    assert object_keypoints(SimpleNamespace(**{**vars(obj), "mask": hidden}), 64)[:, 2].tolist() == [0, 2, 2, 2]
    np.testing.assert_allclose(outline_points("square", 10, 10, 10), [[1.5, 1.5], [18.5, 1.5], [18.5, 18.5], [1.5, 18.5]])


def test_keypoints_lie_on_the_shapes():
    """Every keypoint is a pixel of its object's full shape, visible exactly when its pixel is in
    the visible mask, and no other pixel of the shape is nearer its outline point."""
    scenes = generate_scenes(20, SEED, SceneConfig(occluders=True))
    hidden = 0
    for scene in scenes:
        kpts = scene_keypoints(scene)
        assert kpts.shape == (len(scene.objects), NUM_KEYPOINTS, 3)
        for obj, pts in zip(scene.objects, kpts):
            assert len(KEYPOINT_NAMES[obj.shape]) == NUM_KEYPOINTS
            full = shape_mask(obj.shape, *obj.center, obj.radius, 64)
            ys, xs = np.nonzero(full)
            for (x, y, v), (px, py) in zip(pts, outline_points(obj.shape, *obj.center, obj.radius)):
                col, row = int(x - 0.5), int(y - 0.5)
                assert full[row, col] and v == (2 if obj.mask[row, col] else 0)
                assert (x - px) ** 2 + (y - py) ** 2 <= ((xs + 0.5 - px) ** 2 + (ys + 0.5 - py) ** 2).min() + 1e-9
                hidden += v == 0
    assert hidden > 0  # occluding bars hide some keypoints


@pytest.fixture(scope="module")
def yolo26():
    _needs("yolo26")
    model, processor = zoo.load("yolo26")
    return model


def test_yolo26_is_yolo26_and_finds_the_objects(yolo26):
    from mmcam.adapters.ultralytics_e2e import has_one2one
    from mmcam.zoo.quality import yolo_quality

    assert has_one2one(yolo26) and all(p.dtype == torch.float32 for p in yolo26.model.parameters())
    assert yolo_quality(yolo26, n=30, seed=SEED)["mAP50"] >= 0.85


@pytest.mark.parametrize("nms", [False, None])
def test_yolo26_boxes_are_the_predictors_and_point_at_their_objects(yolo26, nms):
    """Through ``explain_detections`` (one-to-one head with ``nms=False``, NMS by default): the
    kept boxes equal ``predict``'s, and the maps' maxima fall on their objects (exact and ±4 px)."""
    from mmcam.metrics import pointing_game

    scenes = generate_scenes(8, SEED, SceneConfig(background="textured"))
    for scene in scenes[:2]:
        exp = mmcam.explain_detections(yolo26, scene.image, nms=nms)
        kwargs = {} if nms is None else {"nms": nms}
        yolo26.predictor = None  # ultralytics keeps a predictor (and its nms) from the last predict() call
        boxes = yolo26.predict(scene.image[..., ::-1].copy(), verbose=False, device="cpu", **kwargs)[0].boxes
        torch.testing.assert_close(torch.tensor(exp.meta["boxes"]), boxes.xyxy, atol=0.01, rtol=0)
        assert len(exp.maps) == len(boxes)
    maps, masks = _bench().TASKS["yolo26-e2e" if nms is False else "yolo26"](scenes, "layercam")
    assert len(maps) >= 12
    maps, masks = torch.stack(maps), torch.stack(masks)
    # 60-200 scenes in docs/zoo.md: exact 0.959-0.992 (edge="reflect"; before, most misses peaked on the border)
    assert float(pointing_game(maps, masks).mean()) >= 0.85 and float(pointing_game(maps, masks, tolerance=4).mean()) >= 0.95


def test_pose_model_keypoints_and_maps():
    """The pose model's kept objects and keypoints are the predictor's; one map per object plus
    one per keypoint; its keypoints land within 3 px on fresh scenes (PCK)."""
    _needs("pose")
    from mmcam.zoo.recipes.pose import pose_quality

    model, _ = zoo.load("pose")
    scene = generate_scenes(1, SEED, SceneConfig(background="textured"))[0]
    exp = mmcam.explain_pose(model, scene.image)
    result = model.predict(scene.image[..., ::-1].copy(), verbose=False, device="cpu")[0]
    torch.testing.assert_close(torch.tensor(exp.meta["keypoints"]), result.keypoints.data, atol=0.01, rtol=0)
    assert len(exp.maps) == len(result.boxes) * (1 + NUM_KEYPOINTS) > 0
    quality = pose_quality(model, n=24, seed=SEED)
    assert quality["mAP50"] >= 0.85 and quality["PCK@3px"] >= 0.8
