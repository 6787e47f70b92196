"""LeGrad against a naive per-layer implementation on a tiny ViT classifier and a tiny CLIP:
each layer's own prediction, its gradient w.r.t. that layer's attention, ReLU, mean over
heads and rows, mean over layers; K targets at once equal one at a time; model untouched."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from modelstate import assert_same_state, snapshot
from vl_models import IMAGE, clip

import mmcam
from mmcam.engine.guard import transient_capture_hooks
from mmcam.errors import MethodError
from mmcam.methods.legrad import LeGrad
from mmcam.reshape import Auto
from mmcam.targets import ClassLogit, ImageTextSimilarity, TopClasses

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, num_labels=4, initializer_range=0.2
    )
    return transformers.ViTForImageClassification(config).eval()


def _with_attentions(model, inputs):
    """The model's output with attentions and hidden states (eager, parameters on the graph),
    its attention implementation, requires_grad and hooks put back after."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    saved = [(m.config, m.config._attn_implementation_internal) for m in model.modules() if hasattr(m, "config")]
    for p, _ in flags:
        p.requires_grad_(True)
    model.set_attn_implementation("eager")
    try:
        with transient_capture_hooks(model):
            return model(**inputs, output_attentions=True, output_hidden_states=True)
    finally:
        for config, value in saved:
            config._attn_implementation_internal = value
        for p, flag in flags:
            p.requires_grad_(flag)


def _naive(attentions, per_layer_score, start=0):
    """mean_l mean_{h,i} ReLU(∂s^l/∂A^l), one layer and one score at a time."""
    layers = list(range(len(attentions)))[start:]
    total = 0
    for layer in layers:
        (grad,) = torch.autograd.grad(per_layer_score(layer), [attentions[layer]], retain_graph=True)
        total = total + grad[0].clamp(min=0).mean(0).mean(0)
    return (total / len(layers))[1:]  # the patch tokens


@pytest.mark.parametrize("start", [0, -2])
def test_vit_classes_equal_the_naive_layers(vit, start):
    x = torch.rand(1, 3, 32, 32)
    before = snapshot(vit)
    exp = mmcam.CAM(vit, method=LeGrad(start=start))(x, [ClassLogit(1), ClassLogit(3)])
    assert_same_state(before, snapshot(vit))
    assert exp.raw.shape == (1, 2, 4, 4) and exp.method == "legrad"
    out = _with_attentions(vit, {"pixel_values": x})
    for k, c in enumerate((1, 3)):
        naive = _naive(out.attentions, lambda layer, c=c: vit.classifier(vit.vit.layernorm(out.hidden_states[layer + 1])[:, 0])[0, c], start)
        torch.testing.assert_close(exp.raw[0, k].flatten(), naive, rtol=1e-4, atol=1e-7)
    # the top class is chosen on the model's output, then read at every layer
    top = int(out.logits.argmax())
    torch.testing.assert_close(
        mmcam.CAM(vit, method=LeGrad(start=start))(x, [TopClasses(1)]).raw[0, 0], mmcam.CAM(vit, method=LeGrad(start=start))(x, [ClassLogit(top)]).raw[0, 0]
    )


def test_clip_texts_equal_the_naive_layers():
    model, processor = clip()
    inputs = dict(processor(images=IMAGE, text=["a red circle", "a blue square"], return_tensors="pt", padding=True))
    before = snapshot(model)
    exp = mmcam.CAM(model, method="legrad", reshape=Auto(model))(inputs, [ImageTextSimilarity()])
    assert_same_state(before, snapshot(model))
    out = _with_attentions(model, inputs)
    text, tower = out.text_embeds.detach(), model.vision_model

    def similarity(layer, j):
        image = F.normalize(model.visual_projection(tower.post_layernorm(out.vision_model_output.hidden_states[layer + 1][:, 0])), dim=-1)
        return model.logit_scale.exp() * (image @ text[j])[0]

    for j in range(2):
        naive = _naive(out.vision_model_output.attentions, lambda layer, j=j: similarity(layer, j))
        torch.testing.assert_close(exp.raw[0, j].flatten(), naive, rtol=1e-4, atol=1e-7)
        one = mmcam.explain_similarity(model, processor, IMAGE, ["a red circle", "a blue square"][j], method="legrad")
        many = mmcam.explain_similarity(model, processor, IMAGE, ["a red circle", "a blue square"], method="legrad")
        torch.testing.assert_close(one.maps[0], many.maps[j], rtol=1e-4, atol=1e-5)


def test_task_call_and_refusals(vit):
    exp = mmcam.explain_classification(vit, (IMAGE[:32, :32]), method="legrad")
    assert exp.maps.shape == (1, 32, 32) and torch.isfinite(exp.maps).all() and exp.maps.max() == 1
    with pytest.raises(MethodError, match="start=-5"):
        mmcam.CAM(vit, method=LeGrad(start=-5))(torch.rand(1, 3, 32, 32), [0])
    with pytest.raises(MethodError, match="legrad"):
        mmcam.CAM(torch.nn.Conv2d(3, 2, 3), method="legrad")(torch.zeros(1, 3, 8, 8), [0])
