"""A YOLO box's logit from its anchor's window of the head input equals the dense logit, and
every map built on it equals the map built on the dense logit (mmcam/adapters/yolo_local.py)."""

from __future__ import annotations

import os

import pytest
import torch
from PIL import Image
from torch import nn

from mmcam.adapters.yolo_local import branch_radius, local_class_logits
from mmcam.tasks.detection import DetectionTask

ultralytics = pytest.importorskip("ultralytics")
BUS = os.path.join(os.path.dirname(ultralytics.__file__), "assets", "bus.jpg")


@pytest.fixture(scope="module", params=["yolov8n.yaml", "yolo11n.yaml"])
def yolo(request):
    torch.manual_seed(0)
    model = ultralytics.YOLO(request.param)  # random init from the yaml
    with torch.no_grad():  # break the head's prior-bias ties, as in test_ultralytics.py
        for branch in model.model.model[-1].cv3:
            branch[-1].bias.add_(torch.randn_like(branch[-1].bias) * 2 + 4)
    return model


def _anchors(task: DetectionTask, photo: Image.Image) -> tuple[list[int], list[int]]:
    """Corner, edge and inner anchors of every level (the windows clipped at each border)."""
    x = task.family.prepare(photo).inputs
    head = task.family.inner.model[-1]
    with task.family.context(), torch.no_grad():
        feats = task.family.inner(x)[1]["feats"]
    anchors, start = [], 0
    for f in feats:
        h, w = f.shape[-2:]
        for row, col in ((0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1), (1, w // 2), (h // 2, 1), (h // 2, w // 2)):
            anchors.append(start + row * w + col)
        start += h * w
    return anchors, [(3 * i) % int(head.nc) for i in range(len(anchors))]


@pytest.mark.parametrize("method", ["layercam", "gradcam"])
def test_window_maps_equal_dense_maps_on_a_real_photo(yolo, method):
    photo = Image.open(BUS).convert("RGB")
    probe = DetectionTask(yolo, size=128)
    candidates = _anchors(probe, photo)
    local = DetectionTask(yolo, size=128, candidates=candidates, method=method)
    dense = DetectionTask(yolo, size=128, candidates=candidates, method=method)
    dense.family.local_head = False
    a, b = local(photo), dense(photo)
    assert len(a.items) == len(candidates[0]) == 21
    torch.testing.assert_close(a.scores, b.scores, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a.maps, b.maps, rtol=1e-4, atol=1e-5)


def test_window_logits_equal_raw_scores(yolo):
    photo = Image.open(BUS).convert("RGB")
    task = DetectionTask(yolo, size=128)
    anchors, classes = _anchors(task, photo)
    x = task.family.prepare(photo).inputs
    with task.family.context(), torch.no_grad():
        output = task.family.inner(torch.cat([x, x.flip(-1)]))
    got = local_class_logits(task.family.inner.model[-1], output, anchors, classes)
    torch.testing.assert_close(got, output[1]["scores"][:, classes, anchors], rtol=1e-5, atol=1e-5)


def test_radius_of_supported_branches_and_refusals():
    assert branch_radius(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.SiLU(), nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 2, 1))) == 2
    assert branch_radius(nn.Sequential(nn.Conv2d(4, 4, 3, padding=2, dilation=2))) == 2
    assert branch_radius(nn.Sequential(nn.Conv2d(4, 4, 3, stride=2, padding=1))) is None
    assert branch_radius(nn.Sequential(nn.Conv2d(4, 4, 3, padding=0))) is None
    assert branch_radius(nn.Sequential(nn.Conv2d(4, 4, 1), nn.AdaptiveAvgPool2d(1))) is None


def test_unsupported_output_falls_back_to_dense(yolo):
    head = yolo.model.model[-1]
    assert local_class_logits(head, torch.zeros(1, 84, 10), [0], [0]) is None
    assert local_class_logits(head, (torch.zeros(1, 84, 10), {"scores": torch.zeros(1, 80, 10)}), [0], [0]) is None


def test_boxes_on_one_level_leave_the_other_levels_at_zero_gradient(yolo):
    """Every hooked level stays on the graph (zero, not None) when no box reads it."""
    photo = Image.open(BUS).convert("RGB")
    anchors, classes = _anchors(DetectionTask(yolo, size=128), photo)
    p3 = (anchors[:3], classes[:3])  # the first level's corner anchors only
    local, dense = DetectionTask(yolo, size=128, candidates=p3), DetectionTask(yolo, size=128, candidates=p3)
    dense.family.local_head = False
    torch.testing.assert_close(local(photo).maps, dense(photo).maps, rtol=1e-4, atol=1e-5)


def test_layers_inside_the_head_score_densely(yolo):
    """A class branch's own conv as the layer: the window logit would bypass it, so the dense
    logit is used and the maps are the dense reference's (no "not on the path" error)."""
    photo = Image.open(BUS).convert("RGB")
    head = len(yolo.model.model) - 1
    layers = [f"model.{head}.cv3.{s}.0" for s in range(3)]
    candidates = _anchors(DetectionTask(yolo, size=128), photo)
    task = DetectionTask(yolo, size=128, candidates=candidates, layers=layers)
    dense = DetectionTask(yolo, size=128, candidates=candidates, layers=layers)
    dense.family.local_head = False
    a, b = task(photo), dense(photo)
    assert a.layers == layers and len(a.items) == 21
    torch.testing.assert_close(a.maps, b.maps, rtol=0, atol=0)
    assert int((a.maps.flatten(1).amax(1) > 0).sum()) >= 15  # a random head: a few maps ReLU to zero
