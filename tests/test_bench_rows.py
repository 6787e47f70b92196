"""The benchmark's DETR row at K = 1 (bench/real_sizes_hf.py): pytorch-grad-cam's per-box loop
gets its gradient although DetrConvEncoder freezes the ResNet's parameters (before: the hooked
layer's output was off the graph and LayerCAM failed with ``'>=' not supported between
instances of 'NoneType' and 'int'``)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

transformers = pytest.importorskip("transformers")
pytest.importorskip("pytorch_grad_cam")
ultralytics = pytest.importorskip("ultralytics")


def _tiny_detr():
    torch.manual_seed(0)
    backbone = transformers.ResNetConfig(
        num_channels=3, embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], layer_type="bottleneck", out_features=["stage4"]
    )
    tiny = dict(
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        num_queries=8,
        num_labels=3,
    )
    model = transformers.DetrForObjectDetection(
        transformers.DetrConfig(use_timm_backbone=False, use_pretrained_backbone=False, backbone_config=backbone, **tiny)
    ).eval()
    with torch.no_grad():
        model.class_labels_classifier.weight.mul_(8)
    return model, transformers.DetrImageProcessor(size={"shortest_edge": 128, "longest_edge": 171})


def test_detr_row_one_box_with_the_pytorch_grad_cam_loop():
    from bench.real_sizes_hf import detr_row

    photo = Image.open(os.path.join(os.path.dirname(ultralytics.__file__), "assets", "bus.jpg")).convert("RGB")
    row, what = detr_row("detr", 1, photo, pgc=True, build=_tiny_detr)
    assert what.startswith("1 boxes")
    (cam,) = row["pytorch-grad-cam loop"]()
    assert np.isfinite(cam).all() and cam.max() > 0
