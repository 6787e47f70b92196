"""Re-measure every shipped zoo model on freshly generated scenes against issue 3's bars:
``python -m mmcam.zoo.quality [--scale 1.0] [--seed S] [--models NAME ...]``.

The training recipes measure each model once, on the evaluation seed, when they finish;
this script loads the *shipped* weights (``mmcam.zoo.load``) and measures them again on
scenes from another seed, with each recipe's own quality function, so a reader can check the
the zoo table (docs/zoo.md) without training anything. YOLO is measured here with pycocotools (the
same :func:`mmcam.zoo.recipes.common.coco_map` as DETR) on ultralytics' own predictions at
``conf=0.001``. Exit status 1 if a model misses its bar.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

SEED = 2_026_001  # neither a training seed (seed * 1_000_003 + step) nor the recipes' EVAL_SEED

#: name -> (metric path, bar); ``per_type`` metrics must meet the bar on every type
BARS: dict[str, list[tuple[str, float]]] = {
    "classifier": [("accuracy", 0.95)],
    "vit": [("accuracy", 0.95)],
    "captioner": [("exact_caption", 0.90), ("word_accuracy", 0.97)],
    "vqa": [("per_type", 0.85)],
    "yolo": [("mAP50", 0.85)],
    "detr": [("mAP50", 0.85)],
    "segmenter": [("mIoU", 0.8)],
    "qnet": [("optimal_action_agreement", 0.95)],
    "yolo26": [("mAP50", 0.85)],
    "pose": [("mAP50", 0.85)],  # box mAP; keypoints: PCK reported (no bar in issue 14)
    "vlm": [("per_type", 0.90), ("exact_caption", 0.90)],
}
#: scenes (grid states) per model at ``--scale 1``: the recipes' own evaluation sizes
SIZES = {
    "classifier": 500,
    "vit": 500,
    "captioner": 300,
    "vqa": 200,
    "yolo": 300,
    "detr": 300,
    "segmenter": 300,
    "qnet": 1000,
    "yolo26": 300,
    "pose": 300,
    "vlm": 200,
}


def yolo_quality(model: Any, n: int = 300, seed: int = SEED) -> dict[str, float]:
    """COCO mAP of an ultralytics ``YOLO`` on ``n`` fresh scenes (plain/textured/cluttered thirds)."""
    from ..data import SceneConfig, generate_scenes
    from .recipes.common import BACKGROUNDS, coco_map, predict

    os.environ.setdefault("YOLO_OFFLINE", "1")
    scenes = [s for i in range(3) for s in generate_scenes(n // 3 + 1, seed + i, SceneConfig(background=BACKGROUNDS[i]))][:n]
    detections = []
    for start in range(0, n, 64):
        chunk = scenes[start : start + 64]
        # ultralytics reads numpy images as BGR (OpenCV's order)
        results = predict(model, [s.image[..., ::-1] for s in chunk], imgsz=chunk[0].image.shape[0], conf=0.001, verbose=False, device="cpu")
        for r in results:
            detections.append({"boxes": r.boxes.xyxy.cpu(), "scores": r.boxes.conf.cpu(), "labels": r.boxes.cls.cpu().long()})
    return {**coco_map(scenes, detections), "eval_images": n}


def measure(name: str, n: int, seed: int) -> dict[str, Any]:
    """Quality of the shipped ``name`` on ``n`` fresh scenes from ``seed``."""
    from . import load
    from .recipes.captioner import captioner_quality
    from .recipes.classifier import classifier_quality
    from .recipes.detr import detr_quality
    from .recipes.pose import pose_quality
    from .recipes.qnet import qnet_quality
    from .recipes.segmenter import segmenter_quality
    from .recipes.vlm import vlm_quality
    from .recipes.vqa import vqa_quality

    model, processor = load(name)
    measures: dict[str, Callable[[], dict[str, Any]]] = {
        "classifier": lambda: classifier_quality(model, n, seed),
        "vit": lambda: classifier_quality(model, n, seed),
        "captioner": lambda: captioner_quality(model, processor, n, seed),
        "vqa": lambda: vqa_quality(model, processor, n, seed),
        "yolo": lambda: yolo_quality(model, n, seed),
        "detr": lambda: detr_quality(model, processor, n, seed),
        "segmenter": lambda: segmenter_quality(model, n, seed),
        "qnet": lambda: qnet_quality(model, n, seed),
        "yolo26": lambda: yolo_quality(model, n, seed),
        "pose": lambda: pose_quality(model, n, seed),
        "vlm": lambda: vlm_quality(model, processor, n, seed),
    }
    return measures[name]()


def verdict(name: str, metrics: dict[str, Any]) -> list[str]:
    """The bars ``metrics`` misses (empty: all met)."""
    misses = []
    for key, bar in BARS[name]:
        values = metrics[key].values() if isinstance(metrics[key], dict) else [metrics[key]]
        if min(values) < bar:
            misses.append(f"{key} {min(values):.3f} < {bar}")
    return misses


def _fmt(metrics: dict[str, Any]) -> str:
    parts = []
    for key, value in metrics.items():
        if key == "eval_images" or key == "eval_states" or isinstance(value, list):
            continue
        if isinstance(value, dict):
            parts.append(", ".join(f"{k} {v:.3f}" for k, v in value.items()))
        else:
            parts.append(f"{key} {value:.3f}")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    from tqdm.auto import tqdm

    from . import available

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of each recipe's evaluation size to generate")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--models", nargs="*", default=None, help=f"default: every shipped model ({', '.join(BARS)})")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = args.models or [m for m in BARS if m in available()]
    unknown = [m for m in names if m not in BARS or m not in available()]
    if unknown:
        parser.error(f"not shipped zoo models: {unknown}; choose from {available()}")
    rows, failed = [], False
    for name in tqdm(names, desc="zoo quality", unit="model"):
        n = max(3, int(SIZES[name] * args.scale))
        start = time.perf_counter()
        metrics = measure(name, n, args.seed)
        misses = verdict(name, metrics)
        failed |= bool(misses)
        bars = ", ".join(f"{k} ≥ {b}" for k, b in BARS[name])
        rows.append(
            f"| {name} | {n} | {_fmt(metrics)} | {bars} | {'MISSED: ' + '; '.join(misses) if misses else 'met'} | {time.perf_counter() - start:.0f} s |"
        )
    print(f"\nseed {args.seed}, torch {torch.__version__}, {args.threads} threads\n")
    print("| model | scenes | quality | bar | verdict | time |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
