"""The zoo DETR's per-box maps point at the detected object on fresh scenes.

Each kept box is matched to the ground-truth object it overlaps most (IoU >= 0.5, the same
rule as ``bench/localization.py`` for YOLO); the pointing game (Zhang et al., ECCV 2016)
asks whether the map's maximum lies on that object's exact mask, beside a centre-Gaussian
baseline on the same boxes.
"""

from __future__ import annotations

import pytest
import torch

from mmcam import zoo
from mmcam.evaluation.cases import _iou  # the matching rule the evaluation uses

SEED = 616161


def test_detr_boxes_point_at_their_objects():
    from mmcam.data import SceneConfig, generate_scenes
    from mmcam.metrics import pointing_game
    from mmcam.metrics.baselines import centre_gaussian
    from mmcam.tasks import explain_detections

    if "detr" not in zoo.available():
        pytest.fail("zoo model 'detr' is expected in this build")
    model, processor = zoo.load("detr")
    maps, masks, boxes = [], [], 0
    for scene in generate_scenes(20, SEED, SceneConfig(background="textured")):
        exp = explain_detections(model, scene.image, processor=processor)
        assert exp.maps.shape[-2:] == scene.image.shape[:2]
        gt = [(o.box[0], o.box[1], o.box[0] + o.box[2], o.box[1] + o.box[3]) for o in scene.objects]
        for k, box in enumerate(exp.meta["boxes"]):
            boxes += 1
            best = max(range(len(gt)), key=lambda i: _iou(box, gt[i]))
            if _iou(box, gt[best]) >= 0.5:
                maps.append(exp.maps[k])
                masks.append(torch.from_numpy(scene.objects[best].mask))
    assert len(maps) >= 30 and len(maps) >= 0.9 * boxes  # the boxes themselves are right
    maps_t, masks_t = torch.stack(maps), torch.stack(masks)
    pointing = float(pointing_game(maps_t, masks_t).mean())
    centre = float(pointing_game(centre_gaussian(len(maps), *masks_t.shape[-2:]), masks_t).mean())
    assert pointing >= BAR and pointing >= centre + 0.3, (pointing, centre)


BAR = 0.5
