"""The zoo DETR: HF DetrForObjectDetection (basic ResNet backbone) from scratch."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ...data import SHAPES, SceneConfig, generate_scenes
from ..models import build
from ..processing import detr_processor
from .common import BACKGROUNDS, EVAL_SEED, MEAN, STD, coco_map, fit, images, save, scene_batch

__all__ = ["train_detr", "detr_quality"]


def _detr_targets(scenes: list) -> list[dict[str, torch.Tensor]]:
    """DETR training targets: 0-based class ids and normalised (cx, cy, w, h) boxes."""
    targets = []
    for scene in scenes:
        size = scene.image.shape[0]
        boxes = [[(x + w / 2) / size, (y + h / 2) / size, w / size, h / size] for x, y, w, h in (o.box for o in scene.objects)]
        targets.append(
            {
                "class_labels": torch.tensor([o.category_id - 1 for o in scene.objects], dtype=torch.long),
                "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            }
        )
    return targets


def detr_quality(model: torch.nn.Module, processor: Any, n: int = 300, seed: int = EVAL_SEED) -> dict[str, float]:
    """COCO mAP of a zoo DETR on ``n`` fresh scenes (plain/textured/cluttered thirds), every
    query kept (threshold 0) as COCO evaluation expects."""
    scenes = [s for i in range(3) for s in generate_scenes(n // 3 + 1, seed + i, SceneConfig(background=BACKGROUNDS[i]))][:n]
    detections: list[dict[str, torch.Tensor]] = []
    for start in range(0, n, 100):
        chunk = scenes[start : start + 100]
        with torch.no_grad():
            outputs = model(**processor(images=[s.image for s in chunk], return_tensors="pt"))
        detections += processor.post_process_object_detection(outputs, threshold=0.0, target_sizes=[s.image.shape[:2] for s in chunk])
    return {**coco_map(scenes, detections), "eval_images": n}


def train_detr(seed: int, minutes: float, out: Path, steps: int = 8000) -> None:
    """DETR (Carion et al. 2020, https://arxiv.org/abs/2005.12872) from scratch: HF's
    Hungarian-matched loss (CE + L1 + GIoU) on fresh scenes every step."""
    torch.manual_seed(seed)
    arch = {
        "type": "hf_detr",
        "backbone": {"embedding_size": 32, "hidden_sizes": [32, 64, 128], "depths": [1, 1, 1], "layer_type": "basic", "out_features": ["stage3"]},
        "config": {
            "d_model": 64,
            "num_queries": 10,
            "encoder_layers": 2,
            "decoder_layers": 2,
            "encoder_attention_heads": 4,
            "decoder_attention_heads": 4,
            "encoder_ffn_dim": 128,
            "decoder_ffn_dim": 128,
            "dropout": 0.0,
            "auxiliary_loss": True,
            "num_labels": len(SHAPES),
            "id2label": dict(enumerate(SHAPES)),
            "label2id": {name: i for i, name in enumerate(SHAPES)},
        },
    }
    cfg: dict[str, Any] = {"architecture": arch, "preprocessing": {"size": 64, "mean": MEAN, "std": STD}}
    model = build(cfg)
    processor = detr_processor(cfg)

    def loss(step: int) -> torch.Tensor:
        scenes = scene_batch(step, seed, 32, lambda s: SceneConfig(background=BACKGROUNDS[s % 3]))
        return model(pixel_values=images(scenes), labels=_detr_targets(scenes)).loss

    start = time.perf_counter()
    taken = fit(model, loss, minutes, steps, 5e-4, "detr", warmup=100)
    cfg.update(
        labels=list(SHAPES),
        data={"config": "SceneConfig(background=plain|textured|cluttered), 1-3 objects", "images_per_step": 32},
        train={
            "seed": seed,
            "steps": taken,
            "minutes": round((time.perf_counter() - start) / 60, 2),
            "command": f"python -m mmcam.zoo.train detr --seed {seed} --steps {steps} --minutes {minutes}",
        },
        metrics=detr_quality(model, processor),
    )
    save("detr", model, cfg, out)
