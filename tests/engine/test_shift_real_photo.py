"""The ``-shift`` methods on a real photo (bus.jpg, 810 x 1080, not square) at real input sizes:
the boxes are the predictor's, the classes those of the one-pass call, the maps at the photo's
size, the shifts those of the model's own input (letterbox / resize), the model untouched."""

from __future__ import annotations

import ast

import torch
from modelstate import assert_same_state, snapshot
from yolo_models import BUS, predicted, yolo

import mmcam


def test_layercam_shift_on_yolo_at_640_keeps_the_predictors_boxes():
    model = yolo("yolov8n.yaml")
    before = snapshot(model.model)
    exp = mmcam.explain_detections(model, BUS, max_boxes=3, conf=0.25, method="layercam-shift")
    assert_same_state(before, snapshot(model.model))
    boxes = predicted(model, BUS, max_det=3, conf=0.25).boxes
    assert len(exp.items) == len(boxes) >= 2
    torch.testing.assert_close(torch.tensor(exp.meta["boxes"]), boxes.xyxy, atol=0.5, rtol=0)
    assert exp.meta["class_ids"] == boxes.cls.int().tolist()
    assert exp.maps.shape == (len(boxes), *BUS.shape[:2]) and torch.isfinite(exp.maps).all() and float(exp.maps.amax()) == 1.0
    assert exp.method == "layercam-shift" and exp.layers[-1].startswith("mean over input shifts [(0, 0)")
    plain = mmcam.explain_detections(model, BUS, max_boxes=3, conf=0.25, method="layercam")
    torch.testing.assert_close(exp.scores, plain.scores)  # the scores are the unshifted photo's
    assert not torch.allclose(exp.maps, plain.maps)


def test_gradcam_shift_on_a_resnet_at_224_follows_the_non_square_input():
    from torchvision.models import resnet18

    torch.manual_seed(0)
    model = resnet18(num_classes=10).eval()
    before = snapshot(model)
    exp = mmcam.explain_classification(model, BUS, topk=2, method="gradcam-shift")
    assert_same_state(before, snapshot(model))
    plain = mmcam.explain_classification(model, BUS, topk=2, method="gradcam")
    assert exp.meta["classes"] == plain.meta["classes"] and exp.meta["probabilities"] == plain.meta["probabilities"]
    assert exp.maps.shape == (2, *BUS.shape[:2]) and torch.isfinite(exp.maps).all()
    shifts = ast.literal_eval(exp.layers[-1].removeprefix("mean over input shifts "))  # the (dy, dx) grid, as the call reports it
    assert len(shifts) == 9 and {dy for dy, _ in shifts} != {dx for _, dx in shifts}  # a portrait input: other cells per axis
