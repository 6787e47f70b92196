"""YOLO OBB models (yolo11n-obb, yolo26n-obb, random init) on real photos at imgsz 1024 (DOTA's):
the explained rotated boxes are exactly the OBB predictor's (``Results.obb``: xywhr, corners,
enclosing boxes, classes, confidences, photo pixels), rotated NMS by default and the one-to-one
top-k with ``nms=False``; one map per box; K boxes at once = one at a time; the model untouched;
overlays draw the boxes rotated."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from modelstate import assert_same_state, snapshot
from yolo_models import BUS, ZIDANE, predicted, yolo

import mmcam
from mmcam.errors import InputError
from mmcam.io import load_image


def same_rotated(exp, obb, n):
    assert len(exp.items) == len(obb) == n
    torch.testing.assert_close(torch.tensor(exp.meta["rotated_boxes"]), obb.xywhr, atol=1e-3, rtol=0)  # rounded to 1e-4
    torch.testing.assert_close(torch.tensor(exp.meta["polygons"]), obb.xyxyxyxy, atol=0.01, rtol=0)
    torch.testing.assert_close(torch.tensor(exp.meta["boxes"]), obb.xyxy, atol=0.01, rtol=0)
    torch.testing.assert_close(torch.tensor(exp.meta["confidences"]), obb.conf, atol=1e-6, rtol=1e-5)
    assert exp.meta["class_ids"] == obb.cls.int().tolist()


@pytest.mark.parametrize(("cfg", "nms", "size"), [("yolo11n-obb.yaml", None, 1024), ("yolo26n-obb.yaml", False, 640)])
def test_obb_rotated_boxes_equal_the_predictor(cfg, nms, size):
    model = yolo(cfg)  # 1024: DOTA's size; 640: the yaml's default (time). yolo26n-obb's NMS path is yolo11n-obb's code
    before = snapshot(model.model)
    exp = mmcam.explain_detections(model, BUS, conf=0.05, max_boxes=3, size=size, nms=nms, layers=[f"model.{i}" for i in model.model.model[-1].f])
    same_rotated(exp, predicted(model, BUS, conf=0.05, max_det=3, imgsz=size, nms=nms).obb, 3)
    assert exp.meta["input_size"][0] == size and exp.maps.shape == (3, *BUS.shape[:2]) and exp.maps.amax((1, 2)).min() > 0
    assert len(set(exp.meta["raw_indices"])) > 1
    assert_same_state(before, snapshot(model.model))


def test_obb_k_at_once_equals_one_at_a_time_and_overlays_are_rotated():
    from mmcam.adapters.ultralytics_obb import YoloOBB

    model = yolo("yolo11n-obb.yaml")
    layers = [f"model.{i}" for i in model.model.model[-1].f]
    exp = mmcam.explain_detections(model, ZIDANE, conf=0.05, max_boxes=3, layers=layers)
    family = YoloOBB(model, conf=0.05, max_det=3)
    prepared = family.prepare(load_image(ZIDANE))
    x, ids, classes = prepared.inputs, exp.meta["raw_indices"], exp.meta["class_ids"]

    def one(k):  # box k alone: its class logit at its anchor, a plain (B,) target
        return lambda output: output[1]["scores"][:, classes[k], ids[k]]

    with family.context():
        singles = mmcam.CAM(family.module, layers, method="layercam")(x, [one(k) for k in range(3)])
    torch.testing.assert_close(singles.scores[0], exp.scores, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(prepared.frame.maps_to_photo(singles.maps[0]), exp.maps, atol=1e-5, rtol=1e-4)
    # the overlay's outline runs along the rotated box's edges, not its upright enclosing box
    outline = np.all(exp.overlays()[0] == (255, 45, 85), axis=-1)
    corners = np.asarray(exp.meta["polygons"][0])
    assert abs(float(exp.meta["rotated_boxes"][0][4]) % (np.pi / 2)) > 0.05  # a visibly rotated box
    for a, b in zip(corners, np.roll(corners, -1, 0)):
        x, y = np.round((a + b) / 2).astype(int)  # each edge's midpoint lies on the outline (within a pixel)
        if 1 <= x < ZIDANE.shape[1] - 1 and 1 <= y < ZIDANE.shape[0] - 1:
            assert outline[y - 1 : y + 2, x - 1 : x + 2].any()
    upright = np.asarray(exp.meta["boxes"][0]).round().astype(int)  # the enclosing box's corner is off the rotated outline
    assert not outline[max(upright[1], 0) + 1, max(upright[0], 0) + 1]
    from mmcam.render.report import render_report

    page = render_report([exp])  # the report's clickable shapes are the rotated boxes
    assert page.count("<polygon data-item-ref=") == 3 and "<rect data-item-ref=" not in page


def test_a_prompt_free_yoloe_is_refused_with_what_to_load_instead():
    from yolo_models import ultralytics

    model = ultralytics.YOLOE("yoloe-11s-seg.yaml")
    inner, head = model.model, model.model.model[-1]
    inner.args = {"imgsz": 64}
    vocab = torch.nn.ModuleList(torch.nn.Conv2d(branch[-1].in_channels, 5, 1) for branch in head.cv3)  # a 5-word vocabulary
    inner.eval().set_vocab(vocab, [f"w{i}" for i in range(5)])  # what ultralytics builds a *-pf model with
    with pytest.raises(InputError, match=r"prompt-free YOLOE.*LRPC.*not \*-pf\.pt"):
        mmcam.explain_detections(model, BUS)
