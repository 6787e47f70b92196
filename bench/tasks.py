"""Task benchmark: every box of a YOLO image / every word of a caption from one forward.

    python -m bench.tasks [--rounds 5] [--threads N] [--clock wall|cpu]

For the zoo's YOLO and captioner, side by side in one run (median of interleaved rounds):
the plain no-grad forward (for the captioner: the teacher-forced forward on the generated
caption), mmcam explaining all K items at once (checked against the ≤ 2.5× target), mmcam one item per call
(what a per-target library must do), and pytorch-grad-cam's per-target loop — it can
express these targets through a wrapper module that exposes the raw scores as a flat
``(B, N)`` tensor, so ``ClassifierOutputTarget(n)`` picks box / word ``n``. For the
captioner, "all words at once" is the batched VJP; the retained-graph loop is shown beside it.
On a busy machine, ``--threads 1 --clock cpu`` gives steadier ratios.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
import warnings

import numpy as np
import torch
from torch import nn

os.environ.setdefault("YOLO_OFFLINE", "1")
warnings.filterwarnings("ignore")

import mmcam  # noqa: E402
from mmcam import zoo  # noqa: E402
from mmcam.data import SceneConfig, generate_scenes  # noqa: E402
from mmcam.targets import CaptionTokens, DetectionBoxScore  # noqa: E402


class _FlatScores(nn.Module):
    """Wraps a model so its output is one flat ``(B, N)`` tensor pytorch-grad-cam can index."""

    def __init__(self, model: nn.Module, pick, **fixed):
        super().__init__()
        self.model, self.pick, self.fixed = model, pick, fixed

    def forward(self, x):
        # pytorch-grad-cam passes one tensor (it calls input_tensor.to(device)): the image; other
        # inputs (the teacher-forced decoder ids) are fixed
        return self.pick(self.model(pixel_values=x, **self.fixed) if self.fixed else self.model(x))


def _yolo_cases(image: np.ndarray):
    from pytorch_grad_cam import LayerCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from mmcam.adapters.ultralytics import KeptBoxes, default_layers

    yolo, _ = zoo.load("yolo")
    inner = yolo.model.eval()
    x = torch.from_numpy(image.astype(np.float32) / 255).permute(2, 0, 1)[None]
    kept = KeptBoxes(conf=0.25)
    layers = default_layers(inner)
    cam = mmcam.CAM(inner, layers, method="layercam")
    cam(x, [kept])
    indices, classes = kept.indices, kept.classes
    anchors = inner(x)[1]["scores"].shape[2]
    # pytorch-grad-cam keeps its hooks on the layers for its lifetime: give it its own copy, so
    # they neither slow down nor interfere with the other cases (its gradient hooks break vmap)
    theirs = copy.deepcopy(inner)
    wrapper = _FlatScores(theirs, lambda out: out[1]["scores"].flatten(1))
    pgc = LayerCAM(model=wrapper, target_layers=[theirs.get_submodule(n) for n in layers])

    def plain():
        with torch.no_grad():
            inner(x)

    return len(indices), {
        "forward (no grad)": plain,
        "mmcam, all boxes at once": lambda: cam(x, [DetectionBoxScore(indices, classes)]),
        "mmcam, one box per call": lambda: [cam(x, [DetectionBoxScore([i], [c])]) for i, c in zip(indices, classes)],
        "pytorch-grad-cam, per box": lambda: [pgc(input_tensor=x, targets=[ClassifierOutputTarget(c * anchors + i)]) for i, c in zip(indices, classes)],
    }


def _caption_cases(image: np.ndarray):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, proc = zoo.load("captioner")
    exp = mmcam.explain_caption(model, proc, image, method="gradcam")  # the caption and the Grad-CAM default layer
    ids = [model.config.decoder_start_token_id] + exp.meta["token_ids"]
    pixel_values = proc(images=image)["pixel_values"]
    decoder = torch.tensor([ids[:-1]])
    inputs = {"pixel_values": pixel_values, "decoder_input_ids": decoder}
    layer = exp.layers[0]
    cam = mmcam.CAM(model, layer, grad_mode="batched")
    looped = mmcam.CAM(model, layer, grad_mode="loop")
    attention = mmcam.CAM(model, method="gae")
    positions, tokens = list(range(len(ids) - 1)), ids[1:]
    vocab = model.config.decoder.vocab_size
    theirs = copy.deepcopy(model)  # pytorch-grad-cam's hooks stay on its own copy
    wrapper = _FlatScores(theirs, lambda out: out.logits.log_softmax(-1).flatten(1), decoder_input_ids=decoder)
    side = pixel_values.shape[-1] // model.config.encoder.patch_size  # grid from the config, CLS first
    pgc = GradCAM(
        model=wrapper, target_layers=[theirs.get_submodule(layer)], reshape_transform=lambda t: t[:, 1:].reshape(t.shape[0], side, side, -1).permute(0, 3, 1, 2)
    )

    def plain():
        with torch.no_grad():
            model(**inputs)

    return len(tokens), {
        "forward (no grad)": plain,
        "mmcam, all words at once": lambda: cam(inputs, [CaptionTokens(positions, tokens)]),
        "mmcam, all words, retained-graph loop": lambda: looped(inputs, [CaptionTokens(positions, tokens)]),
        "mmcam, one word per call": lambda: [cam(inputs, [CaptionTokens([p], [t])]) for p, t in zip(positions, tokens)],
        "mmcam gae (the default), all words": lambda: attention(inputs, [CaptionTokens(positions, tokens)]),
        "pytorch-grad-cam, per word": lambda: [
            pgc(input_tensor=pixel_values, targets=[ClassifierOutputTarget(p * vocab + t)]) for p, t in zip(positions, tokens)
        ],
    }


def _time(cases: dict, rounds: int, clock=time.perf_counter) -> dict[str, float]:
    for fn in cases.values():
        fn()
    samples = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            start = clock()
            fn()
            samples[name].append(clock() - start)
    return {name: statistics.median(v) for name, v in samples.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="cpu: this process's CPU time (steadier on a shared machine)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    scene = generate_scenes(1, 4242, SceneConfig(min_objects=3, max_objects=3))[0]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.clock} clock, median of {args.rounds} interleaved rounds")
    for title, make in (("YOLO (zoo yolo, 64 px)", _yolo_cases), ("caption (zoo captioner, 64 px)", _caption_cases)):
        name = "yolo" if title.startswith("YOLO") else "captioner"
        if name not in zoo.available():
            print(f"\n{title}: not shipped in this build")
            continue
        k, cases = make(scene.image)
        times = _time(cases, args.rounds, time.perf_counter if args.clock == "wall" else time.process_time)
        fwd, ours = times["forward (no grad)"], next(t for n, t in times.items() if "at once" in n)
        print(f"\n{title}: K = {k}")
        for n, t in times.items():
            extra = f"  = {t / fwd:.2f}x forward" + (f"; {t / ours:.1f}x mmcam all-at-once" if "at once" not in n and n != "forward (no grad)" else "")
            print(f"  {n:38s} {t * 1000:8.1f} ms{extra}")
        ratio = ours / fwd
        print(f"  all {k} items from one forward: {ratio:.2f}x one plain forward (issue 4 target <= 2.5x: {'met' if ratio <= 2.5 else 'NOT met'})")


if __name__ == "__main__":
    main()
