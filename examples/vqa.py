"""Ground the zoo VQA model's answers (HF ViLT answer classifier) in the image, offline.

    python examples/vqa.py [--out out/examples/vqa] [--images 2]

For each scene's first two questions: the model's answer, its map, and the map of the true
answer (``answer=``). The same call works for HF BLIP-VQA (``BlipForQuestionAnswering``),
whose answer is generated and then teacher-forced. Writes an overlay, an answer-grounding
panel (image, question, answer, heatmap) and a JSON per question.
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
    parser.add_argument("--out", default="out/examples/vqa")
    parser.add_argument("--images", type=int, default=2)
    args = parser.parse_args(argv)
    model, processor = mmcam.zoo.load("vqa")
    for i, scene in enumerate(generate_scenes(args.images, seed=7, config=SceneConfig())):
        for j, qa in enumerate(scene.qa[:2]):
            exp = mmcam.explain_vqa(model, processor, scene.image, qa.question)
            exp.save(args.out, stem=f"scene{i}_q{j}")
            print(f"scene {i}: {qa.question!r} -> {exp.meta['answer']!r} (p = {exp.meta['probability']:.3f}; truth {qa.answer!r})")
            if exp.meta["answer"] != qa.answer:
                mmcam.explain_vqa(model, processor, scene.image, qa.question, answer=qa.answer).save(args.out, stem=f"scene{i}_q{j}_truth")


if __name__ == "__main__":
    main()
