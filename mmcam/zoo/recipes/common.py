"""What every zoo recipe shares: seeds and normalisation, scene batches as tensors, the
AdamW/cosine training loop, saving weights + config + card, and COCO mAP for the detectors."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_model
from tqdm.auto import tqdm

from ...data import SHAPES, SceneConfig, generate_scenes
from .. import WEIGHTS_DIR

__all__ = ["EVAL_SEED", "MEAN", "STD", "BACKGROUNDS", "images", "scene_batch", "fit", "save", "write_config", "coco_map", "predict"]

EVAL_SEED = 987_654  # evaluation scenes never overlap training seeds (< 10^6 steps)


MEAN = STD = (0.5, 0.5, 0.5)


BACKGROUNDS = ("plain", "textured", "cluttered")


def predict(model: Any, source: Any, **kwargs: Any) -> list[Any]:
    """``model.predict(source, **kwargs)`` with the process's torch thread count kept: ultralytics'
    ``select_device`` sets it to ``min(8, cpus - 1)`` (one thread on a 2-core machine) for the
    rest of the process, so every measurement after a zoo quality check ran on one thread."""
    threads = torch.get_num_threads()
    try:
        return model.predict(source, **kwargs)
    finally:
        torch.set_num_threads(threads)


def images(scenes: list, size: int = 64) -> torch.Tensor:
    arr = np.stack([s.image for s in scenes]).astype(np.float32) / 255.0
    x = torch.from_numpy(arr).permute(0, 3, 1, 2)
    return (x - 0.5) / 0.5


def scene_batch(step: int, seed: int, n: int, config_for: Callable[[int], SceneConfig]) -> list:
    return generate_scenes(n, seed * 1_000_003 + step, config_for(step))


def fit(model: torch.nn.Module, loss_for_step: Callable[[int], torch.Tensor], minutes: float, max_steps: int, lr: float, desc: str, warmup: int = 1) -> int:
    """AdamW with linear warm-up and cosine decay until ``max_steps`` or ``minutes`` run out;
    returns the steps taken."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    start = time.perf_counter()
    model.train()
    bar = tqdm(range(max_steps), desc=desc, unit="step")
    step = 0
    for step in bar:
        frac = min(1.0, max(step / max_steps, (time.perf_counter() - start) / (minutes * 60)))
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * frac)) * min(1.0, (step + 1) / warmup)
        loss = loss_for_step(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if frac >= 1.0:
            break
    model.eval()
    return step + 1


def save(name: str, model: torch.nn.Module, cfg: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if "train" in cfg:
        cfg["train"]["threads"] = torch.get_num_threads()
        if cfg["train"]["threads"] != 2:
            cfg["train"]["command"] += f" --threads {cfg['train']['threads']}"
    save_model(model, str(out / f"{name}.safetensors"))  # handles tied weights (e.g. GPT-2's lm_head)
    write_config(name, cfg, out)
    print(json.dumps({k: cfg[k] for k in ("metrics", "train") if k in cfg}, indent=2))


def write_config(name: str, cfg: dict[str, Any], out: Path) -> None:
    """``out/NAME.json``; for the shipped zoo (``out`` is the weights folder) its model card too."""
    (out / f"{name}.json").write_text(json.dumps(cfg, indent=2))
    if out == WEIGHTS_DIR:
        from ..cards import write_card

        write_card(name, cfg)


def coco_map(scenes: list, detections: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """mAP over IoU 0.50 and 0.50:0.95 with pycocotools' ``COCOeval`` (Lin et al. 2014,
    https://arxiv.org/abs/1405.0312): ground truth = the scenes' visible-pixel boxes,
    detections = per image ``{"boxes" (xyxy px), "scores", "labels" (0-based)}``."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO()
    gt.dataset = {
        "images": [{"id": i, "width": s.image.shape[1], "height": s.image.shape[0]} for i, s in enumerate(scenes)],
        "categories": [{"id": c + 1, "name": name} for c, name in enumerate(SHAPES)],
        "annotations": [
            {
                "id": len(scenes) * 10 + 10 * i + j,
                "image_id": i,
                "category_id": o.category_id,
                "bbox": list(o.box),
                "area": float(o.box[2] * o.box[3]),
                "iscrowd": 0,
            }
            for i, s in enumerate(scenes)
            for j, o in enumerate(s.objects)
        ],
    }
    rows = [
        {"image_id": i, "category_id": int(label) + 1, "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)], "score": float(score)}
        for i, det in enumerate(detections)
        for (x0, y0, x1, y1), score, label in zip(det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist())
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(rows) if rows else COCO(), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {"mAP50": round(float(evaluator.stats[1]), 4), "mAP50_95": round(float(evaluator.stats[0]), 4)}
