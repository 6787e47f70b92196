"""Random-init ultralytics YOLO models from their yamls at 640, with outputs that vary across
anchors and classes, and the real photos they are compared on against the model's predictor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mmcam.io import load_image

ultralytics = pytest.importorskip("ultralytics")
ASSETS = Path(ultralytics.__file__).parent / "assets"
BUS = np.asarray(load_image(ASSETS / "bus.jpg"))  # 1080 x 810
ZIDANE = np.asarray(load_image(ASSETS / "zidane.jpg"))  # 720 x 1280
PHOTOS = torch.cat([torch.nn.functional.interpolate(torch.from_numpy(p.copy()).permute(2, 0, 1)[None] / 255.0, size=(640, 640)) for p in (BUS, ZIDANE)])


def yolo(cfg: str):
    """A random-init YOLO from its yaml whose outputs vary across anchors and classes. At init
    the activations of YOLO26 / YOLO12 vanish through the backbone (std 1e-9 at the neck) and
    every class ties: BatchNorm statistics from one train-mode pass on the photos keep them
    alive, and the last class / mask convolutions are scaled to give logits of unit spread."""
    torch.manual_seed(0)
    model = ultralytics.YOLO(cfg)
    inner, head = model.model, model.model.model[-1]
    norms = [m for m in inner.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    lasts = [branch[-1] for name in ("cv3", "one2one_cv3", "cv4", "one2one_cv4") for branch in getattr(head, name, None) or []]
    lasts = [m for m in lasts if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        for m in norms:
            m.momentum = 1.0
        inner.train()(PHOTOS)
        for m in norms:
            m.momentum = 0.03
        for m in lasts:
            m.weight.normal_(0, 1)
            m.bias.zero_()
        inner.eval()
        raw = inner(PHOTOS)[1]
        inner.train()
        spread = raw.get("one2many", raw)["scores"].std()
        for m in lasts:
            m.weight.div_(spread)
            m.bias.normal_(-6, 0.5)
    return model


def predicted(model, photo, **kwargs):
    return model.predict(photo[..., ::-1].copy(), verbose=False, **kwargs)[0]  # the predictor reads BGR
