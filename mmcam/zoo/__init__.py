"""The zoo: small models on real architectures, trained on mmcam's scenes, shipped offline.

>>> import mmcam
>>> mmcam.zoo.available()                        # doctest: +SKIP
['classifier', 'qnet', ...]
>>> model, processor = mmcam.zoo.load("classifier")  # doctest: +SKIP

Weights are safetensors inside the package (no pickle); each model has a JSON config with
its architecture, preprocessing, labels, training seed and measured quality, and a model
card in ``mmcam/zoo/cards``. Recipes: ``python -m mmcam.zoo.train NAME --seed S``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import InputError

__all__ = ["available", "load", "config", "WEIGHTS_DIR"]

WEIGHTS_DIR = Path(__file__).parent / "weights"


def available() -> list[str]:
    """Names of the shipped models (weights and config both present)."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.json") if p.with_suffix(".safetensors").exists())


def config(name: str) -> dict[str, Any]:
    """A shipped model's JSON config (architecture, preprocessing, labels, metrics)."""
    shipped = available()
    if name not in shipped:  # only the shipped names: never a path to another file
        raise InputError(f"no zoo model named {name!r}; available: {', '.join(shipped) or 'none'}")
    return json.loads((WEIGHTS_DIR / f"{name}.json").read_text())


def load(name: str) -> tuple[Any, Any]:
    """``(model, processor)`` for a shipped model, in eval mode, offline."""
    from safetensors.torch import load_model

    from .models import build
    from .processing import ImageProcessor

    cfg = config(name)
    if cfg["architecture"]["type"] == "ultralytics_yolo":
        return _load_yolo(name, cfg), None
    model = build(cfg)
    load_model(model, str(WEIGHTS_DIR / f"{name}.safetensors"))
    model.eval()
    pre = cfg.get("preprocessing")
    if cfg["architecture"]["type"] == "hf_detr":
        from .processing import detr_processor

        processor: Any = detr_processor(cfg)
    elif cfg["architecture"]["type"] == "hf_llava":  # the processor's own files (LlavaProcessor.save_pretrained)
        from transformers import LlavaProcessor

        processor = LlavaProcessor.from_pretrained(str(WEIGHTS_DIR / cfg["processor"]), local_files_only=True)
    elif cfg.get("vocab"):
        from .text import CaptionProcessor, VQAProcessor

        kind = VQAProcessor if cfg.get("processor") == "vqa" else CaptionProcessor
        processor = kind(cfg["vocab"], **{k: v for k, v in pre.items() if k != "as_dict"})
    else:
        processor = ImageProcessor(**pre, labels=cfg.get("labels")) if pre else None
    if hasattr(model, "config") and cfg.get("labels") and cfg["architecture"]["type"] != "hf_vilt_vqa":
        model.config.id2label = dict(enumerate(cfg["labels"]))
        model.config.label2id = {v: k for k, v in model.config.id2label.items()}
    elif cfg.get("labels"):
        model.labels = list(cfg["labels"])
    return model, processor


def _load_yolo(name: str, cfg: dict[str, Any]) -> Any:
    """An ``ultralytics.YOLO`` object (what users hold) with the zoo weights in its inner
    ``DetectionModel`` (eval mode), ``names`` set and ``overrides["imgsz"]`` = training size."""
    import os

    os.environ.setdefault("YOLO_OFFLINE", "1")
    from safetensors.torch import load_file
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel, PoseModel, yaml_model_load

    arch = cfg["architecture"]
    yolo = YOLO(arch["yaml"])
    spec = yaml_model_load(arch["yaml"])
    spec["nc"] = arch["nc"]
    if "max_channels" in arch:  # the recipe's narrower scale (mmcam.zoo.recipes.yolo26.scaled_yaml)
        depth, width, _ = spec["scales"][spec["scale"]]
        spec["scales"] = {spec["scale"]: [depth, width, arch["max_channels"]]}
    if "kpt_shape" in arch:
        spec["kpt_shape"] = list(arch["kpt_shape"])
    inner = (PoseModel if "kpt_shape" in arch else DetectionModel)(spec, verbose=False)
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(WEIGHTS_DIR / f"{name}.safetensors")).items()}
    inner.load_state_dict(state)
    inner.names = dict(enumerate(cfg["labels"]))
    inner.eval()
    yolo.model = inner
    yolo.overrides["imgsz"] = arch["imgsz"]
    return yolo
