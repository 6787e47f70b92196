"""YOLO pose models on real photos at 640: the kept people and their keypoints are exactly the
pose predictor's (photo pixels), one map per person and per keypoint, K at once = one at a
time, the model untouched; heads mmcam cannot explain are refused with what to pass instead."""

from __future__ import annotations

import pytest
import torch
from modelstate import assert_same_state, snapshot
from yolo_models import BUS, ZIDANE, predicted, ultralytics, yolo

import mmcam
from mmcam.errors import InputError


def pose_model(cfg: str):
    return yolo(cfg)  # one class: logits of unit spread around -6, hence conf=0.03 below


def neck(model) -> list[str]:
    """The head's inputs: 18 backward passes per person from there, not from the stride-4 stage (time)."""
    return [f"model.{i}" for i in model.model.model[-1].f]


@pytest.mark.parametrize("cfg", ["yolo11n-pose.yaml", "yolo26n-pose.yaml"])  # yolov8n-pose: the same Pose head (63 s here)
def test_pose_people_and_keypoints_equal_the_predictor(cfg):
    model = pose_model(cfg)
    before = snapshot(model.model)
    exp = mmcam.explain_pose(model, ZIDANE, max_people=2, conf=0.03, layers=neck(model))
    theirs = predicted(model, ZIDANE, max_det=2, conf=0.03)
    people, nk = len(theirs.boxes), model.model.model[-1].kpt_shape[0]
    assert len(exp.meta["boxes"]) == people >= 1
    torch.testing.assert_close(torch.tensor(exp.meta["boxes"]), theirs.boxes.xyxy, atol=0.5, rtol=0)
    torch.testing.assert_close(torch.tensor(exp.meta["confidences"]), theirs.boxes.conf, atol=1e-6, rtol=1e-5)
    keypoints = torch.tensor(exp.meta["keypoints"])
    torch.testing.assert_close(keypoints, theirs.keypoints.data, atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(keypoints[..., :2], theirs.keypoints.xy, atol=1e-3, rtol=1e-5)
    assert len(exp.items) == people * (1 + nk) and exp.maps.shape == (people * (1 + nk), *ZIDANE.shape[:2])
    assert exp.meta["keypoint"][: 1 + nk] == list(range(-1, nk)) and exp.meta["person"][-1] == people - 1
    assert_same_state(before, snapshot(model.model))


def test_pose_scores_are_the_logits_and_k_at_once_equals_one_at_a_time():
    from mmcam.adapters.ultralytics_pose import YoloPose
    from mmcam.io import load_image

    model = pose_model("yolo11n-pose.yaml")
    exp = mmcam.explain_pose(model, BUS, max_people=1, conf=0.03, layers=neck(model))
    family = YoloPose(model, conf=0.03, max_det=1)
    prepared = family.prepare(load_image(BUS))
    x, ids, classes = prepared.inputs, exp.meta["raw_indices"], exp.meta["class_ids"]
    picks = [(p, j) for p in range(len(ids)) for j in range(-1, 17)]

    def one(p, j):  # one (B,) scalar: the person's class logit or keypoint j's visibility logit
        if j < 0:
            return lambda output: output[1]["scores"][:, classes[p], ids[p]]
        return lambda output: output[1]["kpts"][:, 3 * j + 2, ids[p]]

    with family.context():
        singles = mmcam.CAM(family.module, neck(model), method="layercam")(x, [one(p, j) for p, j in picks])
    torch.testing.assert_close(singles.scores[0], exp.scores, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(prepared.frame.maps_to_photo(singles.maps[0]), exp.maps, atol=1e-5, rtol=1e-4)


def test_unsupported_heads_name_the_supported_ones():
    with pytest.raises(InputError, match="no keypoint head"):
        mmcam.explain_pose(yolo("yolo11n.yaml"), BUS)
    with pytest.raises(InputError, match=r"Pose26.*mmcam.CAM|layers="):
        mmcam.explain_detections(ultralytics.YOLO("yolo11n-cls.yaml"), BUS)  # OBB is supported now: a classifier head
