"""The zoo captioner: VisionEncoderDecoder (ViT encoder + GPT-2 decoder) on scene captions."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ...data import SceneConfig, generate_scenes
from ..models import build, init_patch_positions
from .common import BACKGROUNDS, EVAL_SEED, MEAN, STD, fit, images, save, scene_batch

__all__ = ["train_captioner", "captioner_quality"]


def captioner_quality(model: torch.nn.Module, processor: Any, n: int = 300, seed: int = EVAL_SEED) -> dict[str, float]:
    scenes = generate_scenes(n, seed, SceneConfig())
    exact, words_ok, words = 0, 0, 0
    for start in range(0, n, 100):
        chunk = scenes[start : start + 100]
        with torch.no_grad():
            ids = model.generate(pixel_values=images(chunk))
        for scene, text in zip(chunk, processor.batch_decode(ids)):
            got, want = text.split(), scene.caption_tokens
            exact += got == want
            words += len(want)
            words_ok += sum(a == b for a, b in zip(got, want))
    return {"exact_caption": round(exact / n, 4), "word_accuracy": round(words_ok / words, 4), "eval_images": n}


def train_captioner(seed: int, minutes: float, out: Path, steps: int = 5000) -> None:
    """ViT encoder + GPT-2 decoder (``VisionEncoderDecoderModel``) with teacher forcing on
    fresh scenes: 48 captions per step, AdamW 1e-3, 200 warm-up steps, cosine decay to
    ``steps`` (or to ``minutes``, whichever ends first)."""
    from ...data import VOCAB
    from ..text import SPECIAL, CaptionProcessor

    torch.manual_seed(seed)
    words = list(VOCAB)
    arch = {
        "type": "hf_vision_encoder_decoder",
        "encoder": {
            "image_size": 64,
            "patch_size": 8,
            "hidden_size": 128,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "intermediate_size": 256,
            "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0,
        },
        "decoder": {
            "vocab_size": len(SPECIAL) + len(words),
            "n_embd": 128,
            "n_layer": 2,
            "n_head": 4,
            "n_positions": 32,
            "resid_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "attn_pdrop": 0.0,
        },
        "special_ids": {"pad": 0, "bos": 1, "eos": 2},
        "max_length": 20,
    }
    cfg = {"architecture": arch}
    model = build(cfg)
    init_patch_positions(model.encoder.embeddings.position_embeddings)
    processor = CaptionProcessor(words)

    def loss(step: int) -> torch.Tensor:
        scenes = scene_batch(step, seed, 48, lambda s: SceneConfig(background=BACKGROUNDS[s % 3]))
        enc = processor.tokenizer([s.caption + " [EOS]" for s in scenes], padding=True, add_special_tokens=False, return_tensors="pt")
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        return model(pixel_values=images(scenes), labels=labels).loss

    start = time.perf_counter()
    taken = fit(model, loss, minutes, steps, 1e-3, "captioner", warmup=200)
    cfg.update(
        preprocessing={"size": 64, "mean": MEAN, "std": STD, "as_dict": True},
        vocab=words,
        labels=[],
        data={"config": "SceneConfig(background=plain|textured|cluttered), 1-3 objects", "images_per_step": 48},
        train={
            "seed": seed,
            "steps": taken,
            "minutes": round((time.perf_counter() - start) / 60, 2),
            "command": f"python -m mmcam.zoo.train captioner --seed {seed} --steps {steps} --minutes {minutes}",
        },
        metrics=captioner_quality(model, processor),
    )
    save("captioner", model, cfg, out)
