"""YOLO: one map per kept box from one forward, with the scores ultralytics reports."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import mmcam
from mmcam.errors import InputError
from mmcam.tasks import explain_detections
from mmcam.targets import DetectionBoxScore
from modelstate import assert_same_state, snapshot

ultralytics = pytest.importorskip("ultralytics")


@pytest.fixture(scope="module")
def yolo():
    torch.manual_seed(0)
    model = ultralytics.YOLO("yolov8n.yaml")  # random init, built from the yaml: no download
    with torch.no_grad():  # the head's prior bias makes every class tie at init; break the ties
        for branch in model.model.model[-1].cv3:
            branch[-1].bias.add_(torch.randn_like(branch[-1].bias) * 2 + 4)
    return model


IMAGE = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)


def test_one_map_per_kept_box_with_ultralytics_confidences(yolo):
    before = snapshot(yolo.model)
    exp = explain_detections(yolo, IMAGE, conf=0.01, size=64, max_boxes=6)
    k = len(exp.items)
    assert 3 <= k <= 6 and exp.maps.shape == (k, 64, 64)
    assert torch.isfinite(exp.maps).all() and (exp.maps.flatten(1).std(1) > 0).sum() >= k - 1  # random init: a map may be all negative
    # the explained logit of each kept box is the confidence NMS reports for it
    torch.testing.assert_close(exp.scores.sigmoid(), torch.tensor(exp.meta["confidences"]), rtol=1e-4, atol=1e-7)
    assert yolo.model.training  # YOLO builds its inner model in train mode; it stays so
    assert exp.layers == ["model.2", "model.15", "model.18", "model.21"] and exp.method == "layercam"
    assert_same_state(before, snapshot(yolo.model))


def test_scores_equal_ultralytics_predictor(yolo):
    """Against ultralytics' own predictor on the same image (BGR numpy, as it expects)."""
    exp = explain_detections(yolo, IMAGE, conf=0.01, iou=0.45, size=64, max_boxes=4)
    results = yolo.predict(source=IMAGE[..., ::-1].copy(), imgsz=64, conf=0.01, iou=0.45, max_det=4, verbose=False, device="cpu")
    theirs = results[0].boxes
    torch.testing.assert_close(exp.scores.sigmoid(), theirs.conf.float(), rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(torch.tensor(exp.meta["boxes"]), theirs.xyxy.float(), rtol=1e-3, atol=0.05)
    assert exp.meta["class_ids"] == [int(c) for c in theirs.cls.tolist()]


def test_box_maps_equal_single_box_runs(yolo):
    exp = explain_detections(yolo, IMAGE, conf=0.01, size=64, max_boxes=4)
    inner = yolo.model
    x = torch.from_numpy(IMAGE.astype(np.float32) / 255).permute(2, 0, 1)[None]
    from mmcam.adapters.ultralytics import default_layers, eval_mode

    for k, (index, cls) in enumerate(zip(exp.meta["raw_indices"], exp.meta["class_ids"])):
        with eval_mode(inner):
            alone = mmcam.CAM(inner, default_layers(inner), method="layercam")(x, [DetectionBoxScore([index], [cls])])
        torch.testing.assert_close(exp.maps[k], alone.maps[0, 0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(exp.scores[k], alone.scores[0, 0])


def test_nothing_to_explain_is_not_a_crash(yolo):
    exp = explain_detections(yolo, IMAGE, conf=0.9, size=64)
    assert exp.items == [] and exp.maps.shape == (0, 64, 64)
    assert "nothing to explain" in exp.meta["note"]


def test_unsupported_model_says_what_to_do():
    import torchvision

    with pytest.raises(InputError, match="ultralytics YOLO.*DetectionBoxScore"):
        explain_detections(torchvision.models.resnet18(), IMAGE)
