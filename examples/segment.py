"""One map per predicted class region of the zoo segmenter (HF Segformer), offline.

    python examples/segment.py [--out out/examples/segment] [--images 2]

Each region's target is the class logits summed over the region's pixels. Writes one
overlay per region (its outline drawn) and a JSON per image.
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
    parser.add_argument("--out", default="out/examples/segment")
    parser.add_argument("--images", type=int, default=2)
    args = parser.parse_args(argv)
    model, processor = mmcam.zoo.load("segmenter")
    for i, scene in enumerate(generate_scenes(args.images, seed=7, config=SceneConfig())):
        exp = mmcam.explain_segmentation(model, scene.image, processor=processor)
        exp.save(args.out, stem=f"scene{i}")
        print(f"scene {i}: regions {exp.items}; layer {exp.layers[0]}")


if __name__ == "__main__":
    main()
