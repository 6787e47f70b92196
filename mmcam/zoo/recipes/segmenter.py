"""The zoo segmenter: an HF Segformer on scenes' semantic masks (background + shapes)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...data import SHAPES, SceneConfig, generate_scenes
from ..models import build
from .common import BACKGROUNDS, EVAL_SEED, MEAN, STD, fit, images, save, scene_batch

__all__ = ["train_segmenter", "segmenter_quality"]


def segmenter_quality(model: torch.nn.Module, n: int = 300, seed: int = EVAL_SEED) -> dict[str, float]:
    scenes = generate_scenes(n, seed, SceneConfig())
    with torch.no_grad():
        logits = model(pixel_values=images(scenes)).logits
    pred = F.interpolate(logits, size=(64, 64), mode="bilinear", align_corners=False).argmax(1)
    truth = torch.from_numpy(np.stack([s.semantic for s in scenes]))
    ious = []
    for c in range(len(SHAPES) + 1):
        inter = ((pred == c) & (truth == c)).sum().item()
        union = ((pred == c) | (truth == c)).sum().item()
        if union:
            ious.append(inter / union)
    return {"mIoU": round(float(np.mean(ious)), 4), "per_class_iou": [round(v, 4) for v in ious], "eval_images": n}


def train_segmenter(seed: int, minutes: float, out: Path) -> None:
    torch.manual_seed(seed)
    arch = {
        "type": "hf_segformer",
        "config": {
            "num_channels": 3,
            "num_encoder_blocks": 4,
            "depths": [1, 1, 1, 1],
            "sr_ratios": [4, 2, 1, 1],
            "hidden_sizes": [16, 32, 64, 96],
            "patch_sizes": [3, 3, 3, 3],
            "strides": [2, 2, 2, 2],
            "num_attention_heads": [1, 1, 2, 2],
            "mlp_ratios": [2, 2, 2, 2],
            "decoder_hidden_size": 64,
            "num_labels": len(SHAPES) + 1,
            "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0,
            "classifier_dropout_prob": 0.0,
            "drop_path_rate": 0.0,
        },
    }
    cfg = {"architecture": arch}
    model = build(cfg)

    def loss(step: int) -> torch.Tensor:
        scenes = scene_batch(step, seed, 32, lambda s: SceneConfig(background=BACKGROUNDS[s % 3]))
        logits = model(pixel_values=images(scenes)).logits
        logits = F.interpolate(logits, size=(64, 64), mode="bilinear", align_corners=False)
        return F.cross_entropy(logits, torch.from_numpy(np.stack([s.semantic for s in scenes])))

    start = time.perf_counter()
    steps = fit(model, loss, minutes, 6000, 3e-3, "segmenter")
    cfg.update(
        preprocessing={"size": 64, "mean": MEAN, "std": STD, "as_dict": True},
        labels=["background", *SHAPES],
        data={"config": "SceneConfig(background=plain|textured|cluttered)", "images_per_step": 32},
        train={
            "seed": seed,
            "steps": steps,
            "minutes": round((time.perf_counter() - start) / 60, 2),
            "command": f"python -m mmcam.zoo.train segmenter --seed {seed}",
        },
        metrics=segmenter_quality(model),
    )
    save("segmenter", model, cfg, out)
