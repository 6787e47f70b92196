"""The zoo YOLO26: YOLO26n (end-to-end one-to-one head) from its yaml, no pretrained weights,
trained by ultralytics on the scenes like :mod:`.yolo`; shipped as a float16 safetensors state dict.

The ``n`` scale keeps its depth and width (0.50, 0.25) with ``max_channels`` 512 instead of
1024, which halves the P5 stages (2.8 MB in float16 instead of 5.0 MB) so the zoo stays small.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ...data import SHAPES
from .common import write_config
from .yolo import train_ultralytics, write_yolo_dataset

__all__ = ["train_yolo26", "scaled_yaml"]

MAX_CHANNELS = 512


def scaled_yaml(base: str, root: Path, max_channels: int = MAX_CHANNELS, **extra: Any) -> Path:
    """``base`` (e.g. ``yolo26n.yaml``) written to ``root`` with its one scale's ``max_channels``
    replaced and ``extra`` keys set. The file name carries no scale letter, so ultralytics reads
    this file (not its own ``yolo26.yaml``) and takes its only scale."""
    import yaml
    from ultralytics.nn.tasks import yaml_model_load

    spec = yaml_model_load(base)
    depth, width, _ = spec["scales"][spec["scale"]]
    spec["scales"] = {spec["scale"]: [depth, width, max_channels]}
    spec.update(extra)
    for key in ("scale", "yaml_file", "channels"):
        spec.pop(key, None)
    path = root / f"scenes-{base.replace('yolo', 'model-').replace('.yaml', '')}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def half_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to(torch.float16 if v.is_floating_point() else v.dtype).contiguous() for k, v in model.state_dict().items()}


def train_yolo26(seed: int, minutes: float, out: Path) -> None:
    """YOLO26n (max_channels 512) from its yaml trained by ultralytics at 64 px."""
    import os
    import tempfile

    os.environ.setdefault("YOLO_OFFLINE", "1")
    start = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="mmcam-yolo26-"))
    data = write_yolo_dataset(root, 6000, 300, seed)
    trained = train_ultralytics(scaled_yaml("yolo26n.yaml", root, nc=len(SHAPES)), data, root, seed, minutes)
    metrics = trained.val(data=str(data), imgsz=64, batch=64, plots=False, device="cpu", verbose=False, conf=0.001)
    cfg = {
        "architecture": {
            "type": "ultralytics_yolo",
            "yaml": "yolo26n.yaml",
            "max_channels": MAX_CHANNELS,
            "nc": len(SHAPES),
            "imgsz": 64,
            "dtype": "float16",
        },
        "labels": list(SHAPES),
        "data": {"config": "SceneConfig(background=plain|textured|cluttered), 1-3 objects", "train_images": 6000},
        "train": {
            "seed": seed,
            "minutes": round((time.perf_counter() - start) / 60, 2),
            "threads": torch.get_num_threads(),  # ultralytics sets cpu_count - 1 (8 at most) for CPU training
            "command": f"python -m mmcam.zoo.train yolo26 --seed {seed} --minutes {minutes}",
        },
        "metrics": {"mAP50": round(float(metrics.box.map50), 4), "mAP50_95": round(float(metrics.box.map), 4), "eval_images": 300},
    }
    out.mkdir(parents=True, exist_ok=True)
    save_file(half_state(trained.model), str(out / "yolo26.safetensors"))
    write_config("yolo26", cfg, out)
    print(json.dumps(cfg["metrics"]))
