"""Targets: per-image lists, K-at-once, composition, gradient strategies."""

from __future__ import annotations

import pytest
import torch
import torchvision

import mmcam
from mmcam.targets import ClassLogit, ClassProbability, RawScore, TopClasses

X = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def _model():
    torch.manual_seed(1)
    return torchvision.models.resnet18(num_classes=6).eval()


def test_k_at_once_equals_k_separate_runs():
    model = _model()
    together = mmcam.CAM(model, "layer4")(X, [0, 3, 5])
    for k, c in enumerate([0, 3, 5]):
        alone = mmcam.CAM(model, "layer4")(X, [c])
        torch.testing.assert_close(together.raw[:, k], alone.raw[:, 0], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(together.scores[:, k], alone.scores[:, 0])


def test_batched_and_loop_gradients_agree():
    model = _model()
    batched = mmcam.CAM(model, "layer3", grad_mode="batched")(X, [0, 1, 2, 3])
    loop = mmcam.CAM(model, "layer3", grad_mode="loop")(X, [0, 1, 2, 3])
    auto = mmcam.CAM(model, "layer3", grad_mode="auto")
    first, second = auto(X, [0, 1, 2, 3]), auto(X, [0, 1, 2, 3])
    assert auto._chosen_mode in ("batched", "loop")
    for other in (loop, first, second):
        torch.testing.assert_close(batched.raw, other.raw, rtol=1e-5, atol=1e-7)


def test_measured_gradient_strategy_is_kept_for_the_model(monkeypatch):
    """A new CAM on a model "auto" has already measured reuses that choice (the one-call task
    functions build a CAM per call) instead of timing both strategies again."""
    model = _model()
    mmcam.CAM(model, "layer3")(X, [0, 1])

    def measure_again(*args, **kwargs):
        raise AssertionError("measured the gradient strategies again")

    monkeypatch.setattr(mmcam.CAM, "_measure_modes", measure_again)
    again = mmcam.CAM(model, "layer4")
    again(X, [2, 3])
    assert again._chosen_mode in ("batched", "loop")
    with pytest.raises(AssertionError, match="again"):
        mmcam.CAM(_model(), "layer3")(X, [0, 1])  # another model is measured


def test_per_image_targets_match_shared():
    model = _model()
    per_image = mmcam.CAM(model, "layer4")(X, [[1], [2], [3]])
    for b, c in enumerate([1, 2, 3]):
        shared = mmcam.CAM(model, "layer4")(X[b : b + 1], [c])
        # batch of 3 vs batch of 1 may take different conv kernels: float32 noise (~1e-4 of the peak on this random-init net) relative to the map scale
        scale = float(shared.raw.abs().max())
        torch.testing.assert_close(per_image.raw[b], shared.raw[0], rtol=1e-4, atol=1e-3 * scale)


def test_default_target_is_top_class():
    model = _model()
    exp = mmcam.CAM(model, "layer4")(X)
    top = model(X).argmax(1)
    assert exp.targets == [[f"ClassLogit({int(c)})"] for c in top]


def test_multi_column_target_and_composition():
    model = _model()
    logits = model(X).detach()
    top = mmcam.CAM(model, "layer4")(X, [TopClasses(2)])
    assert top.scores.shape == (3, 2)
    torch.testing.assert_close(top.scores, logits.topk(2).values)
    diff = mmcam.CAM(model, "layer4")(X, [ClassLogit(1) - ClassLogit(2), 2.0 * ClassLogit(1), ClassProbability(0)])
    torch.testing.assert_close(diff.scores[:, 0], logits[:, 1] - logits[:, 2])
    torch.testing.assert_close(diff.scores[:, 1], 2 * logits[:, 1])
    torch.testing.assert_close(diff.scores[:, 2], logits.softmax(1)[:, 0])
    raw = RawScore(3)(logits)
    torch.testing.assert_close(raw, logits[:, 3])


def test_dict_inputs_and_structured_outputs():
    class DictModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = _model()

        def forward(self, pixel_values, scale):
            return {"logits": self.net(pixel_values) * scale}

    model = DictModel()
    exp = mmcam.CAM(model, "net.layer4")({"pixel_values": X, "scale": 2.0}, [1])
    assert exp.maps.shape == (3, 1, 64, 64)
    assert isinstance(exp.output, dict) and not exp.output["logits"].requires_grad


def test_multi_layer_fusion():
    model = _model()
    exp = mmcam.CAM(model, ["layer3", "layer4"], method="layercam")(X, [1])
    assert exp.raw.shape == (3, 1, 4, 4)  # the finer grid
    assert len(exp.layer_raw) == 2
    assert exp.maps.min() >= 0 and exp.maps.max() <= 1


def test_fused_layers_each_equal_their_single_layer_map():
    """Hooking layer3 and layer4 together keeps layer3 on the graph (only the earliest is cut)."""
    model = _model()
    fused = mmcam.CAM(model, ["layer3", "layer4"], method="gradcam")(X, [1, 4])
    for index, layer in enumerate(["layer3", "layer4"]):
        single = mmcam.CAM(model, layer, method="gradcam")(X, [1, 4])
        torch.testing.assert_close(fused.layer_raw[index], single.raw, rtol=1e-5, atol=1e-7)
