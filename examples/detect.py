"""One map per box the zoo YOLO keeps (ultralytics YOLOv8n), offline.

    python examples/detect.py [--out out/examples/detect] [--images 2]

All kept boxes are explained from one forward (the boxes come from NMS on that same forward).
Writes one panel per box (its own map, the box drawn), an overview and a JSON per image.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("YOLO_OFFLINE", "1")

import mmcam  # noqa: E402
from mmcam.data import SceneConfig, generate_scenes  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="out/examples/detect")
    parser.add_argument("--images", type=int, default=2)
    args = parser.parse_args(argv)
    model, processor = mmcam.zoo.load("yolo")
    for i, scene in enumerate(generate_scenes(args.images, seed=7, config=SceneConfig())):
        exp = mmcam.explain_detections(model, scene.image, processor=processor)
        exp.save(args.out, stem=f"scene{i}")
        found = ", ".join(f"{label} {conf:.2f}" for label, conf in zip(exp.meta.get("labels", []), exp.meta.get("confidences", [])))
        print(f"scene {i}: {len(exp.items)} boxes ({found or 'nothing to explain'}); {len(scene.objects)} objects in the scene")


if __name__ == "__main__":
    main()
