"""Do the zoo models' maps point at the right object? Localisation per task on fresh scenes,
with baselines beside every number.

    python -m bench.localization [--images 60] [--seed 31337] [--method M] [--tasks NAME ...]

Ground truth comes from the generator (exact masks): the object(s) of the predicted class
(classification), the predicted class region (segmentation), the object matched to each kept
box at IoU >= 0.5 (detection: YOLO, YOLO26 with NMS, ``yolo26-e2e`` = YOLO26's one-to-one head
with ``nms=False``, and DETR), a disc of 3 px around each visible keypoint of the object matched
to each kept box (pose: the keypoint's map, and the object's map as a reference row), the object
each colour/shape word refers to when the generated caption is exactly right (captions; ``vlm-caption``: the zoo LLaVA), the
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


def _detect(scenes, method, name="yolo", **kwargs):
    model, proc = zoo.load(name)
    maps, masks = [], []
    for s in scenes:
        exp = mmcam.explain_detections(model, s.image, method=method, processor=proc, **kwargs)
        for k, box in enumerate(exp.meta["boxes"]):
            gt = [(o.box[0], o.box[1], o.box[0] + o.box[2], o.box[1] + o.box[3]) for o in s.objects]
            best = max(range(len(gt)), key=lambda i: _iou(box, gt[i]))
            if _iou(box, gt[best]) >= 0.5:
                maps.append(exp.maps[k])
                masks.append(torch.from_numpy(s.objects[best].mask))
    return maps, masks


KEYPOINT_RADIUS = 3  # px at 64: a keypoint's map must peak within this of the true keypoint


def _pose(scenes, method, radius=KEYPOINT_RADIUS):
    """Keypoint pointing: per kept object matched to a scene object (IoU >= 0.5) and per visible
    keypoint j, the mask is the disc of ``radius`` px around the true keypoint j
    (:mod:`mmcam.data.keypoints`); the keypoint's map is scored on it, and so is the object's own
    map (the box score's) as a reference: a keypoint map that only found the object scores lower."""
    from mmcam.data.keypoints import scene_keypoints

    model, _ = zoo.load("pose")
    maps, masks, object_maps = [], [], []
    for s in scenes:
        h, w = s.image.shape[:2]
        yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
        exp = mmcam.explain_pose(model, s.image, method=method)
        truth = scene_keypoints(s)
        per = 1 + truth.shape[1]
        for p, box in enumerate(exp.meta["boxes"]):
            gt = [(o.box[0], o.box[1], o.box[0] + o.box[2], o.box[1] + o.box[3]) for o in s.objects]
            best = max(range(len(gt)), key=lambda i: _iou(box, gt[i]))
            if _iou(box, gt[best]) < 0.5:
                continue
            for j, (x, y, v) in enumerate(truth[best]):
                if v > 0:
                    maps.append(exp.maps[p * per + 1 + j])
                    object_maps.append(exp.maps[p * per])
                    masks.append((xx - x) ** 2 + (yy - y) ** 2 <= radius**2)
    return maps, masks, {f"{method}, the object's map": object_maps}  # the reference row beside the keypoint maps


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


DEFAULTS = {"yolo": "layercam", "detr": "layercam", "captioner": "gae-shift", "vqa": "gae-shift"}  # the task calls' own defaults
DEFAULTS.update({"yolo26": "layercam", "yolo26-e2e": "layercam", "pose": "layercam", "vlm-vqa": "gae-tower", "vlm-caption": "gae-tower"})
TASKS = {
    "classifier": _classify,
    "segmenter": _segment,
    "yolo": _detect,
    "detr": lambda scenes, method: _detect(scenes, method, "detr"),
    "yolo26": lambda scenes, method: _detect(scenes, method, "yolo26"),
    "yolo26-e2e": lambda scenes, method: _detect(scenes, method, "yolo26", nms=False),
    "pose": _pose,
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
        "--method",
        default=None,
        help="default: each task call's own default (layercam for YOLO, gae-shift for the captioner and ViLT, gae-tower for the zoo VLM, gradcam otherwise)",
    )
    parser.add_argument("--tasks", nargs="*", default=list(TASKS))
    args = parser.parse_args(argv)
    scenes = generate_scenes(args.images, args.seed, SceneConfig(background="textured"))
    for name in args.tasks:
        if MODEL.get(name, name.removesuffix("-e2e")) not in zoo.available():  # yolo26-e2e: zoo:yolo26 with nms=False
            print(f"\n### {name}: not shipped in this build")
            continue
        start = time.perf_counter()
        method = args.method or DEFAULTS.get(name, "gradcam")
        print(f"\n### {name} ({method}, {args.images} textured scenes, seed {args.seed})")
        maps, masks, *extra = TASKS[name](scenes, method)  # extra: {row name: more maps on the same masks}
        if not maps:
            print("  nothing to score")
            continue
        r = torchray_tolerance(*maps[0].shape[-2:])
        rows = {method: torch.stack(maps), **{k: torch.stack(v) for k, v in (extra[0] if extra else {}).items()}}
        table = localization_table(rows, torch.stack(masks), tolerance=r)
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
