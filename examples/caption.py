"""One map per word of the zoo captioner's caption (HF VisionEncoderDecoder, ViT + GPT-2), offline.

    python examples/caption.py [--out out/examples/caption] [--images 2]

The caption is generated first, then re-run as one teacher-forced forward; every word's
log-probability is explained from that single forward. The same call works for HF BLIP
(``BlipForConditionalGeneration``) and GIT (``GitForCausalLM``) with their processors.
Writes one overlay per word, a caption strip and a JSON per image.
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
    parser.add_argument("--out", default="out/examples/caption")
    parser.add_argument("--images", type=int, default=2)
    args = parser.parse_args(argv)
    model, processor = mmcam.zoo.load("captioner")
    for i, scene in enumerate(generate_scenes(args.images, seed=7, config=SceneConfig())):
        exp = mmcam.explain_caption(model, processor, scene.image)
        exp.save(args.out, stem=f"scene{i}")
        print(f"scene {i}: {exp.caption!r} (ground truth {scene.caption!r})")
        # a caption of your own is teacher-forced the same way
        mmcam.explain_caption(model, processor, scene.image, caption=scene.caption).save(args.out, stem=f"scene{i}_truth")


if __name__ == "__main__":
    main()
