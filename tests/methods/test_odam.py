"""ODAM on a tiny fixed-weight DETR-style detector: hand-worked values for the class score and
a box coordinate, the authors' rule as a naive autograd loop, and the zoo detectors."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

import mmcam
from mmcam.errors import TargetError
from mmcam.targets import DetectionBoxScore


class TinyDetector(nn.Module):
    """features: identity 1x1 conv on a (1, 2, 2) input; two queries, each reading one
    position pair. logits (B, 2 queries, 2 classes), pred_boxes (B, 2, 4) (cx, cy, w, h)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Conv2d(1, 1, 1, bias=False)
        with torch.no_grad():
            self.features.weight.fill_(1.0)

    def forward(self, x):
        a = self.features(x).flatten(1)  # (B, 4): positions (0,0) (0,1) (1,0) (1,1)
        logits = torch.stack(
            [
                torch.stack([2 * a[:, 0] - a[:, 3], a[:, 1]], -1),  # query 0
                torch.stack([a[:, 2], a[:, 1] * a[:, 2]], -1),  # query 1
            ],
            1,
        )
        cx, cy = 0.5 * a[:, 0] + a[:, 1], a[:, 3]
        w, h = a[:, 2] ** 2, torch.ones_like(cx)
        boxes = torch.stack([torch.stack([cx, cy, w, h], -1), torch.zeros(a.shape[0], 4)], 1)
        return SimpleNamespace(logits=logits, pred_boxes=boxes)


X = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)


def test_odam_hand_values_for_score_and_box_coordinate():
    model = TinyDetector()
    score = DetectionBoxScore([0, 1], [0, 1])
    exp = mmcam.CAM(model, "features", method="odam")(X, [score])
    # query 0 class 0: y = 2a0 - a3 -> g⊙A = (2·1, 0, 0, -1·4); query 1 class 1: y = a1·a2 -> g = (0, a2, a1, 0)
    torch.testing.assert_close(exp.raw[0, 0], torch.tensor([[2.0, 0.0], [0.0, 0.0]]))
    torch.testing.assert_close(exp.raw[0, 1], torch.tensor([[0.0, 3.0 * 2.0], [2.0 * 3.0, 0.0]]))
    # x0 = cx - w/2 = 0.5 a0 + a1 - a2²/2 -> g⊙A = (0.5, 2, -a2·a2 = -9, 0)
    x0 = DetectionBoxScore([0], [0], attribute="x0")
    exp = mmcam.CAM(model, "features", method="odam")(X, [x0])
    torch.testing.assert_close(exp.raw[0, 0], torch.tensor([[0.5, 2.0], [0.0, 0.0]]))
    torch.testing.assert_close(exp.scores[0], torch.tensor([0.5 + 2.0 - 4.5]))


@pytest.mark.filterwarnings("ignore:.*maps are all zero")  # the negated columns: ReLU removes one sign
def test_odam_equals_the_authors_rule_as_a_naive_loop():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1), nn.Tanh())

    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = model
            self.cls = nn.Conv2d(5, 2, 1)
            self.box = nn.Conv2d(5, 4, 1)

        def forward(self, x):
            f = self.body(x)
            return SimpleNamespace(logits=self.cls(f).flatten(2).transpose(1, 2), pred_boxes=self.box(f).flatten(2).transpose(1, 2))

    net = Head().eval()
    x = torch.randn(1, 3, 6, 6)
    indices, classes = [3, 20], [1, 0]
    for attribute in ("score", "x0", "y1"):
        target = DetectionBoxScore(indices, classes, attribute=attribute)
        # the negated target too: ReLU(m) - ReLU(-m) = m checks the signed map, not only its positive part
        exp = mmcam.CAM(net, "body.3", method="odam")(x, [target, lambda out, t=target: -t(out)])
        fm = net.body(x)
        out = SimpleNamespace(logits=net.cls(fm).flatten(2).transpose(1, 2), pred_boxes=net.box(fm).flatten(2).transpose(1, 2))
        ys = DetectionBoxScore(indices, classes, attribute=attribute)(out)[0]
        for k in range(2):
            grad = torch.autograd.grad(ys[k], fm, retain_graph=True)[0]
            torch.testing.assert_close(exp.raw[0, k] - exp.raw[0, 2 + k], (grad * fm.detach()).sum(1)[0])


def test_box_attribute_errors():
    with pytest.raises(TargetError, match="x0"):
        DetectionBoxScore([0], [0], attribute="left")
    with pytest.raises(TargetError, match="box_weight=0"):
        DetectionBoxScore([0], [0], box_weight=1.0, attribute="x0")


@pytest.mark.parametrize("name", ["yolo", "detr"])
def test_explain_detections_with_odam_on_the_zoo(name):
    from mmcam.data import generate_scene

    model, processor = mmcam.zoo.load(name)
    image = generate_scene(11).image
    score = mmcam.explain_detections(model, image, processor=processor, method="odam")
    hires = mmcam.explain_detections(model, image, processor=processor, method="hirescam")
    assert score.items and score.method == "odam"
    torch.testing.assert_close(torch.as_tensor(score.maps), torch.as_tensor(hires.maps))  # same rule on the class score
    left = mmcam.explain_detections(model, image, processor=processor, method="odam", attribute="x0")
    assert left.items == score.items and not torch.equal(torch.as_tensor(left.maps), torch.as_tensor(score.maps))
