"""YOLO: one map per kept box from one forward, with the scores ultralytics reports."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from modelstate import assert_same_state, snapshot

import mmcam
from mmcam.errors import InputError
from mmcam.targets import DetectionBoxScore
from mmcam.tasks import explain_detections

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
            alone = mmcam.CAM(inner, default_layers(inner), method="layercam", edge="reflect")(x, [DetectionBoxScore([index], [cls])])
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


def test_box_term_by_hand_on_yolo_and_detr_outputs():
    from types import SimpleNamespace

    from mmcam.targets.detection import candidate_boxes, paired_iou

    a, b = torch.tensor([0.0, 0, 2, 2]), torch.tensor([1.0, 1, 3, 3])
    assert paired_iou(a, b).item() == pytest.approx(1 / 7)
    assert paired_iou(a, a).item() == 1 and paired_iou(a, torch.tensor([5.0, 5, 6, 6])).item() == 0
    # ultralytics eval output: y (B, 4 + nc, A) with centre/size boxes, raw["scores"] the class logits
    logits = torch.tensor([[[0.5, 1.0, -2.0], [3.0, 0.0, 1.5]]])  # (1, nc=2, A=3)
    boxes = torch.tensor([[[1.0, 5.0, 9.0], [1.0, 5.0, 9.0], [2.0, 2.0, 2.0], [2.0, 2.0, 2.0]]])  # cx, cy, w, h rows
    y = torch.cat([boxes, logits.sigmoid()], 1)
    target = DetectionBoxScore([0, 2], [1, 0], box_weight=2.0)
    torch.testing.assert_close(target((y, {"scores": logits})), torch.tensor([[3.0 + 2, -2.0 + 2]]))  # IoU 1 with itself
    moved = boxes.clone()
    moved[:, 0, 0] += 1.0  # box 0 moves right by 1 px: [0, 0, 2, 2] -> [1, 0, 3, 2], IoU 2 / 6
    y2 = torch.cat([moved, logits.sigmoid()], 1)
    torch.testing.assert_close(target((y2, {"scores": logits})), torch.tensor([[3.0 + 2 / 3, -2.0 + 2]]))
    # DETR family: pred_boxes (B, Q, 4) normalised centre/size; logits (B, Q, C)
    detr_out = SimpleNamespace(logits=logits.transpose(1, 2), pred_boxes=torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.1, 0.1], [0.0, 0.0, 0.0, 0.0]]]))
    torch.testing.assert_close(candidate_boxes(detr_out)[0, 0], torch.tensor([0.4, 0.4, 0.6, 0.6]))
    query = DetectionBoxScore([0], [1], box_weight=1.0)
    torch.testing.assert_close(query(detr_out), torch.tensor([[3.0 + 1]]))
    with pytest.raises(mmcam.errors.TargetError, match="box_weight=0"):
        DetectionBoxScore([0], [0], box_weight=1.0)(SimpleNamespace(logits=torch.zeros(1, 2, 2)))


def test_box_term_leaves_gradient_maps_and_moves_perturbation_maps(yolo):
    plain = explain_detections(yolo, IMAGE, conf=0.01, size=64, max_boxes=3)
    boxed = explain_detections(yolo, IMAGE, conf=0.01, size=64, max_boxes=3, box_weight=1.0)
    assert boxed.meta["raw_indices"] == plain.meta["raw_indices"]
    torch.testing.assert_close(boxed.scores, plain.scores + 1.0)  # IoU 1 on the explained forward
    torch.testing.assert_close(boxed.maps, plain.maps)  # ... and its gradient is 0
    # a trained detector's boxes move on Score-CAM's masked inputs (a random one's barely do)
    from mmcam import zoo
    from mmcam.data import SceneConfig, generate_scenes

    trained, _ = zoo.load("yolo")
    scene = generate_scenes(1, 5, SceneConfig(min_objects=2, max_objects=2))[0]
    a = explain_detections(trained, scene.image, method="scorecam", layers="model.15")
    b = explain_detections(trained, scene.image, method="scorecam", layers="model.15", box_weight=1.0)
    assert len(a.items) >= 1 and b.meta["raw_indices"] == a.meta["raw_indices"]
    assert torch.isfinite(b.maps).all() and not torch.allclose(a.maps, b.maps, atol=1e-3)


def test_yolo11_boxes_match_its_predictor():
    torch.manual_seed(0)
    model = ultralytics.YOLO("yolo11n.yaml")  # C3k2 / C2PSA blocks: layers still found by structure
    with torch.no_grad():
        for branch in model.model.model[-1].cv3:
            branch[-1].bias.add_(torch.randn_like(branch[-1].bias) * 2 + 4)
    exp = explain_detections(model, IMAGE, conf=0.01, iou=0.45, size=64, max_boxes=4)
    theirs = model.predict(source=IMAGE[..., ::-1].copy(), imgsz=64, conf=0.01, iou=0.45, max_det=4, verbose=False, device="cpu")[0].boxes
    assert len(exp.items) == 4 and exp.layers == ["model.2", "model.16", "model.19", "model.22"]
    torch.testing.assert_close(exp.scores.sigmoid(), theirs.conf.float(), rtol=1e-4, atol=1e-7)
    assert exp.meta["class_ids"] == [int(c) for c in theirs.cls.tolist()]
