"""YOLO26 / YOLOv10 (end-to-end heads) and YOLO12 on real photos at 640: the explained boxes and
instance masks are exactly the predictor's — NMS by default, the one-to-one top-k with
``nms=False`` — in the photo's pixels; K boxes at once = one at a time; the model untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from modelstate import assert_same_state, snapshot
from yolo_models import BUS, ZIDANE, predicted, yolo

import mmcam
from mmcam.errors import InputError
from mmcam.io import load_image


def same_boxes(exp, boxes):
    assert len(exp.items) == len(boxes) >= 3
    torch.testing.assert_close(torch.tensor(exp.meta["boxes"]), boxes.xyxy, atol=0.5, rtol=0)  # rounded to 0.01
    assert exp.meta["class_ids"] == boxes.cls.int().tolist()
    torch.testing.assert_close(torch.tensor(exp.meta["confidences"]), boxes.conf, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("cfg", ["yolo26n.yaml", "yolov10n.yaml"])
@pytest.mark.parametrize("nms", [None, False])
def test_end_to_end_heads_equal_the_predictor(cfg, nms):
    model = yolo(cfg)
    before = snapshot(model.model)
    exp = mmcam.explain_detections(model, BUS, max_boxes=5, conf=0.25, nms=nms)
    same_boxes(exp, predicted(model, BUS, max_det=5, conf=0.25, nms=nms).boxes)
    assert len(set(exp.meta["confidences"])) > 1  # no ties: the order is the predictor's
    assert exp.maps.shape == (5, *BUS.shape[:2]) and exp.maps.amax((1, 2)).min() > 0
    assert_same_state(before, snapshot(model.model))


def test_one_to_one_maps_explain_the_one_to_one_logits_k_at_once_as_one_at_a_time():
    from mmcam.adapters.ultralytics_e2e import YoloEndToEnd
    from mmcam.targets.detection import DetectionBoxScore

    model = yolo("yolo26n.yaml")
    exp = mmcam.explain_detections(model, ZIDANE, max_boxes=3, conf=0.25, nms=False)
    assert len(exp.items) == 3
    family = YoloEndToEnd(model, conf=0.25, max_det=3)  # the fused copy predict(nms=False) runs
    prepared = family.prepare(load_image(ZIDANE))
    x, ids, classes = prepared.inputs, exp.meta["raw_indices"], exp.meta["class_ids"]
    with torch.no_grad(), family.context():
        logits = family.module(x)[1]["one2one"]["scores"][0, classes, ids]
    torch.testing.assert_close(exp.scores, logits, rtol=1e-5, atol=1e-5)  # the one-to-one class logits
    torch.testing.assert_close(logits.sigmoid(), torch.tensor(exp.meta["confidences"]), rtol=1e-6, atol=1e-7)

    def one_box(k):  # box k alone: the engine with a plain (B,) target on the one-to-one logits
        return lambda output: DetectionBoxScore([ids[k]], [classes[k]])((output[0], output[1]["one2one"]))[:, 0]

    with family.context():
        singles = mmcam.CAM(family.module, family.default_layers(x), method="layercam", edge=family.edge)(x, [one_box(k) for k in range(3)])
    torch.testing.assert_close(singles.scores[0], exp.scores, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(prepared.frame.maps_to_photo(singles.maps[0]), exp.maps, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("nms", [None, False])
def test_yolo26_seg_instance_masks_equal_the_predictor(nms):
    from ultralytics.utils.ops import scale_masks

    model = yolo("yolo26n-seg.yaml")
    before = snapshot(model.model)
    exp = mmcam.explain_segmentation(model, ZIDANE, max_instances=4, conf=0.25, nms=nms)
    result = predicted(model, ZIDANE, max_det=4, conf=0.25, nms=nms)
    assert len(exp.items) == len(result.boxes) >= 2
    assert exp.meta["classes"] == result.boxes.cls.int().tolist()
    torch.testing.assert_close(torch.tensor(exp.meta["boxes"]), result.boxes.xyxy, atol=0.5, rtol=0)
    want = scale_masks(result.masks.data[None].float(), ZIDANE.shape[:2])[0] > 0.5
    assert np.array_equal(np.stack(exp.regions), want.numpy())
    assert exp.maps.shape == (len(exp.items), *ZIDANE.shape[:2]) and exp.maps.amax((1, 2)).min() > 0
    assert_same_state(before, snapshot(model.model))


def test_yolo12_detect_equals_the_predictor():
    model = yolo("yolo12n.yaml")
    before = snapshot(model.model)
    exp = mmcam.explain_detections(model, ZIDANE, max_boxes=4, conf=0.25)
    same_boxes(exp, predicted(model, ZIDANE, max_det=4, conf=0.25).boxes)
    assert_same_state(before, snapshot(model.model))


def test_end_to_end_refuses_what_it_cannot_decode():
    model = yolo("yolo26n.yaml")
    with pytest.raises(InputError, match="nms=None"):
        mmcam.explain_detections(model, BUS, nms=False, candidates=([0], [0]))
    with pytest.raises(InputError, match="box_weight=0"):
        mmcam.explain_detections(model, BUS, nms=False, box_weight=1.0)
