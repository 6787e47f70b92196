"""YOLO classifiers on real photos at their real size: ``explain_classification`` runs the
classify predictor's own transforms (resize + centre crop, recorded in the frame) and its
top-k classes and probabilities are ``predict()``'s; the model is left as found."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from modelstate import assert_same_state, snapshot

import mmcam
from mmcam.io import load_image

ultralytics = pytest.importorskip("ultralytics")
ASSETS = Path(ultralytics.__file__).parent / "assets"
ZIDANE = np.asarray(load_image(ASSETS / "zidane.jpg"))  # 720 x 1280
BUS = np.asarray(load_image(ASSETS / "bus.jpg"))  # 1080 x 810


def classifier(cfg: str):
    """Random init from the yaml; BatchNorm statistics from one train-mode pass on the photo so
    the activations of the deep random network do not vanish and the classes do not tie."""
    torch.manual_seed(0)
    model = ultralytics.YOLO(cfg)
    norms = [m for m in model.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    x = torch.nn.functional.interpolate(torch.from_numpy(BUS.copy()).permute(2, 0, 1)[None] / 255.0, size=(320, 320))
    with torch.no_grad():
        for m in norms:
            m.momentum = 1.0
        model.model.train()(torch.cat([x, x.flip(-1)]))
        for m in norms:
            m.momentum = 0.1
    return model


CONFIGS = ["yolo11n-cls.yaml", "yolo26n-cls.yaml"]


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("photo", [ZIDANE, BUS], ids=["zidane", "bus"])
def test_yolo_classifier_equals_predict(cfg, photo):
    model = classifier(cfg)
    before = snapshot(model.model)
    probs = model.predict(photo[..., ::-1].copy(), verbose=False)[0].probs.data  # the predictor reads BGR
    exp = mmcam.explain_classification(model, photo, topk=3)
    want = probs.topk(3)
    assert exp.meta["classes"] == want.indices.tolist()
    torch.testing.assert_close(torch.tensor(exp.meta["probabilities"]), want.values, atol=1e-6, rtol=1e-5)
    assert len(set(exp.meta["probabilities"])) == 3  # no ties
    assert exp.items[0] == model.names[exp.meta["classes"][0]]
    h, w = photo.shape[:2]
    assert exp.maps.shape == (3, h, w) and exp.maps.amax((1, 2)).min() > 0
    # shorter side to imgsz, centre crop imgsz x imgsz: nothing outside the crop was seen
    pipeline = exp.meta["pipeline"]
    assert pipeline["input_size"] == [640, 640] and "centre crop" in pipeline["name"]
    side = (max(h, w) - min(h, w)) // 2 - 1
    edge = exp.maps[:, :, :side] if w > h else exp.maps[:, :side]
    assert edge.abs().max() == 0
    assert_same_state(before, snapshot(model.model))


def test_yolo_classifier_k_at_once_equals_one_at_a_time():
    model = classifier("yolo11n-cls.yaml")
    exp = mmcam.explain_classification(model, ZIDANE, topk=3)
    for k, c in enumerate(exp.meta["classes"]):
        one = mmcam.explain_classification(model, ZIDANE, target=c)
        torch.testing.assert_close(one.maps[0], exp.maps[k], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(one.scores[0], exp.scores[k])
