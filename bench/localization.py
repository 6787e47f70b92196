"""Do the zoo models' maps point at the right object? Localisation per task on fresh scenes,
with baselines beside every number.

    python -m bench.localization [--images 60] [--seed 31337] [--method M] [--tasks NAME ...]

Ground truth comes from the generator (exact masks): the object(s) of the predicted class
(classification), the predicted class region (segmentation), the object matched to each kept
box at IoU >= 0.5 (detection: YOLO and DETR), the object each colour/shape word refers to
when the generated caption is exactly right (captions; ``vlm-caption``: the zoo LLaVA), the
object a colour/shape question is about (VQA; ``vlm-vqa``: the zoo LLaVA's generated answer word). Pointing is scored exactly and with TorchRay's tolerance (15 px at 224, scaled to
the input). Prints a Markdown table per task.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")

import mmcam  # noqa: E402
from mmcam import zoo  # noqa: E402
from mmcam.data import COLORS, SHAPES, SceneConfig, generate_scenes  # noqa: E402
from mmcam.evaluation import torchray_tolerance  # noqa: E402
from mmcam.metrics import localization_table  # noqa: E402


def _classify(scenes, method):
    model, proc = zoo.load("classifier")
    maps, masks = [], []
    for s in scenes:
        exp = mmcam.explain_classification(model, s.image, processor=proc, method=method)
        cls = exp.meta["predicted"] + 1
        mask = s.semantic == cls
        if mask.any():
            maps.append(exp.maps[0])
            masks.append(torch.from_numpy(mask))
    return maps, masks


def _segment(scenes, method):
    model, proc = zoo.load("segmenter")
    maps, masks = [], []
    for s in scenes:
        exp = mmcam.explain_segmentation(model, s.image, processor=proc, method=method)
        for k, c in enumerate(exp.meta["classes"]):
            maps.append(exp.maps[k])
            masks.append(torch.from_numpy(s.semantic == c))
    return maps, masks


def _iou(a, b):
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _detect(scenes, method, name="yolo"):
    model, proc = zoo.load(name)
    maps, masks = [], []
    for s in scenes:
        exp = mmcam.explain_detections(model, s.image, method=method, processor=proc)
        for k, box in enumerate(exp.meta["boxes"]):
            gt = [(o.box[0], o.box[1], o.box[0] + o.box[2], o.box[1] + o.box[3]) for o in s.objects]
            best = max(range(len(gt)), key=lambda i: _iou(box, gt[i]))
            if _iou(box, gt[best]) >= 0.5:
                maps.append(exp.maps[k])
                masks.append(torch.from_numpy(s.objects[best].mask))
    return maps, masks


def _caption(scenes, method, name="captioner"):
    model, proc = zoo.load(name)
    maps, masks, exact = [], [], 0
    for s in scenes:
        exp = mmcam.explain_caption(model, proc, s.image, method=method)
        if exp.items != s.caption_tokens:
            continue
        exact += 1
        for k, (word, links) in enumerate(zip(s.caption_tokens, s.word_links)):
            if (word in COLORS or word in SHAPES) and links:
                maps.append(exp.maps[k])
                masks.append(torch.from_numpy(s.objects[links[0]].mask))
    print(f"  (captions exactly right: {exact}/{len(scenes)}; only those are scored)")
    return maps, masks


def _vqa(scenes, method, name="vqa"):
    model, proc = zoo.load(name)
    maps, masks = [], []
    for s in scenes:
        for q in s.qa:
            if q.type in ("color", "shape") and len(q.object_ids) == 1:
                exp = mmcam.explain_vqa(model, proc, s.image, q.question, method=method)
                maps.append(exp.maps[0])
                masks.append(torch.from_numpy(s.objects[q.object_ids[0]].mask))
    return maps, masks


DEFAULTS = {"yolo": "layercam", "detr": "layercam", "captioner": "gae", "vqa": "gae"}  # the task calls' own defaults
TASKS = {
    "classifier": _classify,
    "segmenter": _segment,
    "yolo": _detect,
    "detr": lambda scenes, method: _detect(scenes, method, "detr"),
    "captioner": _caption,
    "vqa": _vqa,
    "vlm-caption": lambda scenes, method: _caption(scenes, method, "vlm"),  # the zoo LLaVA, captioning
    "vlm-vqa": lambda scenes, method: _vqa(scenes, method, "vlm"),  # the zoo LLaVA, answering as text
}
MODEL = {"vlm-caption": "vlm", "vlm-vqa": "vlm"}  # bench task -> zoo model (default: the same name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--seed", type=int, default=31337)
    parser.add_argument(
        "--method", default=None, help="default: each task call's own default (layercam for YOLO, gae for the captioner and VQA, gradcam otherwise)"
    )
    parser.add_argument("--tasks", nargs="*", default=list(TASKS))
    args = parser.parse_args(argv)
    scenes = generate_scenes(args.images, args.seed, SceneConfig(background="textured"))
    for name in args.tasks:
        if MODEL.get(name, name) not in zoo.available():
            print(f"\n### {name}: not shipped in this build")
            continue
        start = time.perf_counter()
        method = args.method or DEFAULTS.get(name, "gradcam")
        print(f"\n### {name} ({method}, {args.images} textured scenes, seed {args.seed})")
        maps, masks = TASKS[name](scenes, method)
        if not maps:
            print("  nothing to score")
            continue
        r = torchray_tolerance(*maps[0].shape[-2:])
        table = localization_table({method: torch.stack(maps)}, torch.stack(masks), tolerance=r)
        print(f"  {len(maps)} explained items, {time.perf_counter() - start:.1f} s\n")
        print(f"| maps | pointing | pointing ±{r} px | mass | mass / chance | rank acc | AUROC |")
        print("|---|---|---|---|---|---|---|")
        for row, values in table.items():
            print(
                f"| {row} | {values['pointing']:.3f} | {values['pointing_tol']:.3f} | {values['mass']:.3f} | {values['mass_ratio']:.2f} "
                f"| {values['rank_acc']:.3f} | {values['auroc']:.3f} |"
            )


if __name__ == "__main__":
    main()
