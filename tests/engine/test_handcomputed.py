"""Grad-CAM on a tiny network with hand-set weights, against values worked out by hand."""

from __future__ import annotations

import torch
from torch import nn

import mmcam


class Tiny(nn.Module):
    """features: 1x1 conv with fixed weights (2 channels from 1); head: GAP + linear."""

    def __init__(self):
        super().__init__()
        self.features = nn.Conv2d(1, 2, 1, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 2, bias=True)
        with torch.no_grad():
            self.features.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            self.fc.weight.copy_(torch.tensor([[2.0, 1.0], [-1.0, 3.0]]))
            self.fc.bias.copy_(torch.tensor([0.5, -0.5]))

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def test_gradcam_hand_values():
    # input 2x2: A_0 = x, A_1 = -x
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    exp = mmcam.CAM(Tiny(), "features", method="gradcam")(x, [0, 1])
    # class 0: y = 2*mean(A0) + 1*mean(A1) + 0.5 -> dy/dA0 = 2/4, dy/dA1 = 1/4
    # map = ReLU(0.5*x + 0.25*(-x)) = ReLU(0.25 x) = [[.25,.5],[.75,1]]
    torch.testing.assert_close(exp.raw[0, 0], torch.tensor([[0.25, 0.5], [0.75, 1.0]]))
    # class 1: weights (-1/4, 3/4): map = ReLU(-0.25x - 0.75x) = ReLU(-x) = 0
    torch.testing.assert_close(exp.raw[0, 1], torch.zeros(2, 2))
    # scores: y0 = 2*2.5 + (-2.5) + .5 = 3.0 ; y1 = -2.5 - 7.5 - .5 = -10.5
    torch.testing.assert_close(exp.scores[0], torch.tensor([3.0, -10.5]))
    # normalised at input size (same 2x2): (v - .25) / .75
    torch.testing.assert_close(exp.maps[0, 0], torch.tensor([[0.0, 1 / 3], [2 / 3, 1.0]]))
    assert torch.equal(exp.maps[0, 1], torch.zeros(2, 2))


def test_hirescam_and_cam_hand_values():
    x = torch.tensor([[1.0, -2.0], [3.0, 0.0]]).view(1, 1, 2, 2)
    model = Tiny()
    hires = mmcam.CAM(model, "features", method="hirescam")(x, [0])
    # g0 = 1/2, g1 = 1/4 everywhere; sum_c g*A = 0.5x - 0.25x = 0.25x
    torch.testing.assert_close(hires.raw[0, 0], torch.relu(0.25 * x[0, 0]))
    cam = mmcam.CAM(model, "features", method="cam")(x, [0])
    # CAM: 2*A0 + 1*A1 = x
    torch.testing.assert_close(cam.raw[0, 0], torch.relu(x[0, 0]))


def test_prefix_cut_gives_the_same_gradients():
    """Gradients at the layer with the cut equal those of a full graph with the input requiring grad."""
    import torchvision

    model = torchvision.models.resnet18(num_classes=5).eval()
    x = torch.randn(2, 3, 64, 64)
    exp = mmcam.CAM(model, "layer3", method="hirescam")(x, [1, 3])
    store = {}
    handle = model.layer3.register_forward_hook(lambda m, i, o: store.update(a=o))
    xg = x.clone().requires_grad_()
    out = model(xg)
    handle.remove()
    for k, c in enumerate([1, 3]):
        (g,) = torch.autograd.grad(out[:, c].sum(), store["a"], retain_graph=True)
        expected = torch.relu((g * store["a"]).sum(1))
        torch.testing.assert_close(exp.raw[:, k], expected.detach(), rtol=1e-5, atol=1e-6)


def test_eigen_component_orientation_by_hand():
    """One channel over 4 positions, so the first component is that channel, centred; only its
    sign is decided. A non-negative (ReLU) map follows its channel sum; a map with negative
    values (LayerNorm/GELU/SiLU) puts its largest-|value| position on the positive side."""
    from mmcam.methods.eigen import first_component

    relu_like = torch.tensor([[[2.0, 2.0, 2.0, 0.0]]])  # (B, C, S)
    torch.testing.assert_close(first_component(relu_like), torch.tensor([[0.5, 0.5, 0.5, -1.5]]))
    normed = torch.tensor([[[1.0, 1.0, 1.0, -3.0]]])
    torch.testing.assert_close(first_component(normed), torch.tensor([[-1.0, -1.0, -1.0, 3.0]]))
    torch.testing.assert_close(first_component(-normed), torch.tensor([[-1.0, -1.0, -1.0, 3.0]]))
