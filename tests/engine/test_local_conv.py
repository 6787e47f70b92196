"""The restricted convolution backward (mmcam/engine/local_conv.py): equal to the ordinary
``convolution_backward`` on every rectangle, kernel, stride, padding, dilation, groups and
memory format; exactly zero outside the rectangle's reach; routed only where it is exact; and
the engine's maps with it equal to the maps without it on YOLO and DETR, every grad mode, the
model left as found."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from modelstate import assert_same_state, snapshot
from PIL import Image
from torch import nn

import mmcam
from mmcam.engine import core, local_conv
from mmcam.engine.local_conv import LocalConv, input_grad

CONFIGS = [  # (in, out, kernel, stride, padding, dilation, groups)
    (6, 8, 3, 1, 1, 1, 1),
    (6, 8, 1, 1, 0, 1, 1),  # a 1x1: the matrix product
    (6, 8, 3, 2, 1, 1, 1),
    (6, 6, 3, 1, 1, 1, 6),  # depthwise
    (6, 8, 5, 1, 2, 1, 2),
    (6, 8, 3, 1, 2, 2, 1),  # dilated
    (6, 8, 3, 2, 0, 1, 1),  # unpadded, strided: input rows the conv never reads
    (6, 8, 1, 2, 0, 1, 1),
]
RECTANGLES = [(0, 0, 0, 0), (0, 2, 0, 3), (5, 7, 3, 8), (9, 10, 10, 10), (2, 4, 0, 10), (6, 6, 6, 6)]  # rows r0..r1, cols c0..c1 (clipped)


def _reference(grad, x, weight, conf):
    """autograd's own backward of conv2d."""
    x = x.detach().requires_grad_()
    stride, padding, dilation, groups = conf
    (out,) = torch.autograd.grad(F.conv2d(x, weight, None, stride, padding, dilation, groups), x, grad)
    return out


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("cfg", CONFIGS)
def test_input_grad_equals_the_ordinary_backward(cfg, channels_last):
    c, o, k, s, p, d, g = cfg
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(2, c, 21, 23).contiguous(memory_format=fmt)
    weight = torch.randn(o, c // g, k, k).contiguous(memory_format=fmt)
    conf = ([s, s], [p, p], [d, d], g)
    ho, wo = F.conv2d(x, weight, None, s, p, d, g).shape[-2:]
    for r0, r1, c0, c1 in RECTANGLES:
        r1, c1 = min(r1, ho - 1), min(c1, wo - 1)
        grad = torch.zeros(2, o, ho, wo).contiguous(memory_format=fmt)
        grad[:, :, r0 : r1 + 1, c0 : c1 + 1] = torch.randn(2, o, r1 - r0 + 1, c1 - c0 + 1)
        expected = _reference(grad, x, weight, conf)
        got = input_grad(grad, x, weight, conf)
        assert got.shape == expected.shape and got.is_contiguous(memory_format=fmt)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
        # outside the rows / columns the rectangle reaches, exactly zero in both
        top, bottom = max(r0 * s - p, 0), r1 * s - p + (k - 1) * d
        left, right = max(c0 * s - p, 0), c1 * s - p + (k - 1) * d
        outside = torch.ones_like(got, dtype=torch.bool)
        outside[:, :, top : bottom + 1, left : right + 1] = False
        assert not bool(got[outside].any()) and not bool(expected[outside].any())
    full = torch.randn(2, o, ho, wo)  # too large a rectangle: the ordinary kernel (a 1x1: the matrix product)
    got, expected = input_grad(full, x, weight, conf), input_grad(full, x, weight, conf, crop=False)
    assert torch.equal(got, expected) if k > 1 or s > 1 else torch.allclose(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def test_zero_and_nan_cotangents():
    x, weight, conf = torch.randn(1, 3, 9, 9), torch.randn(4, 3, 3, 3), ([1, 1], [1, 1], [1, 1], 1)
    zero = torch.zeros(1, 4, 9, 9)
    assert torch.equal(input_grad(zero, x, weight, conf), torch.zeros_like(x))
    nan = zero.clone()
    nan[0, 1, 4, 4] = float("nan")  # NaN counts as non-zero: it spreads over the same 3x3 as in the ordinary backward
    got, expected = input_grad(nan, x, weight, conf), _reference(nan, x, weight, conf)
    assert torch.equal(got.isnan(), expected.isnan()) and int(got.isnan().sum()) == 3 * 9


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Sequential(
            nn.Conv2d(8, 8, 3, padding=1), nn.SiLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.SiLU(), nn.Conv2d(16, 16, 1), nn.Conv2d(16, 4, 3, padding=1)
        )

    def forward(self, x):
        return self.body(self.stem(x))


def test_routing_and_the_looped_backward():
    """Through autograd: the same per-pixel gradients as the ordinary graph; the conv whose weight
    needs a gradient, or whose weight is not finite, is not routed."""
    net = _Net().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    leaf = torch.randn(1, 8, 24, 24, requires_grad=True)
    expected = [torch.autograd.grad(net.body(leaf)[0, c, r, q], leaf)[0] for c, r, q in ((0, 0, 0), (2, 5, 7), (3, 11, 11))]
    mode = LocalConv(net)
    with mode:
        out = net.body(leaf)
    assert mode.routed == 4
    with mode.active():
        got = [torch.autograd.grad(out[0, c, r, q], leaf, retain_graph=True)[0] for c, r, q in ((0, 0, 0), (2, 5, 7), (3, 11, 11))]
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    net.body[0].weight.requires_grad_(True)
    net.body[2].weight.data[0, 0, 0, 0] = float("inf")
    with LocalConv(net) as mode:
        net.body(leaf)
    assert mode.routed == 2
    assert not LocalConv(nn.Linear(2, 2)).enabled  # no convolution: no mode at all


def _off(model=None, enabled=True):
    return LocalConv(model, enabled=False)


def _mode(module: nn.Module, grad_mode: str) -> None:
    """The engine's measured grad mode for ``module``: "loop" / "batched" kept, "auto" measured anew."""
    core._MEASURED.clear()
    if grad_mode != "auto":
        core._MEASURED[module] = grad_mode


def _both(monkeypatch, call, module, grad_mode):
    """The call with the restricted backward (the engine's default), then without it; and
    whether the restriction ran."""
    spy = []
    original = local_conv._restricted
    monkeypatch.setattr(local_conv, "_restricted", lambda *a: spy.append(1) or original(*a))
    _mode(module, grad_mode)
    with_it = call()
    monkeypatch.undo()
    monkeypatch.setattr(core, "LocalConv", _off)
    _mode(module, grad_mode)
    without = call()
    monkeypatch.undo()
    core._MEASURED.clear()
    return with_it, without, bool(spy)


ultralytics = pytest.importorskip("ultralytics")
BUS = Image.open(os.path.join(os.path.dirname(ultralytics.__file__), "assets", "bus.jpg")).convert("RGB")
MODES = ["loop", "batched", "auto"]


@pytest.fixture(scope="module")
def yolo():
    torch.manual_seed(0)
    model = ultralytics.YOLO("yolov8n.yaml")  # random init; the head's biases spread so boxes are kept
    with torch.no_grad():
        for branch in model.model.model[-1].cv3:
            branch[-1].bias.add_(torch.randn_like(branch[-1].bias) * 2 + 4)
    return model


@pytest.mark.parametrize("grad_mode", MODES)
def test_yolo_maps_equal_without_the_restriction(yolo, monkeypatch, grad_mode):
    from mmcam.tasks.detection import DetectionTask

    before = snapshot(yolo.model)
    task = DetectionTask(yolo, conf=0.0, max_boxes=6, size=320)
    with_it, without, restricted = _both(monkeypatch, lambda: task(BUS), task.family.module, grad_mode)
    assert len(with_it.items) == 6 and with_it.items == without.items
    assert torch.equal(with_it.scores, without.scores)
    torch.testing.assert_close(with_it.maps, without.maps, rtol=0, atol=1e-5)
    assert restricted == (grad_mode != "batched")  # the restriction runs in the looped backward only
    assert_same_state(before, snapshot(yolo.model))


@pytest.mark.parametrize("grad_mode", MODES)
def test_detr_maps_equal_without_the_restriction(monkeypatch, grad_mode):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    backbone = transformers.ResNetConfig(
        num_channels=3, embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], layer_type="bottleneck", out_features=["stage4"]
    )
    tiny = dict(
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        num_queries=8,
        num_labels=3,
    )
    model = transformers.DetrForObjectDetection(
        transformers.DetrConfig(use_timm_backbone=False, use_pretrained_backbone=False, backbone_config=backbone, **tiny)
    ).eval()
    with torch.no_grad():
        model.class_labels_classifier.weight.mul_(8)
    processor = transformers.DetrImageProcessor(size={"shortest_edge": 160, "longest_edge": 214})
    before = snapshot(model)
    call = lambda: mmcam.explain_detections(model, BUS, processor=processor, conf=0.0, max_boxes=4)  # noqa: E731
    with_it, without, _ = _both(monkeypatch, call, model, grad_mode)
    assert len(with_it.items) == 4 and with_it.items == without.items
    assert torch.equal(with_it.scores, without.scores)
    torch.testing.assert_close(with_it.maps, without.maps, rtol=0, atol=1e-5)
    assert_same_state(before, snapshot(model))
