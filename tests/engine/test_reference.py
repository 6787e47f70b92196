"""Every method against a naive reference: one target at a time, plain ``.backward()`` on a
copy of the model with the full graph (no prefix cut), formulas written as loops."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

import mmcam

CLASSES = [[1, 4, 7], [2, 4, 0]]  # per image, K = 3


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    builder = getattr(torchvision.models, name)
    model = builder(num_classes=10).eval()
    return model


MODELS = {"resnet18": "layer4", "mobilenet_v3_small": "features"}


def _reference_acts_grads(model, layer, x, b, c):
    """A and dy_c/dA for image b from a full forward + .backward() on a deep copy."""
    m = copy.deepcopy(model)
    store = {}

    def hook(module, inputs, out):
        out.retain_grad()
        store["a"] = out

    handle = m.get_submodule(layer).register_forward_hook(hook)
    out = m(x[b : b + 1])
    out[0, c].backward()
    handle.remove()
    return store["a"][0].detach().double(), store["a"].grad[0].double()


def _reference_map(method, A, G):
    C = A.shape[0]
    cam = torch.zeros(A.shape[1:], dtype=torch.float64)
    if method == "gradcam":
        for ch in range(C):
            cam += G[ch].mean() * A[ch]
    elif method == "hirescam":
        for ch in range(C):
            cam += G[ch] * A[ch]
    elif method == "gradcam-elementwise":
        for ch in range(C):
            cam += torch.relu(G[ch] * A[ch])
    elif method == "layercam":
        for ch in range(C):
            cam += torch.relu(G[ch]) * A[ch]
    elif method == "xgradcam":
        for ch in range(C):
            cam += (G[ch] * A[ch]).sum() / (A[ch].sum() + 1e-7) * A[ch]
    elif method == "gradcam++":
        for ch in range(C):
            g, a = G[ch], A[ch]
            denom = 2 * g**2 + a.sum() * g**3
            alpha = torch.where(g != 0, g**2 / (denom + 1e-7), torch.zeros_like(g))
            cam += (alpha * torch.relu(g)).sum() * a
    elif method == "eigengradcam":
        cam = torch.from_numpy(_np_first_component((G * A).numpy()))
    else:
        raise AssertionError(method)
    return torch.relu(cam)


def _np_first_component(x: np.ndarray) -> np.ndarray:
    """Reference PCA projection with numpy (rows = positions). Sign: a non-negative map's
    projection correlates positively with its channel sum; any other map's largest-|value|
    position is positive."""
    c, h, w = x.shape
    rows = x.reshape(c, -1).T
    centred = rows - rows.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    proj = centred @ vt[0]
    if (x >= 0).all():
        ref = rows.sum(1) - rows.sum(1).mean()
        flip = (proj * ref).sum() < 0
    else:
        flip = proj[np.abs(proj).argmax()] < 0
    return (-proj if flip else proj).reshape(h, w)


GRADIENT_METHODS = ["gradcam", "hirescam", "gradcam-elementwise", "layercam", "xgradcam", "gradcam++", "eigengradcam"]


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_gradient_methods_match_reference(name, method):
    model = _model(name)
    layer = MODELS[name]
    x = torch.randn(2, 3, 64, 64)
    exp = mmcam.CAM(model, layer, method=method)(x, CLASSES)
    for b, classes in enumerate(CLASSES):
        for k, c in enumerate(classes):
            A, G = _reference_acts_grads(model, layer, x, b, c)
            expected = _reference_map(method, A, G).float()
            torch.testing.assert_close(exp.raw[b, k], expected, rtol=2e-4, atol=2e-6 * float(expected.abs().max() + 1))


def test_eigencam_matches_reference():
    model = _model("resnet18")
    x = torch.randn(2, 3, 64, 64)
    exp = mmcam.CAM(model, "layer4", method="eigencam")(x, [1, 2])
    for b in range(2):
        A, _ = _reference_acts_grads(model, "layer4", x, b, 0)
        expected = torch.relu(torch.from_numpy(_np_first_component(A.numpy()))).float()
        for k in range(2):
            torch.testing.assert_close(exp.raw[b, k], expected, rtol=1e-4, atol=1e-5)


def test_cam_matches_reference_and_equals_gradcam_on_gap_linear():
    """Zhou et al.'s CAM from the fc weights; on GAP + one linear layer Grad-CAM is CAM / S."""
    model = _model("resnet18")
    x = torch.randn(2, 3, 64, 64)
    cam = mmcam.CAM(model, "layer4", method="cam")(x, CLASSES)
    grad = mmcam.CAM(model, "layer4", method="gradcam")(x, CLASSES)
    for b, classes in enumerate(CLASSES):
        A, _ = _reference_acts_grads(model, "layer4", x, b, 0)
        for k, c in enumerate(classes):
            expected = torch.relu(torch.einsum("c,chw->hw", model.fc.weight[c].detach().double(), A)).float()
            torch.testing.assert_close(cam.raw[b, k], expected, rtol=1e-4, atol=1e-5 * float(expected.max() + 1))
    positions = cam.raw.shape[-1] * cam.raw.shape[-2]
    torch.testing.assert_close(grad.raw * positions, cam.raw, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(grad.maps, cam.maps, rtol=1e-4, atol=1e-5)


def _small_layer_model():
    model = _model("resnet18")
    return model, "layer2"  # 128 channels: a per-channel reference loop stays fast


def test_scorecam_matches_reference():
    model, layer = _small_layer_model()
    x = torch.randn(2, 3, 32, 32)
    classes = [[3, 5], [1, 1]]
    exp = mmcam.CAM(model, layer, method="scorecam", batch_size=64)(x, classes)
    for b in range(2):
        A, _ = _reference_acts_grads(model, layer, x, b, 0)
        scores = torch.zeros(A.shape[0], 2, dtype=torch.float64)
        with torch.no_grad():
            for ch in range(A.shape[0]):
                up = F.interpolate(A[ch][None, None].float(), size=(32, 32), mode="bilinear", align_corners=False)[0, 0]
                mask = (up - up.min()) / (up.max() - up.min() + 1e-8)
                out = model(x[b : b + 1] * mask)
                for k, c in enumerate(classes[b]):
                    scores[ch, k] = out[0, c]
        for k in range(2):
            weights = scores[:, k].softmax(0)
            expected = torch.relu(torch.einsum("c,chw->hw", weights, A)).float()
            torch.testing.assert_close(exp.raw[b, k], expected, rtol=2e-4, atol=1e-5)


def test_ablationcam_matches_reference():
    model, layer = _small_layer_model()
    x = torch.randn(2, 3, 32, 32)
    classes = [[3, 5], [1, 2]]
    exp = mmcam.CAM(model, layer, method="ablationcam", batch_size=64)(x, classes)
    ref_model = copy.deepcopy(model)
    module = ref_model.get_submodule(layer)
    for b in range(2):
        A, _ = _reference_acts_grads(model, layer, x, b, 0)
        with torch.no_grad():
            base = ref_model(x[b : b + 1])[0]
            drops = torch.zeros(A.shape[0], 2, dtype=torch.float64)
            for ch in range(A.shape[0]):

                def zero(mod, inp, out, ch=ch):
                    out = out.clone()
                    out[:, ch] = 0
                    return out

                handle = module.register_forward_hook(zero)
                out = ref_model(x[b : b + 1])[0]
                handle.remove()
                for k, c in enumerate(classes[b]):
                    drops[ch, k] = (base[c] - out[c]) / base[c]
        for k in range(2):
            expected = torch.relu(torch.einsum("c,chw->hw", drops[:, k], A)).float()
            torch.testing.assert_close(exp.raw[b, k], expected, rtol=5e-4, atol=1e-4)


def test_matches_pytorch_grad_cam():
    """Cross-check with pytorch-grad-cam 1.5 where the two define the same map."""
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = _model("resnet18")
    x = torch.randn(2, 3, 128, 128)
    pairs = {
        "gradcam": pgc.GradCAM,
        "hirescam": pgc.HiResCAM,
        "gradcam++": pgc.GradCAMPlusPlus,
        "layercam": pgc.LayerCAM,
        "xgradcam": pgc.XGradCAM,
        "eigencam": pgc.EigenCAM,
    }
    for name, cls in pairs.items():
        ours = mmcam.CAM(model, "layer4", method=name)(x, [[3], [5]]).maps[:, 0].numpy()
        with cls(model=model, target_layers=[model.layer4]) as theirs_cam:
            theirs = theirs_cam(input_tensor=x, targets=[ClassifierOutputTarget(3), ClassifierOutputTarget(5)])
        for b in range(2):
            if ours[b].std() < 1e-6 or theirs[b].std() < 1e-6:  # all-negative map: both empty
                assert ours[b].max() < 1e-6 and theirs[b].max() < 1e-6, name
                continue
            corr = np.corrcoef(ours[b].ravel(), theirs[b].ravel())[0, 1]
            assert corr > 0.995, (name, b, corr)
