"""The model is left exactly as found: after success, after an exception, after many calls."""

from __future__ import annotations

import gc

import pytest
import torch
import torchvision
from modelstate import assert_same_state, snapshot
from torch import nn

import mmcam
from mmcam.errors import ForwardError


def _prepared_model():
    model = torchvision.models.resnet18(num_classes=5)
    model.train()  # a model in train mode must stay in train mode
    model.layer1.eval()  # mixed flags
    model.conv1.weight.requires_grad_(False)  # user-frozen parameter stays frozen
    model.fc.weight.grad = torch.full_like(model.fc.weight, 0.25)  # a stale .grad stays as it is
    model.layer2.register_forward_hook(lambda m, i, o: None)  # the user's own hook stays
    return model


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "scorecam", "ablationcam", "eigencam", "cam"])
def test_untouched_after_success(method):
    model = _prepared_model()
    before = snapshot(model)
    mmcam.CAM(model, "layer4", method=method, batch_size=256)(torch.randn(2, 3, 32, 32), [1, 2])
    assert_same_state(before, snapshot(model))


def test_untouched_after_exception_in_target():
    model = _prepared_model()
    before = snapshot(model)

    def broken(output):
        raise RuntimeError("target failed")

    with pytest.raises(mmcam.TargetError, match="target <function .*broken.* raised RuntimeError: target failed") as info:
        mmcam.CAM(model, "layer4")(torch.randn(2, 3, 64, 64), [broken])
    assert isinstance(info.value.__cause__, RuntimeError)
    assert "Tensor(2, 5) float32" in str(info.value)  # what the output was
    assert_same_state(before, snapshot(model))


def test_untouched_after_exception_in_forward():
    model = _prepared_model()
    before = snapshot(model)
    with pytest.raises(ForwardError, match=r"expects 3 input channels, got 5.*pass a \(B, 3, H, W\)"):
        mmcam.CAM(model, "layer4")(torch.randn(2, 5, 64, 64), [0])  # wrong channel count
    assert_same_state(before, snapshot(model))


class _BNNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1),
            torch.nn.BatchNorm2d(8),
            torch.nn.ReLU(),
            torch.nn.Conv2d(8, 8, 3, padding=1),
            torch.nn.BatchNorm2d(8),
            torch.nn.ReLU(),
        )
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


def test_default_layer_probing_leaves_train_mode_batchnorm_untouched():
    """The probing forward (layers=None) runs inside the same restore as the explained one."""
    torch.manual_seed(0)
    model = _BNNet().train()
    before = snapshot(model)
    exp = mmcam.CAM(model)(torch.randn(2, 3, 16, 16), [1])
    assert exp.layers == ["features"]
    assert_same_state(before, snapshot(model))
    # the probe alone, as adapters call it, also restores
    from mmcam.engine.layers import probe

    probe(model, torch.randn(2, 3, 16, 16))
    assert_same_state(before, snapshot(model))


def test_untouched_after_failure_midway_with_default_layers():
    model = _BNNet().train()
    before = snapshot(model)

    def broken(output):
        return output[:, 99]

    with pytest.raises(mmcam.TargetError, match="IndexError"):
        mmcam.CAM(model)(torch.randn(2, 3, 16, 16), [broken])
    assert_same_state(before, snapshot(model))


def test_guided_and_tta_untouched():
    model = _prepared_model().eval()
    before = snapshot(model)
    mmcam.GuidedGradCAM(model, "layer4")(torch.randn(1, 3, 32, 32), [1])
    mmcam.TTA(mmcam.CAM(model, "layer4"))(torch.randn(1, 3, 32, 32), [1])
    assert_same_state(before, snapshot(model))


def test_repeated_calls_leak_neither_hooks_nor_tensors():
    model = torchvision.models.resnet18(num_classes=5).eval()
    cam = mmcam.CAM(model, "layer4", method="gradcam")
    x = torch.randn(2, 3, 32, 32)

    def live_tensors():
        gc.collect()
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))

    for _ in range(3):
        cam(x, [1, 2, 3])
    start = live_tensors()
    for _ in range(20):
        exp = cam(x, [1, 2, 3])
        del exp
    assert live_tensors() <= start
    assert all(len(m._forward_hooks) == 0 for m in model.modules())
    assert all(len(m._forward_pre_hooks) == 0 for m in model.modules())


def test_a_model_that_reads_a_layer_through_its_own_hook_sees_the_captured_leaf():
    """transformers 5 records hidden states with forward hooks the model installed earlier and
    feeds them on (LLaVA's projector reads ``hidden_states[vision_feature_layer]``): the
    engine's hook runs first, so the recorded tensor is the leaf and gradients reach it."""

    class Recorded(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.head, self.seen = nn.Conv2d(3, 4, 3), nn.Linear(4, 2), []
            self.conv.register_forward_hook(lambda m, a, out: self.seen.append(out))

        def forward(self, x):
            self.seen.clear()
            self.conv(x)
            return self.head(self.seen[-1].mean((2, 3)))

    model = Recorded().eval()
    before = snapshot(model)
    exp = mmcam.CAM(model, "conv")(torch.randn(1, 3, 8, 8), [0])
    assert exp.raw.shape == (1, 1, 6, 6)
    assert_same_state(before, snapshot(model))
