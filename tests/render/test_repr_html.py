"""Jupyter display of explanation objects: every map is inlined as a PNG with its label."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import torch
from PIL import Image
from torch import nn

import mmcam


def _pngs(markup: str) -> list[np.ndarray]:
    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(b)))) for b in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", markup)]


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3)
    ).eval()


def test_engine_explanation_repr_html():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    exp = mmcam.CAM(_model(), "2")(x, [0, 2])
    markup = exp._repr_html_()
    images = _pngs(markup)
    assert len(images) == 4  # B x K
    assert all(img.shape == (128, 128, 3) for img in images)  # 16 px upscaled 8x
    assert markup.count("<figcaption") == 4 and "gradcam" in markup
    assert f"{float(exp.scores[1, 1]):.3g}" in markup


def test_task_explanation_repr_html():
    model, processor = mmcam.zoo.load("classifier")
    image = mmcam.data.generate_scenes(1, 3)[0].image
    exp = mmcam.explain_classification(model, image, processor=processor, topk=2)
    markup = exp._repr_html_()
    assert len(_pngs(markup)) == 2 and all(label in markup for label in exp.items)
