"""Pointing on the zoo detectors for candidate default layers (the evidence behind the defaults).

    python -m bench.layer_choice [--images 60] [--seed 31337] [--models yolo detr] [--method layercam]

Each candidate runs ``explain_detections`` with ``layers=`` on the same fresh textured scenes
as :mod:`bench.localization` (maps of boxes matched to an object at IoU >= 0.5, against that
object's exact mask). YOLO candidates inside the head score boxes with the dense logit (the
window logit of :mod:`mmcam.adapters.yolo_local` starts at the head input). The timing side
of the same candidates at 640 px is in docs/speed.md.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")

import mmcam  # noqa: E402
from bench import localization  # noqa: E402
from mmcam.data import SceneConfig, generate_scenes  # noqa: E402
from mmcam.evaluation import torchray_tolerance  # noqa: E402
from mmcam.metrics import localization_table  # noqa: E402

_STAGES = "model.backbone.model.encoder.stages."
CANDIDATES = {
    "yolo": {
        "default: stride-4 stage + P3/P4/P5 neck outputs": None,
        "P3/P4/P5 neck outputs (the head's inputs)": ["model.15", "model.18", "model.21"],
        "class branches' first conv per level (cv3.s.0)": [f"model.22.cv3.{s}.0" for s in range(3)],
    },
    "detr": {
        "default: first backbone stage (stride 4)": None,
        "second backbone stage (stride 8)": [_STAGES + "1"],
        "last backbone stage (stride 16 here)": [_STAGES + "2"],
        "encoder output (EncoderGrid)": ["model.encoder"],
    },
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--seed", type=int, default=31337)
    parser.add_argument("--models", nargs="*", default=list(CANDIDATES))
    parser.add_argument("--method", default="layercam")
    args = parser.parse_args(argv)
    scenes = generate_scenes(args.images, args.seed, SceneConfig(background="textured"))
    explain = mmcam.explain_detections
    try:
        for name in args.models:
            print(f"\n### zoo:{name} ({args.method}, {args.images} textured scenes, seed {args.seed})\n")
            print("| layers | boxes | pointing | pointing (tolerance) | mass | AUROC | time |")
            print("|---|---|---|---|---|---|---|")
            for label, layers in CANDIDATES[name].items():
                mmcam.explain_detections = lambda *a, layers=layers, **k: explain(*a, layers=layers, **k)
                start = time.perf_counter()
                maps, masks = localization._detect(scenes, args.method, name)
                r = torchray_tolerance(*maps[0].shape[-2:])
                v = localization_table({"m": torch.stack(maps)}, torch.stack(masks), tolerance=r)["m"]
                print(
                    f"| {label} | {len(maps)} | {v['pointing']:.3f} | {v['pointing_tol']:.3f} | {v['mass']:.3f} | {v['auroc']:.3f} "
                    f"| {time.perf_counter() - start:.1f} s |",
                    flush=True,
                )
    finally:
        mmcam.explain_detections = explain


if __name__ == "__main__":
    main()
