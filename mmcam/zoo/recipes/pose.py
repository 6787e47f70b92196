"""The zoo pose model: YOLO11n-pose (``max_channels`` 512, like :mod:`.yolo26`) from its yaml,
no pretrained weights, trained by ultralytics on scenes whose objects carry four keypoints each
(:mod:`mmcam.data.keypoints`); shipped as a float16 safetensors state dict.

Half the training scenes have an occluding bar, so some keypoints are hidden (visibility 0) and
the visibility logit (what ``explain_pose`` explains per keypoint) has something to learn.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from ...data import SHAPES, SceneConfig, generate_scenes
from ...data.keypoints import NUM_KEYPOINTS, scene_keypoints
from .common import BACKGROUNDS, EVAL_SEED, predict, write_config
from .yolo26 import MAX_CHANNELS, half_state, scaled_yaml, train_ultralytics

__all__ = ["train_pose", "write_pose_dataset", "pose_scenes", "pose_quality"]

KPT_SHAPE = [NUM_KEYPOINTS, 3]


def pose_scenes(n: int, seed: int) -> list:
    """``n`` scenes in six equal parts: plain / textured / cluttered, without and with occluders."""
    configs = [SceneConfig(background=b, occluders=occ) for occ in (False, True) for b in BACKGROUNDS]
    return [s for i, c in enumerate(configs) for s in generate_scenes(n // len(configs) + 1, seed + i, c)][:n]


def write_pose_dataset(root: Path, n_train: int, n_val: int, seed: int) -> Path:
    """Scenes in ultralytics' pose format: ``cls cx cy w h`` then ``x y v`` per keypoint, normalised."""
    from PIL import Image

    for split, n, split_seed in (("train", n_train, seed), ("val", n_val, EVAL_SEED)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i, scene in enumerate(pose_scenes(n, split_seed)):
            Image.fromarray(scene.image).save(root / "images" / split / f"{i:06d}.png")
            size = scene.image.shape[0]
            rows = []
            for o, kpts in zip(scene.objects, scene_keypoints(scene)):
                box = f"{o.category_id - 1} {(o.box[0] + o.box[2] / 2) / size:.6f} {(o.box[1] + o.box[3] / 2) / size:.6f} {o.box[2] / size:.6f} {o.box[3] / size:.6f}"
                rows.append(box + "".join(f" {x / size:.6f} {y / size:.6f} {int(v)}" for x, y, v in kpts))
            (root / "labels" / split / f"{i:06d}.txt").write_text("\n".join(rows) + "\n")
    yaml = root / "scenes.yaml"
    names = "\n".join(f"  {i}: {s}" for i, s in enumerate(SHAPES))
    yaml.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nkpt_shape: {KPT_SHAPE}\nnames:\n{names}\n")
    return yaml


def train_pose(seed: int, minutes: float, out: Path) -> None:
    """YOLO11n-pose (max_channels 512) from its yaml trained by ultralytics at 64 px (no flips:
    a flip would need one keypoint permutation for all four shapes)."""
    import os
    import tempfile

    os.environ.setdefault("YOLO_OFFLINE", "1")
    start = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="mmcam-pose-"))
    data = write_pose_dataset(root, 6000, 300, seed)
    trained = train_ultralytics(scaled_yaml("yolo11n-pose.yaml", root, nc=len(SHAPES), kpt_shape=KPT_SHAPE), data, root, seed, minutes, fliplr=0.0)
    metrics = trained.val(data=str(data), imgsz=64, batch=64, plots=False, device="cpu", verbose=False, conf=0.001)
    cfg = {
        "architecture": {
            "type": "ultralytics_yolo",
            "yaml": "yolo11n-pose.yaml",
            "max_channels": MAX_CHANNELS,
            "nc": len(SHAPES),
            "kpt_shape": KPT_SHAPE,
            "imgsz": 64,
            "dtype": "float16",
        },
        "labels": list(SHAPES),
        "keypoints": "mmcam.data.keypoints: 4 outline points per object, clockwise from the top (KEYPOINT_NAMES)",
        "data": {"config": "SceneConfig(background=plain|textured|cluttered, occluders=False|True), 1-3 objects", "train_images": 6000},
        "train": {
            "seed": seed,
            "minutes": round((time.perf_counter() - start) / 60, 2),
            "threads": torch.get_num_threads(),  # ultralytics sets cpu_count - 1 (8 at most) for CPU training
            "command": f"python -m mmcam.zoo.train pose --seed {seed} --minutes {minutes}",
        },
        "metrics": {
            "box_mAP50": round(float(metrics.box.map50), 4),
            "pose_mAP50": round(float(metrics.pose.map50), 4),
            "pose_mAP50_95": round(float(metrics.pose.map), 4),
            "eval_images": 300,
        },
    }
    out.mkdir(parents=True, exist_ok=True)
    save_file(half_state(trained.model), str(out / "pose.safetensors"))
    write_config("pose", cfg, out)
    print(json.dumps(cfg["metrics"]))


def pose_quality(model, n: int = 300, seed: int = EVAL_SEED, radius: float = 3.0) -> dict[str, float]:
    """Box mAP (pycocotools, ultralytics' predictions at ``conf=0.001``) on ``n`` fresh
    :func:`pose_scenes`, and PCK: the share of visible keypoints, over the objects that a box
    kept at ``conf=0.25`` matches (same class, IoU >= 0.5), that the box's keypoint lies within
    ``radius`` px of."""
    import numpy as np

    from .common import coco_map

    scenes = pose_scenes(n, seed)
    detections, hits, total = [], 0, 0
    for start in range(0, n, 64):
        chunk = scenes[start : start + 64]
        # ultralytics reads numpy images as BGR (OpenCV's order)
        results = predict(model, [s.image[..., ::-1] for s in chunk], imgsz=chunk[0].image.shape[0], conf=0.001, verbose=False, device="cpu")
        for s, r in zip(chunk, results):
            boxes, scores, labels = r.boxes.xyxy.cpu(), r.boxes.conf.cpu(), r.boxes.cls.cpu().long()
            detections.append({"boxes": boxes, "scores": scores, "labels": labels})
            kpts = r.keypoints.data.cpu().numpy()
            for o, truth in zip(s.objects, scene_keypoints(s)):
                gt = np.array([o.box[0], o.box[1], o.box[0] + o.box[2], o.box[1] + o.box[3]], dtype=np.float64)
                visible = truth[:, 2] > 0
                total += int(visible.sum())
                ious = [_iou(gt, b) if (c == o.category_id - 1 and p >= 0.25) else 0.0 for b, p, c in zip(boxes.numpy(), scores.tolist(), labels.tolist())]
                if ious and max(ious) >= 0.5:
                    k = int(np.argmax(ious))
                    hits += int((np.hypot(*(kpts[k, :, :2] - truth[:, :2]).T)[visible] <= radius).sum())
    return {**coco_map(scenes, detections), f"PCK@{radius:g}px": round(hits / max(total, 1), 4), "eval_images": n}


def _iou(a, b) -> float:
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0
