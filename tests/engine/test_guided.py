"""``mmcam.engine.guided``: Guided Backprop against a model whose ReLUs are swapped for a
guided autograd function, and Guided Grad-CAM as the product of its two public parts."""

from __future__ import annotations

import copy

import torch
import torchvision

import mmcam
from mmcam.engine.guided import GuidedBackprop, GuidedGradCAM


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return getattr(torchvision.models, name)(num_classes=10).eval()


def test_guided_backprop_matches_reference():
    """Reference: a copy of the model whose ReLUs are replaced by a guided autograd function."""
    model = _model("resnet18")
    x = torch.randn(1, 3, 32, 32)

    class GuidedReLU(torch.autograd.Function):
        @staticmethod
        def forward(ctx, inp):
            ctx.save_for_backward(inp)
            return inp.clamp_min(0)

        @staticmethod
        def backward(ctx, grad):
            (inp,) = ctx.saved_tensors
            return grad * (inp > 0) * (grad > 0)

    class Wrapped(torch.nn.Module):
        def forward(self, inp):
            return GuidedReLU.apply(inp)

    ref = copy.deepcopy(model)
    for _name, module in list(ref.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, torch.nn.ReLU):
                setattr(module, child_name, Wrapped())
    xr = x.clone().requires_grad_()
    ref(xr)[0, 3].backward()
    guided = mmcam.GuidedBackprop(model)(x, [3])
    torch.testing.assert_close(guided.pixels[0, 0], xr.grad[0], rtol=1e-4, atol=1e-7)


def test_guided_gradcam_is_guided_backprop_times_the_cam_map():
    model = _model("resnet18")
    x = torch.randn(2, 3, 32, 32)
    ggc = GuidedGradCAM(model, "layer4")(x, [[3, 5], [1, 2]])
    cam = mmcam.CAM(model, "layer4")(x, [[3, 5], [1, 2]])
    pixels = GuidedBackprop(model)(x, [[3, 5], [1, 2]]).pixels * cam.maps[:, :, None]
    torch.testing.assert_close(ggc.pixels, pixels)
    assert ggc.method == "guided-gradcam" and ggc.maps.shape == (2, 2, 32, 32)


def test_package_exports_are_the_engine_classes():
    assert mmcam.GuidedBackprop is GuidedBackprop and mmcam.GuidedGradCAM is GuidedGradCAM
