"""The automatic layer works on every torchvision classification family (random init)."""

from __future__ import annotations

import pytest
import torch
import torchvision

import mmcam

FAMILIES = {
    "resnet18": ("layer4", 96),
    "vgg11_bn": ("features", 96),
    "densenet121": ("features", 96),
    "mobilenet_v2": ("features", 96),
    "mobilenet_v3_small": ("features", 96),
    "efficientnet_b0": ("features", 96),
    "convnext_tiny": ("features", 96),
    "regnet_y_400mf": ("trunk_output", 96),
    "swin_t": (None, 96),
}


def _check(exp, size, k):
    assert exp.maps.shape == (1, k, size, size)
    assert torch.isfinite(exp.maps).all() and torch.isfinite(exp.raw).all()
    assert exp.maps.min() >= 0 and exp.maps.max() <= 1
    assert (exp.maps.flatten(2).std(-1) > 0).any(), "every map is constant"


@pytest.mark.parametrize("name", list(FAMILIES))
def test_auto_layer_on_torchvision_family(name):
    torch.manual_seed(0)
    expected, size = FAMILIES[name]
    model = torchvision.models.get_model(name, weights=None, num_classes=8).eval()
    exp = mmcam.CAM(model)(torch.randn(1, 3, size, size), [0, 1, 2, 3])
    if expected is not None:
        assert exp.layers == [expected]
    _check(exp, size, 4)


def test_auto_layer_on_torchvision_vit():
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(image_size=64, patch_size=16, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=8)
    torch.nn.init.normal_(model.heads.head.weight, std=0.2)  # torchvision zero-initialises the head
    exp = mmcam.CAM(model.eval())(torch.randn(1, 3, 64, 64), [0, 1, 2, 3])
    assert exp.layers[0].endswith("ln_1") and exp.raw.shape[-2:] == (4, 4)
    _check(exp, 64, 4)


@pytest.mark.parametrize("family", ["vit", "deit", "swin", "convnext", "beit"])
def test_auto_layer_on_hf_family(family):
    import transformers as tf

    torch.manual_seed(0)
    small = dict(image_size=64, num_labels=5)
    if family == "vit":
        model = tf.ViTForImageClassification(
            tf.ViTConfig(patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, **small)
        )
    elif family == "deit":
        model = tf.DeiTForImageClassification(
            tf.DeiTConfig(patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, **small)
        )
    elif family == "beit":
        model = tf.BeitForImageClassification(
            tf.BeitConfig(patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, use_mean_pooling=False, **small)
        )
    elif family == "swin":
        model = tf.SwinForImageClassification(tf.SwinConfig(patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4, **small))
    else:
        model = tf.ConvNextForImageClassification(tf.ConvNextConfig(hidden_sizes=[16, 32], depths=[1, 1], num_stages=2, num_labels=5))
    exp = mmcam.CAM(model.eval())({"pixel_values": torch.randn(1, 3, 64, 64)}, [0, 1, 2, 3])
    _check(exp, 64, 4)


def test_default_layer_is_probed_once_per_input_layout():
    """The structural probe (one extra forward) runs once per model and input layout; another
    image size or a changed model probes again, and the answer is the same as a fresh probe."""
    from mmcam.engine.layers import default_layers

    model = torchvision.models.resnet18(num_classes=3).eval()
    forwards = []
    model.register_forward_pre_hook(lambda module, args: forwards.append(args[0].shape))
    x = torch.rand(1, 3, 64, 64)
    assert default_layers(model, x) == ["layer4"] and len(forwards) == 1
    assert default_layers(model, torch.rand(4, 3, 64, 64)) == ["layer4"] and len(forwards) == 1  # batch size is not layout
    default_layers(model, torch.rand(1, 3, 96, 96))
    assert len(forwards) == 2
    model.layer4 = torch.nn.Sequential(model.layer4, torch.nn.Conv2d(512, 512, 1))
    assert default_layers(model, x) == ["layer4"] and len(forwards) == 3
    exp = mmcam.CAM(model, None)(x, [0])
    assert exp.layers == ["layer4"] and len(forwards) == 4  # the explaining forward only
