"""YOLO segment models: explain_detections explains their boxes (mask coefficients are extra rows of y)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from modelstate import assert_same_state, snapshot

import mmcam
from mmcam.adapters.ultralytics import default_layers, eval_mode
from mmcam.errors import InputError
from mmcam.targets import DetectionBoxScore
from mmcam.tasks import explain_detections

ultralytics = pytest.importorskip("ultralytics")

IMAGE = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module", params=["yolov8n-seg.yaml", "yolo11n-seg.yaml"])
def yolo_seg(request):
    torch.manual_seed(0)
    model = ultralytics.YOLO(request.param)  # random init, built from the yaml: no download
    with torch.no_grad():  # the head's prior bias makes every class tie at init; break the ties
        for branch in model.model.model[-1].cv3:
            branch[-1].bias.add_(torch.randn_like(branch[-1].bias) * 2 + 4)
    return model


def test_segment_boxes_match_the_predictor(yolo_seg):
    before = snapshot(yolo_seg.model)
    exp = explain_detections(yolo_seg, IMAGE, conf=0.01, iou=0.45, size=64, max_boxes=4)
    k = len(exp.items)
    assert k >= 2 and exp.maps.shape == (k, 64, 64) and torch.isfinite(exp.maps).all()  # boxes with empty masks dropped
    assert max(exp.meta["class_ids"]) < 80  # NMS read the 80 classes, not the 32 mask coefficients
    results = yolo_seg.predict(source=IMAGE[..., ::-1].copy(), imgsz=64, conf=0.01, iou=0.45, max_det=4, verbose=False, device="cpu")
    theirs = results[0].boxes
    torch.testing.assert_close(exp.scores.sigmoid(), theirs.conf.float(), rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(torch.tensor(exp.meta["boxes"]), theirs.xyxy.float(), rtol=1e-3, atol=0.05)
    assert exp.meta["class_ids"] == [int(c) for c in theirs.cls.tolist()]
    assert_same_state(before, snapshot(yolo_seg.model))


def test_segment_box_maps_equal_single_box_runs(yolo_seg):
    exp = explain_detections(yolo_seg, IMAGE, conf=0.01, size=64, max_boxes=2)
    inner = yolo_seg.model
    x = torch.from_numpy(IMAGE.astype(np.float32) / 255).permute(2, 0, 1)[None]
    for k, (index, cls) in enumerate(zip(exp.meta["raw_indices"], exp.meta["class_ids"])):
        with eval_mode(inner):
            alone = mmcam.CAM(inner, default_layers(inner), method="layercam", edge="reflect")(x, [DetectionBoxScore([index], [cls])])
        torch.testing.assert_close(exp.maps[k], alone.maps[0, 0], rtol=1e-4, atol=1e-5)
    again = explain_detections(yolo_seg, IMAGE, size=64, candidates=(exp.meta["raw_indices"], exp.meta["class_ids"]))
    torch.testing.assert_close(again.maps, exp.maps)
    assert again.meta["confidences"] == pytest.approx(exp.meta["confidences"], rel=1e-5)


def test_instances_are_ultralytics_masks_and_scores_are_mask_logit_sums(yolo_seg):
    """explain_segmentation on a YOLO segment model: one map per kept instance, its region the
    mask ultralytics predicts, its score Σ over that region of the mask logits c_k · P."""
    from mmcam.adapters.frame import Frame
    from mmcam.adapters.ultralytics import YoloFamily
    from mmcam.tasks import explain_segmentation

    # predict() fuses Conv + BN into the model in place (AutoBackend): run it first so both see one model
    results = yolo_seg.predict(source=IMAGE[..., ::-1].copy(), imgsz=64, conf=0.01, verbose=False, device="cpu")
    theirs = results[0]
    before = snapshot(yolo_seg.model)
    exp = explain_segmentation(yolo_seg, IMAGE, conf=0.01, size=64)
    k = len(exp.items)
    assert k >= 3 and exp.maps.shape == (k, 64, 64) and torch.isfinite(exp.maps).all()
    assert exp.method == "layercam" and exp.layers == default_layers(yolo_seg.model)
    assert exp.meta["classes"] == [int(c) for c in theirs.boxes.cls.tolist()]
    assert np.array_equal(np.stack(exp.regions), theirs.masks.data.bool().numpy())
    # the score by hand, from a plain forward: the kept anchors' coefficients against the prototypes
    x = torch.from_numpy(IMAGE.astype(np.float32) / 255).permute(2, 0, 1)[None]
    family = YoloFamily(yolo_seg, conf=0.01, size=64)
    inner = family.inner  # the fused copy the predictor runs (the user's model is never touched)
    with eval_mode(inner), torch.no_grad():
        (y, protos), raw = inner(x)
        [kept] = family.decide(((y, protos), raw), [Frame.resize((64, 64), (64, 64))])
        for j, (index, region) in enumerate(zip(exp.meta["raw_indices"], kept.regions)):
            logits = torch.einsum("n,nhw->hw", raw["mask_coefficient"][0, :, index], protos[0])
            assert exp.scores[j].item() == pytest.approx(float(logits[region].sum()), rel=1e-4, abs=1e-4)
        # each instance's map equals explaining that instance alone (same regions, one column)
        for j in range(2):
            alone = mmcam.CAM(inner, default_layers(inner), method="layercam", edge="reflect")(
                x, [lambda out, j=j: family.mask_scores(out, kept, 0, len(kept))[:, [j]]]
            )
            torch.testing.assert_close(alone.maps[0, 0], exp.maps[j], rtol=1e-4, atol=1e-5)
    assert_same_state(before, snapshot(yolo_seg.model))


def test_instance_segmentation_bad_input(yolo_seg):
    from mmcam.tasks import explain_segmentation

    with pytest.raises(InputError, match="user mask applies to semantic segmenters"):
        explain_segmentation(yolo_seg, IMAGE, class_id=0, mask=np.ones((64, 64), bool), size=64)
    none = explain_segmentation(yolo_seg, IMAGE, conf=0.999, size=64)
    assert none.items == [] and none.meta["note"].startswith("nothing to explain")
    detector = ultralytics.YOLO("yolov8n.yaml")
    with pytest.raises(InputError, match="explain them with mmcam.explain_detections"):
        explain_segmentation(detector, IMAGE, size=64)


def test_batch_segment_engine_explains_instances(yolo_seg, monkeypatch):
    from mmcam.tasks import SegmentationTask, explain_segmentation
    from mmcam.tasks.registry import build_task

    monkeypatch.setitem(yolo_seg.overrides, "imgsz", 64)  # the model's own input size (a checkpoint's overrides)
    engine = build_task("segment", yolo_seg, None, conf=0.01)
    assert isinstance(engine, SegmentationTask)
    [batch] = engine.explain([engine.prepare(IMAGE)])
    single = explain_segmentation(yolo_seg, IMAGE, conf=0.01, size=64)
    assert batch.items == single.items and len(batch.items) >= 1
    torch.testing.assert_close(batch.maps, single.maps)


def test_batch_detect_engine_keeps_the_same_boxes_as_the_single_call(yolo_seg):
    from mmcam.tasks import DetectionTask

    engine = DetectionTask(yolo_seg, conf=0.01, size=64)
    other = (np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)
    results = engine.explain([engine.prepare(__import__("PIL.Image", fromlist=["Image"]).fromarray(im)) for im in (IMAGE, other)])
    for image, got in zip((IMAGE, other), results):
        want = explain_detections(yolo_seg, image, conf=0.01, size=64)
        assert got.meta["raw_indices"] == want.meta["raw_indices"] and len(got.items) == len(want.items) >= 1
        torch.testing.assert_close(got.scores, want.scores, rtol=1e-4, atol=1e-5)


def test_class_id_explains_only_those_instances(yolo_seg):
    from mmcam.tasks import explain_segmentation

    every = explain_segmentation(yolo_seg, IMAGE, conf=0.01, size=64)
    chosen = every.meta["classes"][0]
    only = explain_segmentation(yolo_seg, IMAGE, class_id=chosen, conf=0.01, size=64)
    picks = [k for k, c in enumerate(every.meta["classes"]) if c == chosen]
    assert only.meta["classes"] == [chosen] * len(picks) and only.meta["raw_indices"] == [every.meta["raw_indices"][k] for k in picks]
    torch.testing.assert_close(only.maps, every.maps[picks], rtol=1e-4, atol=1e-5)
