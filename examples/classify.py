"""Explain the zoo classifier's (torchvision ResNet) and the zoo ViT's top classes, offline.

    python examples/classify.py [--out out/examples/classify] [--images 2]

Writes one overlay PNG per explained class and a JSON per image.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import mmcam  # noqa: E402
from mmcam.data import SceneConfig, generate_scenes  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="out/examples/classify")
    parser.add_argument("--images", type=int, default=2)
    args = parser.parse_args(argv)
    scenes = generate_scenes(args.images, seed=7, config=SceneConfig())
    for name in ("classifier", "vit"):
        model, processor = mmcam.zoo.load(name)
        for i, scene in enumerate(scenes):
            # the two most likely classes, both explained from one forward
            exp = mmcam.explain_classification(model, scene.image, processor=processor, topk=2)
            exp.save(f"{args.out}/{name}", stem=f"scene{i}")
            print(f"{name} scene {i}: top classes {exp.items} ({exp.meta['probabilities']}), layer {exp.layers[0]}")


if __name__ == "__main__":
    main()
