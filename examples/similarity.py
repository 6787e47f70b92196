"""Where an image matches each of several texts, with an HF CLIPModel — here a tiny
*random-init* CLIP (no pretrained CLIP ships offline), so the maps show the mechanics
(one map per text, from one forward), not meaningful grounding.

    python examples/similarity.py [--out out/examples/similarity]

With real weights: ``CLIPModel.from_pretrained(...)`` and ``CLIPProcessor.from_pretrained(...)``
in place of ``tiny_clip()``; the call is the same. Writes one overlay per text, a strip and a JSON.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

import mmcam  # noqa: E402
from mmcam.data import VOCAB, SceneConfig, generate_scenes  # noqa: E402


def tiny_clip(size: int = 64):
    """A random-init CLIPModel (hidden 64, 2 layers, patch 8) and a processor built from parts:
    a word-level tokenizer over the scenes' vocabulary, a CLIP image processor at ``size`` px."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from mmcam.zoo.text import word_tokenizer

    torch.manual_seed(0)
    tokenizer = word_tokenizer(list(VOCAB))
    small = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, initializer_range=0.2)
    text = dict(
        small,
        vocab_size=len(tokenizer),
        max_position_embeddings=32,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config = CLIPConfig(text_config=text, vision_config=dict(small, image_size=size, patch_size=8), projection_dim=32)
    images = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return CLIPModel(config).eval(), CLIPProcessor(image_processor=images, tokenizer=tokenizer)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="out/examples/similarity")
    args = parser.parse_args(argv)
    model, processor = tiny_clip()
    scene = generate_scenes(1, seed=7, config=SceneConfig(min_objects=2, max_objects=2))[0]
    texts = [scene.caption, "a blue square", "a green triangle"]
    exp = mmcam.explain_similarity(model, processor, scene.image, texts)
    exp.save(args.out, stem="scene0")
    for text, p in zip(exp.items, exp.meta["probability"]):
        print(f"{text!r}: p = {p:.3f} (random-init CLIP)")


if __name__ == "__main__":
    main()
