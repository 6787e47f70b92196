"""The zoo YOLO: YOLOv8n from its yaml (no pretrained weights), trained by ultralytics on
scenes written in its dataset format; shipped as a float16 safetensors state dict."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ...data import SHAPES, SceneConfig, generate_scenes
from .common import BACKGROUNDS, EVAL_SEED, write_config

__all__ = ["train_yolo", "train_ultralytics", "write_yolo_dataset"]


def write_yolo_dataset(root: Path, n_train: int, n_val: int, seed: int) -> Path:
    """Scenes in ultralytics' YOLO format (images/, labels/ with normalised cx cy w h)."""
    from PIL import Image

    for split, n, split_seed in (("train", n_train, seed), ("val", n_val, EVAL_SEED)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        scenes = [s for i in range(3) for s in generate_scenes(n // 3 + 1, split_seed + i, SceneConfig(background=BACKGROUNDS[i]))][:n]
        for i, scene in enumerate(scenes):
            Image.fromarray(scene.image).save(root / "images" / split / f"{i:06d}.png")
            size = scene.image.shape[0]
            rows = [
                f"{o.category_id - 1} {(o.box[0] + o.box[2] / 2) / size:.6f} {(o.box[1] + o.box[3] / 2) / size:.6f} {o.box[2] / size:.6f} {o.box[3] / size:.6f}"
                for o in scene.objects
            ]
            (root / "labels" / split / f"{i:06d}.txt").write_text("\n".join(rows) + "\n")
    yaml = root / "scenes.yaml"
    names = "\n".join(f"  {i}: {s}" for i, s in enumerate(SHAPES))
    yaml.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return yaml


def train_ultralytics(model_yaml: Path, data: Path, root: Path, seed: int, minutes: float, **kwargs: Any) -> Any:
    """ultralytics' trainer at 64 px on CPU (shared by the yolo, yolo26 and pose recipes); returns the trained ``YOLO``."""
    from ultralytics import YOLO

    settings = dict(
        data=str(data),
        imgsz=64,
        epochs=200,
        time=minutes / 60,
        batch=64,
        workers=0,
        device="cpu",
        seed=seed,
        plots=False,
        amp=False,
        project=str(root / "runs"),
        name="train",
        exist_ok=True,
        verbose=False,
        mosaic=0.0,
        fliplr=0.5,
        scale=0.2,
        translate=0.1,
        hsv_h=0.0,
        hsv_s=0.0,
        hsv_v=0.2,
        val=False,
    )
    YOLO(str(model_yaml)).train(**{**settings, **kwargs})
    return YOLO(str(root / "runs" / "train" / "weights" / "last.pt"))  # our own checkpoint, written just now


def train_yolo(seed: int, minutes: float, out: Path) -> None:
    """YOLOv8n from its yaml (no pretrained weights) trained by ultralytics at 64 px."""
    import os
    import tempfile

    os.environ.setdefault("YOLO_OFFLINE", "1")
    start = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="mmcam-yolo-"))
    data = write_yolo_dataset(root, 6000, 300, seed)
    trained = train_ultralytics(Path("yolov8n.yaml"), data, root, seed, minutes)
    metrics = trained.val(data=str(data), imgsz=64, batch=64, plots=False, device="cpu", verbose=False, conf=0.001)
    inner = trained.model
    state = {k: v.detach().to(torch.float16 if v.is_floating_point() else v.dtype).contiguous() for k, v in inner.state_dict().items()}
    cfg = {
        "architecture": {"type": "ultralytics_yolo", "yaml": "yolov8n.yaml", "nc": len(SHAPES), "imgsz": 64, "dtype": "float16"},
        "labels": list(SHAPES),
        "data": {"config": "SceneConfig(background=plain|textured|cluttered), 1-3 objects", "train_images": 6000},
        "train": {
            "seed": seed,
            "minutes": round((time.perf_counter() - start) / 60, 2),
            "command": f"python -m mmcam.zoo.train yolo --seed {seed} --minutes {minutes}",
        },
        "metrics": {"mAP50": round(float(metrics.box.map50), 4), "mAP50_95": round(float(metrics.box.map), 4), "eval_images": 300},
    }
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / "yolo.safetensors"))
    write_config("yolo", cfg, out)
    print(json.dumps(cfg["metrics"]))
