"""YOLO-World (WorldDetect head, yolov8s-worldv2 at its real 640) on real photos: the explained
boxes are exactly YOLOWorld.predict's in the photo's pixels, each box's target its region-text
contrast logit, K boxes at once = one at a time, the model untouched (txt_feats and names too);
text= encodes the classes into mmcam's copy only, and without the CLIP encoder on disk is a
clear error."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from modelstate import assert_same_state, snapshot
from yolo_models import BUS, PHOTOS, ZIDANE, predicted, ultralytics

import mmcam
from mmcam.adapters import ultralytics_world
from mmcam.errors import InputError
from mmcam.io import load_image


def text_yolo(model):
    """A random-init YOLO-World / YOLOE whose contrast logits vary across anchors and classes:
    BatchNorm statistics from one train-mode pass on the photos, then the contrast scale set to
    unit spread."""
    inner = model.model
    norms = [m for m in inner.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for m in norms:
            m.momentum = 1.0
        inner.train()(PHOTOS)
        for m in norms:
            m.momentum = 0.03
        inner.eval()
        spread = inner(PHOTOS)[1]["scores"].std().item()
        inner.train()
        for head in inner.model[-1].cv4:
            head.logit_scale.fill_(math.log(head.logit_scale.exp().item() / spread))
            head.bias.normal_(-6, 0.5)
    return model


@pytest.fixture(scope="module")
def world():
    torch.manual_seed(0)
    return text_yolo(ultralytics.YOLOWorld("yolov8s-worldv2.yaml"))


def state(model, key="txt_feats"):
    inner = model.model
    return (
        snapshot(inner),
        getattr(inner, key).clone(),
        dict(enumerate(inner.names)) if isinstance(inner.names, list) else dict(inner.names),
        inner.model[-1].nc,
    )


def assert_untouched(model, before, key="txt_feats"):
    assert_same_state(before[0], snapshot(model.model))
    after = state(model, key)
    assert torch.equal(before[1], after[1]) and before[2:] == after[2:]


def same_boxes(exp, boxes):
    assert len(exp.items) == len(boxes) >= 3
    torch.testing.assert_close(torch.tensor(exp.meta["boxes"]), boxes.xyxy, atol=0.5, rtol=0)  # rounded to 0.01
    assert exp.meta["class_ids"] == boxes.cls.int().tolist()
    torch.testing.assert_close(torch.tensor(exp.meta["confidences"]), boxes.conf, atol=1e-6, rtol=1e-5)
    assert len(set(exp.meta["confidences"])) == len(boxes)  # no ties: the order is the predictor's


def test_bus_boxes_are_the_predictors_and_the_model_is_untouched(world):
    before = state(world)
    exp = mmcam.explain_detections(world, BUS, max_boxes=4, conf=0.5)
    same_boxes(exp, predicted(world, BUS, max_det=4, conf=0.5).boxes)
    assert exp.maps.shape == (4, *BUS.shape[:2]) and exp.maps.amax((1, 2)).min() > 0
    assert_untouched(world, before)


def test_zidane_maps_explain_the_contrast_logits_k_at_once_as_one_at_a_time(world):
    from mmcam.adapters.ultralytics_world import YoloWorldFamily
    from mmcam.targets.detection import DetectionBoxScore

    before = state(world)
    exp = mmcam.explain_detections(world, ZIDANE, max_boxes=3, conf=0.5)
    same_boxes(exp, predicted(world, ZIDANE, max_det=3, conf=0.5).boxes)
    family = YoloWorldFamily(world, conf=0.5, max_det=3)
    prepared = family.prepare(load_image(ZIDANE))
    x, ids, classes = prepared.inputs, exp.meta["raw_indices"], exp.meta["class_ids"]
    with torch.no_grad(), family.context():
        logits = family.module(x)[1]["scores"][0, classes, ids]
    torch.testing.assert_close(exp.scores, logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits.sigmoid(), torch.tensor(exp.meta["confidences"]), rtol=1e-6, atol=1e-7)
    assert family.default_layers(x) == ["model.2", "model.15", "model.18", "model.21"]  # stride-4 C2f + the neck outputs

    def one_box(k):
        return lambda output: DetectionBoxScore([ids[k]], [classes[k]])(output)[:, 0]

    with family.context():
        singles = mmcam.CAM(family.module, family.default_layers(x), method="layercam", edge=family.edge)(x, [one_box(k) for k in range(3)])
    torch.testing.assert_close(singles.scores[0], exp.scores, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(prepared.frame.maps_to_photo(singles.maps[0]), exp.maps, atol=1e-5, rtol=1e-4)
    assert_untouched(world, before)


def test_text_without_the_clip_encoder_names_what_is_missing(world, monkeypatch):
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    if ultralytics_world.text_encoder_missing(world.model) is None:
        pytest.skip("the CLIP encoder is on this machine")
    before = state(world)
    with pytest.raises(InputError, match=r"CLIP ViT-B/32.*model\.set_classes\(\['person', 'bus'\]\).*without text="):
        mmcam.explain_detections(world, BUS, text=["person", "bus"])
    with pytest.raises(InputError, match="non-empty class names"):
        mmcam.explain_detections(world, BUS, text=[])
    assert_untouched(world, before)


def test_text_classes_live_in_mmcams_copy_only(world, monkeypatch):
    """With an encoder (here the model's get_text_pe replaced by fixed embeddings), text= gives the
    boxes the predictor gives after set_classes, and the user's model keeps its own classes."""
    queries = ["person", "bus", "tie"]
    feats = torch.randn(1, 3, 512, generator=torch.Generator().manual_seed(1))
    before = state(world)
    with monkeypatch.context() as patch:
        patch.setattr(ultralytics_world, "text_encoder_missing", lambda inner: None)
        patch.setattr(world.model, "get_text_pe", lambda text: feats, raising=False)
        exp = mmcam.explain_detections(world, BUS, text=queries, conf=0.01, max_boxes=3, size=320)  # low conf: 3 boxes
    assert_untouched(world, before)
    inner, head, names = world.model, world.model.model[-1], world.model.names
    try:  # the ultralytics workflow: classes set on the model (what set_classes stores), then predict
        inner.txt_feats, head.nc, inner.names, world.predictor = feats, 3, queries, None
        boxes = predicted(world, BUS, conf=0.01, max_det=3, imgsz=320).boxes
    finally:
        inner.txt_feats, head.nc, inner.names, world.predictor = before[1], before[3], names, None
    same_boxes(exp, boxes)
    assert exp.meta["labels"] == [queries[c] for c in boxes.cls.int().tolist()]
    again = mmcam.explain_detections(world, BUS, max_boxes=3, conf=0.5, size=320)  # mmcam's shared copy back on the model's classes
    same_boxes(again, predicted(world, BUS, max_det=3, conf=0.5, imgsz=320).boxes)


def test_yoloe_seg_with_set_classes_boxes_are_the_predictors_and_text_needs_mobileclip(monkeypatch):
    """YOLOE-11s-seg (a YOLOESegment head) with classes set as ultralytics does (set_classes with
    their embeddings): the predictor's boxes, its pe / names untouched; text= without MobileCLIP
    on disk is a clear error."""
    from ultralytics.utils.ops import scale_masks

    torch.manual_seed(0)
    model = ultralytics.YOLOE("yoloe-11s-seg.yaml")
    model.set_classes([f"class{i}" for i in range(20)], torch.randn(1, 20, 512))
    model = text_yolo(model)
    before = state(model, "pe")
    exp = mmcam.explain_detections(model, BUS, max_boxes=3, conf=0.2, size=320)
    same_boxes(exp, predicted(model, BUS, max_det=3, conf=0.2, imgsz=320).boxes)
    assert exp.maps.shape == (3, *BUS.shape[:2]) and exp.maps.amax((1, 2)).min() > 0
    theirs = predicted(model, BUS, max_det=3, conf=0.2, imgsz=320)
    masks = mmcam.explain_segmentation(model, BUS, max_instances=3, conf=0.2, size=320)  # one map per instance mask
    assert masks.meta["classes"] == theirs.boxes.cls.int().tolist() and len(masks.items) == len(theirs.masks.data) == 3
    on_photo = scale_masks(theirs.masks.data[None], BUS.shape[:2])[0] > 0.5  # the predictor's masks on the photo
    assert np.array_equal(np.stack(masks.regions), on_photo.numpy())
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    if ultralytics_world.text_encoder_missing(model.model) is not None:
        with pytest.raises(InputError, match=r"MobileCLIP \(mobileclip, mobileclip_blt\.ts\).*model\.set_classes\(\['person'\]\)"):
            mmcam.explain_detections(model, BUS, text=["person"])
    assert_untouched(model, before, "pe")


def test_two_threads_with_different_classes_do_not_mix(world, monkeypatch):
    """mmcam's fused copy is shared per model: the classes are set under its lock for each run."""
    from concurrent.futures import ThreadPoolExecutor

    feats = torch.randn(1, 3, 512, generator=torch.Generator().manual_seed(2))
    monkeypatch.setattr(ultralytics_world, "text_encoder_missing", lambda inner: None)
    monkeypatch.setattr(world.model, "get_text_pe", lambda text: feats, raising=False)
    calls = {"text": dict(text=["person", "bus", "tie"]), "own": {}}
    import time
    from contextlib import contextmanager

    from mmcam.adapters import ultralytics as yolo_adapter

    plain = yolo_adapter.YoloFamily.context

    @contextmanager
    def slow(self):  # widen the window between setting the classes and running: a mix would show
        with plain(self):
            time.sleep(0.3)
            yield

    def run(name):
        return mmcam.explain_detections(world, BUS, conf=0.3, max_boxes=3, size=320, **calls[name])

    alone = {name: run(name) for name in calls}
    monkeypatch.setattr(yolo_adapter.YoloFamily, "context", slow)
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(run, ["text", "own", "text", "own"]))
    for name, got in zip(["text", "own", "text", "own"], together):
        assert got.meta["labels"] == alone[name].meta["labels"] and got.meta["boxes"] == alone[name].meta["boxes"]
        torch.testing.assert_close(got.maps, alone[name].maps)
