"""Bad input gets an mmcam exception that says what to pass instead."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import mmcam
from mmcam.errors import GradientError, InputError, LayerError, MethodError, MMCamError, TargetError


@pytest.fixture(scope="module")
def resnet():
    return torchvision.models.resnet18(num_classes=5).eval()


X = torch.randn(2, 3, 64, 64)


def test_unknown_method_lists_available(resnet):
    with pytest.raises(MethodError, match="gradcam\\+\\+.*close matches: 'gradcam'"):
        mmcam.CAM(resnet, "layer4", method="gradcm")


def test_unknown_layer_lists_close_matches(resnet):
    with pytest.raises(LayerError, match="close matches: 'layer4'"):
        mmcam.CAM(resnet, "layer5")


def test_layer_not_in_model(resnet):
    with pytest.raises(LayerError, match="not part of the model"):
        mmcam.CAM(resnet, nn.Conv2d(1, 1, 1))


class TwoBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.used = nn.Conv2d(3, 4, 3)
        self.unused_branch = nn.Conv2d(3, 4, 3)
        self.never = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        side = self.unused_branch(x)  # computed but not used by the output  # noqa: F841
        return self.fc(self.used(x).mean((2, 3)))


def test_layer_off_the_path():
    with pytest.raises(LayerError, match="not on the path"):
        mmcam.CAM(TwoBranch(), ["used", "unused_branch"])(X, [0])


def test_layer_that_never_runs():
    with pytest.raises(LayerError, match="did not run"):
        mmcam.CAM(TwoBranch(), "never")(X, [0])


def test_layer_that_fires_twice_names_alternatives(resnet):
    with pytest.raises(LayerError, match="ran 2 times.*'layer4.1'"):
        mmcam.CAM(resnet, "layer4.1.relu")(X, [0])


def test_class_index_out_of_range(resnet):
    with pytest.raises(TargetError, match="out of range for 5 classes"):
        mmcam.CAM(resnet, "layer4")(X, [7])


def test_target_lists_that_fit_neither_k_nor_b(resnet):
    with pytest.raises(TargetError, match="2 lists"):
        mmcam.CAM(resnet, "layer4")(X, [[0], [1], [2]])
    with pytest.raises(TargetError, match="same number K"):
        mmcam.CAM(resnet, "layer4")(X, [[0], [1, 2]])
    with pytest.raises(TargetError, match="mixes"):
        mmcam.CAM(resnet, "layer4")(X, [[0], 1])


class NoGrad(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        h = self.conv(x)
        with torch.no_grad():
            return self.fc(h.mean((2, 3)))


def test_no_grad_output_explained():
    with pytest.raises(GradientError, match="no_grad"):
        mmcam.CAM(NoGrad(), "conv")(X, [0])


def test_all_zero_gradients_explained():
    class Dead(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.conv(x).mean((2, 3)) * 0)

    with pytest.raises(GradientError, match="all zero"):
        mmcam.CAM(Dead(), "conv")(X, [0])


def test_cls_pooling_trap_explained():
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=3)
    model = ViTForImageClassification(config).eval()
    last_block = f"vit.layers.{config.num_hidden_layers - 1}"  # transformers 5.x path
    inputs = {"pixel_values": torch.randn(1, 3, 32, 32)}
    with pytest.raises(GradientError, match="CLS"):
        mmcam.CAM(model, last_block)(inputs, [0])
    exp = mmcam.CAM(model)(inputs, [0])  # the auto layer avoids the trap
    assert exp.layers == [f"{last_block}.layernorm_before"]
    assert exp.maps.std() > 0


def test_inplace_modification_detected():
    class Inplace(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.tap = nn.Identity()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            a = self.conv(x)
            b = self.tap(a)
            a.mul_(2)  # modifies the tensor the layer returned, after the hook saw it
            return self.fc((a + b).mean((2, 3)))

    with pytest.raises(LayerError, match="modified in place"):
        mmcam.CAM(Inplace(), "tap")(X, [0])


def test_bad_inputs(resnet):
    with pytest.raises(InputError, match="float"):
        mmcam.CAM(resnet, "layer4")(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), [0])
    with pytest.raises(InputError, match="tensor or a dict"):
        mmcam.CAM(resnet, "layer4")([1, 2, 3], [0])
    with pytest.raises(InputError, match="nn.Module"):
        mmcam.CAM("resnet", "layer4")
    with pytest.raises(InputError, match="inference_mode"):
        with torch.inference_mode():
            mmcam.CAM(resnet, "layer4")(X, [0])


def test_all_errors_are_mmcam_errors():
    for cls in (GradientError, InputError, LayerError, MethodError, TargetError):
        assert issubclass(cls, MMCamError)


class _NoVmapBackward(torch.autograd.Function):
    """Identity whose backward reads a Python number: fine in a plain backward, impossible
    under the batched (vmapped) one."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * (1.0 + 0.0 * float(grad.sum().item()))


class _NoVmapModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        y = _NoVmapBackward.apply(torch.relu(self.conv(x)))
        return self.head(y.mean((2, 3)))


def test_batched_gradients_that_fail_midway_fall_back_to_the_loop():
    """A batched backward that fails after freeing part of the graph must still leave the
    graph for the loop (auto mode), and give the loop's gradients."""
    torch.manual_seed(0)
    model = _NoVmapModel().eval()
    x = torch.rand(1, 3, 8, 8)
    cam = mmcam.CAM(model, "conv")
    cam._chosen_mode = "batched"  # as if measured faster on an earlier call
    exp = cam(x, [0, 2])
    assert cam._chosen_mode == "loop"
    reference = mmcam.CAM(model, "conv", grad_mode="loop")(x, [0, 2])
    torch.testing.assert_close(exp.raw, reference.raw)
    with pytest.raises(GradientError, match="grad_mode='loop'"):
        mmcam.CAM(model, "conv", grad_mode="batched")(x, [0, 2])
