"""ultralytics RT-DETR (rtdetr-l, random init) on real photos: the explained boxes are exactly
``RTDETR.predict``'s at 640 (photo pixels, the predictor's top-k rows above ``conf``), each
mapped to its raw query; one map per box; K boxes at once = one at a time; the model untouched."""

from __future__ import annotations

import pytest
import torch
from modelstate import assert_same_state, snapshot
from yolo_models import BUS, ZIDANE, predicted

import mmcam
from mmcam.errors import InputError
from mmcam.io import load_image

ultralytics = pytest.importorskip("ultralytics")


@pytest.fixture(scope="module")
def rtdetr():
    """rtdetr-l from its yaml. At init every query ties (the backbone's activations vanish):
    BatchNorm statistics from one train-mode pass on a photo (at 320, for time) keep them alive."""
    torch.manual_seed(0)
    model = ultralytics.RTDETR("rtdetr-l.yaml")
    inner = model.model
    norms = [m for m in inner.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    photo = torch.nn.functional.interpolate(torch.from_numpy(BUS.copy()).permute(2, 0, 1)[None] / 255.0, size=(320, 320))
    with torch.no_grad():
        for m in norms:
            m.momentum = 1.0
        inner.train()(photo)
        for m in norms:
            m.momentum = 0.03
    return model


def test_rtdetr_boxes_equal_the_predictor_at_640(rtdetr):
    before = snapshot(rtdetr.model)
    exp = mmcam.explain_detections(rtdetr, BUS, conf=0.05, max_boxes=2)  # 2: time (one backward per box)
    theirs = predicted(rtdetr, BUS, conf=0.05, max_det=2).boxes
    assert len(exp.items) == len(theirs) == 2 and exp.meta["input_size"] == [640, 640]
    torch.testing.assert_close(torch.tensor(exp.meta["boxes"]), theirs.xyxy, atol=0.01, rtol=0)  # rounded to 0.01
    torch.testing.assert_close(torch.tensor(exp.meta["confidences"]), theirs.conf, atol=1e-6, rtol=1e-5)
    assert exp.meta["class_ids"] == theirs.cls.int().tolist()
    assert len(set(exp.meta["raw_indices"])) > 1 and all(0 <= q < 300 for q in exp.meta["raw_indices"])
    assert exp.maps.shape == (2, *BUS.shape[:2]) and exp.maps.amax((1, 2)).min() > 0
    torch.testing.assert_close(exp.scores.sigmoid(), torch.tensor(exp.meta["confidences"]), atol=1e-6, rtol=1e-5)  # the query logits
    assert_same_state(before, snapshot(rtdetr.model))


def test_rtdetr_k_at_once_equals_one_at_a_time(rtdetr):
    from mmcam.adapters.rtdetr_ultralytics import RtdetrFamily

    exp = mmcam.explain_detections(rtdetr, ZIDANE, conf=0.05, max_boxes=2, size=320)  # 320: time
    assert len(exp.items) == 2
    family = RtdetrFamily(rtdetr, conf=0.05, max_det=2, size=320)
    prepared = family.prepare(load_image(ZIDANE))
    x, queries, classes = prepared.inputs, exp.meta["raw_indices"], exp.meta["class_ids"]

    def one(k):  # box k alone: its query's class logit, a plain (B,) target
        return lambda output: output[1][1][-1][:, queries[k], classes[k]]

    with family.context():
        singles = mmcam.CAM(family.module, family.default_layers(x), method="layercam")(x, [one(k) for k in range(2)])
    torch.testing.assert_close(singles.scores[0], exp.scores, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(prepared.frame.maps_to_photo(singles.maps[0]), exp.maps, atol=1e-5, rtol=1e-4)
    # a later forward (a perturbation method's) scores each kept box by its best-overlapping query:
    # on the same input, the same queries and logits
    with torch.no_grad(), family.context():
        first = family.module(x)
        kept = family.decide(first, [prepared.frame])[0]
        again = family.box_scores(family.module(x), kept, 0, 2)
    torch.testing.assert_close(again, family.box_scores(first, kept, 0, 2), atol=1e-5, rtol=1e-5)


def test_rtdetr_refuses_yolo_only_options(rtdetr):
    with pytest.raises(InputError, match="mmcam.CAM"):
        mmcam.explain_detections(rtdetr, BUS, candidates=([0], [0]))
