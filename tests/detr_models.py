"""A tiny random-init HF DETR (basic ResNet, stage3: a 4x4 encoder grid at 64 px) shared by the
DETR method tests; nothing is downloaded."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

TINY = dict(
    d_model=32,
    encoder_layers=2,
    decoder_layers=2,
    encoder_attention_heads=2,
    decoder_attention_heads=2,
    encoder_ffn_dim=64,
    decoder_ffn_dim=64,
    num_queries=8,
    num_labels=3,
)


def tiny_resnet(config_class: Any = None, out_features: Sequence[str] = ("stage3",)) -> Any:
    """A tiny basic ResNet backbone config (``config_class``: e.g. RT-DETR's ResNet config)."""
    import transformers

    return (config_class or transformers.ResNetConfig)(
        num_channels=3, embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], layer_type="basic", out_features=list(out_features)
    )


def tiny_detr() -> tuple[Any, Any]:
    """``(DetrForObjectDetection, DetrImageProcessor)`` at 64 x 64, its class head spread so that a
    few queries are kept."""
    import transformers

    torch.manual_seed(0)
    config = transformers.DetrConfig(use_timm_backbone=False, use_pretrained_backbone=False, backbone_config=tiny_resnet(), **TINY)
    model = transformers.DetrForObjectDetection(config).eval()
    with torch.no_grad():  # random init scores every class alike: spread them so a few queries are kept
        model.class_labels_classifier.weight.mul_(8)
        model.class_labels_classifier.bias.zero_()
    return model, transformers.DetrImageProcessor(size={"height": 64, "width": 64})
