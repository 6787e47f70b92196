"""Every box and every word at real model sizes, beside the model's own inference call.

    python -m bench.real_sizes [--quick] [--rounds 5] [--only yolo,caption,resnet,detr,rtdetr,vilt,blip] [--ks 1,10,30] [--no-memory]

Random-init models built from their configs / yamls at the sizes people run (weights do not
change the cost; nothing is downloaded), on the ultralytics photos:

* **YOLOv8n / YOLO11n at 640** on ``bus.jpg`` / ``zidane.jpg``: ``explain_detections`` (the
  ``DetectionTask``: letterbox, fused model, NMS, one map per kept box) beside
  ``YOLO.predict`` with the same ``conf`` / ``max_det`` (``conf`` set just below the K-th
  best candidate, since a random-init head's confidences are all ~1e-4), and beside
  pytorch-grad-cam's per-box loop (``LayerCAM`` on the same layers, one call per box);
* **VisionEncoderDecoder ViT-B/16 + GPT-2 small at 224**, 12 generated tokens: Grad-CAM at
  the default layer and ``gae`` for every word of the teacher-forced caption, beside
  ``generate()`` of the same 12 tokens;
* **ResNet-50 classifier at 224**: K classes from one forward, beside a no-grad forward and
  pytorch-grad-cam's per-class loop;
* **DETR-R50 at 800, RT-DETR-R50 at 640, ViLT-B/32 at 384, BLIP-base at 384**: see
  :mod:`bench.real_sizes_hf`.

K = 1, 10, 30 items (``--quick``: K = 10 only, 3 rounds, no memory). Each round runs every
column of a row once, rounds interleaved, and the median is printed with its ratio to the
inference column. Peak memory: each column once in a fresh subprocess, as the rise of the
resident set's high-water mark (``VmHWM``, what ``getrusage`` reports as ``ru_maxrss``) over
the resident set after setup and one warm-up call (``/proc/self/clear_refs`` resets it).
The load average before and after is printed: other work on the machine slows every column.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from bench import real_sizes_hf as hf

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

ASSETS = os.path.join(os.path.dirname(__import__("ultralytics").__file__), "assets")
Row = dict[str, Callable[[], object]]


def _photo(name: str) -> Image.Image:
    return Image.open(os.path.join(ASSETS, name)).convert("RGB")


# -- YOLO -------------------------------------------------------------------------------


def _yolo_conf(yolo, bgr: np.ndarray, k: int) -> float:
    """A ``conf`` just below the (2K)-th best anchor confidence: NMS then sees ~2K candidates
    and keeps K (a random-init head scores every anchor ~1e-4)."""
    result = yolo.predict(bgr, conf=1e-9, max_det=2 * k, verbose=False)[0]
    confs = result.boxes.conf.sort(descending=True).values
    return float(confs[min(2 * k, len(confs)) - 1]) * (1 - 1e-4)


def yolo_row(spec: str, k: int, pgc: bool = True) -> tuple[Row, str]:
    from pytorch_grad_cam import LayerCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from ultralytics import YOLO

    from mmcam.tasks.detection import DetectionTask

    weights, photo_name = spec.split("@")
    torch.manual_seed(0)
    yolo = YOLO(weights)
    photo = _photo(photo_name)
    bgr = np.ascontiguousarray(np.asarray(photo)[:, :, ::-1])
    threads = torch.get_num_threads()
    conf = _yolo_conf(yolo, bgr, k)
    # the first predict runs ultralytics' select_device, which sets torch's threads to
    # min(8, cpus - 1) for the rest of the process (1 on a 2-core machine: every later row too);
    # later predicts keep what is set, so every column runs at the threads the run started with
    torch.set_num_threads(threads)
    task = DetectionTask(yolo, conf=conf, max_boxes=k)
    exp = task(photo)
    head = len(yolo.model.model) - 1  # candidate layers measured beside the default (docs/speed.md)
    neck = DetectionTask(yolo, conf=conf, max_boxes=k, layers=[f"model.{i}" for i in yolo.model.model[-1].f])
    branches = DetectionTask(yolo, conf=conf, max_boxes=k, layers=[f"model.{head}.cv3.{s}.0" for s in range(3)])
    row: Row = {
        "inference": lambda: yolo.predict(bgr, conf=conf, max_det=k, verbose=False),
        "mmcam": lambda: task(photo),
        "neck only": lambda: neck(photo),
        "cv3.s.0": lambda: branches(photo),
    }
    if pgc:
        family = task.family
        prepared = family.prepare(photo)
        anchors, classes = exp.meta["raw_indices"], exp.meta["class_ids"]
        nc = int(family.inner.model[-1].nc)

        class Flat(torch.nn.Module):  # the raw class logits as one (B, nc * anchors) tensor
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, x):
                return self.inner(x)[1]["scores"].flatten(1)

        flat = Flat(family.inner)
        modules = [family.inner.get_submodule(n) for n in exp.layers]
        n_anchors = None

        def pgc_loop():
            nonlocal n_anchors
            with family.context():
                cam = LayerCAM(model=flat, target_layers=modules)
                if n_anchors is None:
                    with torch.no_grad():
                        n_anchors = flat(prepared.inputs).shape[1] // nc
                # the fused copy's parameters are frozen: an input that requires grad gives
                # pytorch-grad-cam a graph (its backward then also reaches the input)
                x = prepared.inputs.clone().requires_grad_()
                for a, c in zip(anchors, classes):
                    cam(input_tensor=x, targets=[ClassifierOutputTarget(c * n_anchors + a)])

        row["pytorch-grad-cam loop"] = pgc_loop
    return row, f"{len(exp.items)} boxes, layers {','.join(exp.layers)}"


# -- captioner --------------------------------------------------------------------------


def caption_row(method: str, k: int = 12, two_pass: bool = False, modes: bool = False) -> tuple[Row, str]:
    """``explain_caption`` (the task call: processor, generate, the explained pass, maps on the
    photo) beside the processor + ``generate()`` of the same ``k`` tokens, on ``bus.jpg`` resized
    to 224 x 224 (so the maps' resize to the photo is the model's grid, as in the issue's row).
    Beside it (Grad-CAM) the ordinary backward of the previous round (GPT-2's cross-attention through
    ``dK W_kᵀ + dV W_vᵀ``, the LM head once per word) and, with ``two_pass``, the two-pass path before
    it; ``modes``: both in each gradient mode (batched, looped) forced."""
    from transformers import (
        GPT2Config,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
    )

    import mmcam
    from mmcam.zoo.text import CaptionProcessor

    torch.manual_seed(0)
    decoder = GPT2Config(add_cross_attention=True, is_decoder=True)
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(ViTConfig(image_size=224, patch_size=16), decoder)
    config.decoder_start_token_id = config.pad_token_id = decoder.bos_token_id
    config.eos_token_id = decoder.eos_token_id
    model = VisionEncoderDecoderModel(config=config).eval()
    gen = model.generation_config
    gen.decoder_start_token_id = gen.pad_token_id = decoder.bos_token_id
    gen.max_new_tokens = gen.min_new_tokens = k  # k words, no early stop (what explain_caption generates too)
    gen.do_sample, gen.num_beams = False, 1
    processor = CaptionProcessor([f"w{i}" for i in range(decoder.vocab_size - 4)], size=224)  # a word per GPT-2 id
    photo = _photo("bus.jpg").resize((224, 224))

    def generate():
        with torch.no_grad():
            return model.generate(pixel_values=processor(images=photo)["pixel_values"])

    def explain():
        return mmcam.explain_caption(model, processor, photo, method=method)

    def two_passes():  # before: generate() runs the encoder, the explained forward runs it again
        from mmcam.adapters.hf_text import decoding_for, run_cam, teacher_forced

        pixels = processor(images=photo)["pixel_values"]
        decoding = decoding_for(model)
        forced = teacher_forced(decoding, processor.tokenizer, decoding.generate({"pixel_values": pixels}))
        inputs = {"pixel_values": pixels, "decoder_input_ids": forced.decoder_ids}
        return run_cam(model, model, None if method == "gae" else exp.layers, method, inputs, [forced.target])

    def ordinary_backward():  # before: cross-attention through dK W_kᵀ + dV W_vᵀ (keys re-projected), the LM head once per word
        from contextlib import nullcontext
        from unittest import mock

        with (
            mock.patch("mmcam.adapters.teacher.low_rank_cross_attention", lambda *_: nullcontext(0)),
            mock.patch("mmcam.adapters.teacher.head_rows", lambda target, hidden, weight, logits: target({"logits": logits})),
        ):
            return explain()

    from mmcam.engine.core import _MEASURED

    def in_mode(fn, mode):  # the gradient mode grad_mode="auto" would otherwise measure once and keep
        def run():
            _MEASURED[model] = mode
            return fn()

        return run

    exp = explain()
    assert len(exp.items) == k, exp.items
    what = f"{len(exp.items)} words, layers {exp.layers[:1]}, gradient mode {_MEASURED.get(model, 'loop')}"
    row: Row = {"inference": generate}
    if modes:
        for mode in ("batched", "loop"):
            row[f"mmcam, {mode}"] = in_mode(explain, mode)
            row[f"before, {mode}"] = in_mode(ordinary_backward, mode)
        row["mmcam"] = row.pop("mmcam, batched")
        return row, f"{len(exp.items)} words, layers {exp.layers[:1]}, mmcam column batched"
    row["mmcam"] = explain
    if method != "gae":  # gae keeps the two passes (its forward is eager, generate()'s is not)
        row["ordinary backward (before)"] = ordinary_backward
        if two_pass:
            row["two passes (before)"] = two_passes
    return row, what


# -- ResNet-50 --------------------------------------------------------------------------


def resnet_row(k: int) -> tuple[Row, str]:
    import torchvision
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    import mmcam

    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval()
    x = torch.randn(1, 3, 224, 224)
    cam = mmcam.CAM(model, "layer4", method="gradcam")
    pgc = GradCAM(model=model, target_layers=[model.layer4])

    def plain():
        with torch.no_grad():
            model(x)

    row: Row = {
        "inference": plain,
        "mmcam": lambda: cam(x, list(range(k))),
        "pytorch-grad-cam loop": lambda: [pgc(input_tensor=x, targets=[ClassifierOutputTarget(c)]) for c in range(k)],
    }
    return row, f"{k} classes, layer4"


# -- table ------------------------------------------------------------------------------


def rows(only: set[str], ks: list[int], pgc_max: int, photos: tuple[str, ...] = ("bus.jpg", "zidane.jpg")) -> list[tuple[str, Callable[[], tuple[Row, str]]]]:
    out: list[tuple[str, Callable[[], tuple[Row, str]]]] = []
    if "yolo" in only:
        for weights in ("yolov8n.yaml", "yolo11n.yaml"):
            for photo in photos:
                for k in ks:
                    spec = f"{weights}@{photo}"
                    out.append((f"yolo:{spec}:{k}", lambda s=spec, k=k: yolo_row(s, k, pgc=k <= pgc_max)))
    if "caption" in only or "caption-gradcam" in only:
        for method in ("gradcam", "gae") if "caption" in only else ("gradcam",):
            out.append((f"caption:{method}:12", lambda m=method: caption_row(m)))
    if "caption-modes" in only:
        out.append(("caption:gradcam:12:modes", lambda: caption_row("gradcam", modes=True)))
    if "resnet" in only:
        for k in ks:
            out.append((f"resnet:{k}", lambda k=k: resnet_row(k)))
    for kind in ("detr", "rtdetr"):
        if kind in only:
            for k in ks:
                out.append((f"{kind}:{k}", lambda kind=kind, k=k: hf.detr_row(kind, k, _photo("bus.jpg"), pgc=k <= pgc_max)))
    if "vilt" in only:
        for method in ("gae", "gradcam"):
            out.append((f"vilt:{method}", lambda m=method: hf.vilt_row(m, _photo("bus.jpg"))))
    if "blip" in only:
        out.append(("blip:gradcam", lambda: hf.blip_row("gradcam", _photo("bus.jpg"))))
    return out


def build(name: str) -> tuple[Row, str]:
    kind, *rest = name.split(":")
    if kind == "yolo":
        return yolo_row(rest[0], int(rest[1]))
    if kind == "caption":
        return caption_row(rest[0], int(rest[1]))
    if kind in ("detr", "rtdetr"):
        return hf.detr_row(kind, int(rest[0]), _photo("bus.jpg"), pgc=False)
    if kind == "vilt":
        return hf.vilt_row(rest[0], _photo("bus.jpg"))
    if kind == "blip":
        return hf.blip_row(rest[0], _photo("bus.jpg"))
    return resnet_row(int(rest[0]))


def timed(row: Row, rounds: int) -> dict[str, float]:
    for fn in row.values():  # warm-up: caches, the fused YOLO copy, grad-mode measurement
        fn()
    times: dict[str, list[float]] = {c: [] for c in row}
    for _ in range(rounds):
        for column, fn in row.items():
            start = time.perf_counter()
            fn()
            times[column].append(time.perf_counter() - start)
    return {c: statistics.median(t) for c, t in times.items()}


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))


def peak_child(name: str, column: str) -> None:
    """In a fresh process, one call of ``column`` after a warm-up: the process's peak RSS
    during it (``hwm_mb``: model, libraries and the call's own memory) and its rise over the
    RSS before it (``peak_mb``)."""
    row, _ = build(name)
    row[column]()  # warm-up, as in the timings
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    base = _rss_kb("VmRSS")
    row[column]()
    hwm = _rss_kb("VmHWM")
    print(json.dumps({"peak_mb": (hwm - base) / 1024, "hwm_mb": hwm / 1024}))


def peak(name: str, column: str) -> dict[str, float] | None:
    cmd = [sys.executable, "-m", "bench.real_sizes", "--peak", name, column]
    done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy(), check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="K = 10 only, 3 rounds, no memory")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--only",
        default="yolo,caption,resnet,detr,rtdetr,vilt,blip",
        help="rows: yolo, caption (caption-gradcam: Grad-CAM only; caption-modes: each gradient mode), resnet, detr, rtdetr, vilt, blip",
    )
    parser.add_argument("--photos", default="bus.jpg,zidane.jpg", help="the YOLO rows' ultralytics photos")
    parser.add_argument("--ks", default=None, help="comma-separated K (default 1,10,30; --quick: 10)")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--pgc-max", type=int, default=10, help="run pytorch-grad-cam's loop up to this K")
    parser.add_argument("--peak", nargs=2, metavar=("ROW", "COLUMN"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak:
        return peak_child(*args.peak)
    ks, rounds, memory = ([10], 3, False) if args.quick else ([1, 10, 30], args.rounds, not args.no_memory)
    ks = [int(k) for k in args.ks.split(",")] if args.ks else ks
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()}")
    print("| case | items | inference | mmcam | ratio | pytorch-grad-cam loop | mmcam speed-up | peak RSS MB, rise (inference / mmcam) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, make in rows(set(args.only.split(",")), ks, args.pgc_max, tuple(args.photos.split(","))):
        if rounds == 0:  # --rounds 0: peak memory only
            inf, cam = peak(name, "inference"), peak(name, "mmcam")
            print(f"| {name} | peak RSS MB (rise) inference {inf} / mmcam {cam} |", flush=True)
            continue
        try:
            row, what = make()
            t = timed(row, rounds)
            what += f"; {torch.get_num_threads()} threads"
        except Exception as error:  # one failing row does not end a long run
            print(f"| {name} | failed: {type(error).__name__}: {error} |", flush=True)
            continue
        loop = t.get("pytorch-grad-cam loop")
        for column in t:  # extra columns: YOLO's candidate default layers, the captioner's previous path
            if column not in ("inference", "mmcam", "pytorch-grad-cam loop"):
                what += f"; layers {column}: {t[column] * 1e3:.0f} ms ({t[column] / t['inference']:.2f}x)"
        loop_ms = "" if loop is None else f"{loop * 1e3:.0f} ms"
        speedup = "" if loop is None else f"{loop / t['mmcam']:.1f}x"
        mem = ""
        if memory:
            inf, cam = peak(name, "inference"), peak(name, "mmcam")
            mem = "n/a"
            if inf is not None and cam is not None:  # peak RSS (its rise during the call)
                mem = f"{inf['hwm_mb']:.0f} ({inf['peak_mb']:+.0f}) / {cam['hwm_mb']:.0f} ({cam['peak_mb']:+.0f}) = {cam['hwm_mb'] / inf['hwm_mb']:.2f}x"
        print(
            f"| {name} | {what} | {t['inference'] * 1e3:.0f} ms | {t['mmcam'] * 1e3:.0f} ms | "
            f"{t['mmcam'] / t['inference']:.2f}x | {loop_ms} | {speedup} | {mem} |",
            flush=True,
        )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
