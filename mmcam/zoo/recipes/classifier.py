"""The zoo classifier: a small ResNet on one-shape scenes (plain, textured, cluttered
backgrounds in turn), cross-entropy on fresh scenes every step."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ...data import SHAPES, SceneConfig, classification_config, generate_scenes
from ..models import build
from .common import BACKGROUNDS, EVAL_SEED, MEAN, STD, fit, images, save, scene_batch

__all__ = ["train_classifier", "classifier_quality", "RESNET"]

RESNET = {"type": "small_resnet", "num_classes": len(SHAPES), "widths": [16, 32, 64, 128], "layers": [1, 1, 1, 1], "strides": [1, 2, 2, 1]}


def _classification_config(step: int) -> SceneConfig:
    return classification_config(background=BACKGROUNDS[step % 3])


def classifier_quality(model: torch.nn.Module, n: int = 500, seed: int = EVAL_SEED) -> dict[str, float]:
    scenes = [s for i in range(3) for s in generate_scenes(n // 3 + 1, seed + i, classification_config(background=BACKGROUNDS[i]))][:n]
    with torch.no_grad():
        logits = model(images(scenes))
    logits = getattr(logits, "logits", logits)
    labels = torch.tensor([s.label - 1 for s in scenes])
    return {"accuracy": round(float((logits.argmax(1) == labels).float().mean()), 4), "eval_images": len(scenes)}


def train_classifier(
    seed: int, minutes: float, out: Path, name: str = "classifier", arch: dict[str, Any] = RESNET, max_steps: int = 4000, lr: float = 2e-3, warmup: int = 1
) -> None:
    """Cross-entropy on 64 fresh one-shape scenes per step (backgrounds in turn), AdamW ``lr``
    with ``warmup`` steps and cosine decay to ``max_steps`` (or ``minutes``, whichever ends first)."""
    torch.manual_seed(seed)
    as_dict = arch["type"].startswith("hf_")
    cfg = {"architecture": arch}
    model = build(cfg)

    def loss(step: int) -> torch.Tensor:
        scenes = scene_batch(step, seed, 64, _classification_config)
        out = model(images(scenes))
        logits = getattr(out, "logits", out)
        return F.cross_entropy(logits, torch.tensor([s.label - 1 for s in scenes]))

    start = time.perf_counter()
    taken = fit(model, loss, minutes, max_steps, lr, name, warmup=warmup)
    wall = time.perf_counter() - start
    cfg.update(
        preprocessing={"size": 64, "mean": MEAN, "std": STD, "as_dict": as_dict},
        labels=list(SHAPES),
        data={"config": "classification_config(background=plain|textured|cluttered)", "images_per_step": 64},
        train={"seed": seed, "steps": taken, "minutes": round(wall / 60, 2), "command": f"python -m mmcam.zoo.train {name} --seed {seed}"},
        metrics=classifier_quality(model),
    )
    save(name, model, cfg, out)
