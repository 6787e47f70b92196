"""The zoo ViT: the classifier recipe (:mod:`.classifier`) on an HF ViT — 4 layers, 8 px
patches on 64 px scenes — with a lower learning rate, 200 warm-up steps and more steps."""

from __future__ import annotations

from pathlib import Path

from ...data import SHAPES
from .classifier import train_classifier

__all__ = ["train_vit", "VIT"]

VIT = {
    "type": "hf_vit",
    "config": {
        "image_size": 64,
        "patch_size": 8,
        "hidden_size": 96,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "intermediate_size": 192,
        "num_labels": len(SHAPES),
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    },
}


def train_vit(seed: int, minutes: float, out: Path) -> None:
    train_classifier(seed, minutes, out, name="vit", arch=VIT, max_steps=20000, lr=5e-4, warmup=200)
