"""Token, channels-last and non-square layouts, with grids taken from facts."""

from __future__ import annotations

import pytest
import torch
import torchvision

import mmcam
from mmcam.errors import InputError
from mmcam.reshape import NCHW, NHWC, Auto, Tokens


def _tokens(prefix: int, h: int, w: int, d: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    grid = torch.randn(2, d, h, w)
    patches = grid.flatten(2).transpose(1, 2)
    return torch.cat([torch.randn(2, prefix, d), patches], 1), grid


@pytest.mark.parametrize("prefix", [0, 1, 2, 5])
def test_tokens_inferred_from_input_size(prefix):
    seq, grid = _tokens(prefix, 4, 6)
    out = Tokens()(seq, (32, 48))  # stride 8 on both axes
    assert torch.equal(out, grid)


def test_tokens_from_patch_size_and_explicit_grid():
    seq, grid = _tokens(1, 3, 7)
    assert torch.equal(Tokens(patch_size=16)(seq, (48, 112)), grid)
    assert torch.equal(Tokens(prefix=1, grid=(3, 7))(seq, None), grid)
    with pytest.raises(InputError, match="Tokens\\(prefix=P, grid="):
        Tokens(prefix=0)(torch.randn(1, 7, 4), (64, 64))


def test_auto_picks_layouts():
    x = torch.randn(1, 7, 7, 96)
    assert isinstance(Auto().for_tensor(x, (224, 224)), NHWC)
    assert isinstance(Auto().for_tensor(torch.randn(1, 96, 7, 7), (224, 224)), NCHW)
    assert isinstance(Auto().for_tensor(torch.randn(1, 50, 8), (224, 224)), Tokens)
    with pytest.raises(InputError):
        Auto().for_tensor(torch.randn(2, 3), None)


def test_hf_vit_facts_and_non_square_input():
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=3)
    model = ViTForImageClassification(config).eval()
    auto = Auto(model)
    assert auto.facts == {"patch_size": 8, "prefix": 1}
    exp = mmcam.CAM(model)({"pixel_values": torch.randn(1, 3, 32, 48), "interpolate_pos_encoding": True}, [0, 1])
    assert exp.raw.shape == (1, 2, 4, 6)
    assert exp.maps.shape == (1, 2, 32, 48)
    assert torch.isfinite(exp.maps).all() and exp.maps.std() > 0


def test_torchvision_vit_auto_layer_avoids_cls_trap():
    model = (
        torchvision.models.vit_b_16(image_size=32, num_classes=4)
        if False
        else torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=4)
    )
    torch.nn.init.normal_(model.heads.head.weight, std=0.1)  # torchvision zero-inits the head
    model.eval()
    exp = mmcam.CAM(model)(torch.randn(2, 3, 32, 32), [1])
    assert exp.layers == ["encoder.layers.encoder_layer_1.ln_1"]
    assert exp.raw.shape == (2, 1, 4, 4)
    assert exp.maps.flatten(2).std(-1).min() > 0


def test_swin_channels_last():
    model = torchvision.models.swin_t(num_classes=3).eval()
    exp = mmcam.CAM(model, "features.7")(torch.randn(1, 3, 64, 64), [0])
    assert exp.raw.shape == (1, 1, 2, 2)
    assert torch.isfinite(exp.maps).all()
