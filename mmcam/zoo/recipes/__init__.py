"""Training recipes, one module per zoo model (``python -m mmcam.zoo.train NAME``).

Each recipe draws fresh scenes from ``mmcam.data`` every step (seeded), trains on CPU,
evaluates on scenes from a different seed, and writes ``NAME.safetensors`` plus
``NAME.json`` (architecture, preprocessing, labels, seed, metrics, wall time); what they
share is in :mod:`.common`. ``RECIPES[name](seed, minutes, out)`` runs one.
"""

from __future__ import annotations

from collections.abc import Callable

from .captioner import train_captioner
from .classifier import train_classifier
from .detr import train_detr
from .pose import train_pose
from .qnet import train_qnet
from .segmenter import train_segmenter
from .vit import train_vit
from .vlm import train_vlm
from .vqa import train_vqa
from .yolo import train_yolo
from .yolo26 import train_yolo26

__all__ = ["RECIPES"]

#: zoo name -> ``recipe(seed, minutes, out, [steps=...])``
RECIPES: dict[str, Callable[..., None]] = {
    "classifier": train_classifier,
    "vit": train_vit,
    "qnet": train_qnet,
    "segmenter": train_segmenter,
    "yolo": train_yolo,
    "captioner": train_captioner,
    "vqa": train_vqa,
    "detr": train_detr,
    "yolo26": train_yolo26,
    "pose": train_pose,
    "vlm": train_vlm,
}
