"""The ``mmcam`` command.

    mmcam demo [--out DIR]                      every task on the zoo models, offline
    mmcam explain IMAGE|DIR --task classify --model zoo:classifier [--method M] [--layer L] [--out DIR]
    mmcam list                                  methods, tasks, zoo models

Errors a user can cause are reported as one line (``mmcam: error: ...``) and exit code 2,
without a traceback. ``summary.json`` follows ``mmcam/schemas/explain_summary.schema.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from .errors import InputError, MMCamError

TASKS = ("classify", "caption", "vqa", "detect", "segment", "action")
ZOO_TASKS = {"classifier": "classify", "vit": "classify", "segmenter": "segment", "yolo": "detect", "captioner": "caption", "vqa": "vqa", "qnet": "action"}
SCHEMA = Path(__file__).parent / "schemas" / "explain_summary.schema.json"


def _offline_env() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(Path.cwd() / ".yolo"))


HF_AUTO = {
    "classify": "AutoModelForImageClassification",
    "segment": "AutoModelForSemanticSegmentation",
    "caption": "VisionEncoderDecoderModel",
    "vqa": "AutoModelForVisualQuestionAnswering",
}


def load_model(spec: str, weights: str | None = None, task: str = "classify") -> tuple[Any, Any]:
    """``(model, processor)`` for ``zoo:NAME``, an ultralytics weights/yaml file, a local HF
    model directory (``save_pretrained`` output), or a torchvision model name (``--weights``)."""
    if spec.startswith("zoo:"):
        from . import zoo

        return zoo.load(spec[4:])
    path = Path(spec)
    if spec.endswith((".pt", ".yaml", ".yml")):
        if not path.exists() and not spec.endswith((".yaml", ".yml")):
            raise InputError(f"ultralytics weights file {spec!r} does not exist; pass the path of your .pt file")
        from ultralytics import YOLO

        return YOLO(spec), None
    if path.is_dir():
        if not (path / "config.json").exists():
            raise InputError(f"{spec!r} is a directory without config.json; pass a local HF model directory (save_pretrained)")
        if task not in HF_AUTO:
            raise InputError(f"HF model directories are supported for tasks {sorted(HF_AUTO)}, not {task!r}")
        import transformers

        model = getattr(transformers, HF_AUTO[task]).from_pretrained(spec, local_files_only=True).eval()
        try:
            processor = transformers.AutoProcessor.from_pretrained(spec, local_files_only=True)
        except (OSError, ValueError):
            raise InputError(f"no processor saved in {spec!r}; save it there with processor.save_pretrained()") from None
        return model, processor
    import torchvision

    if spec in torchvision.models.list_models(module=torchvision.models):
        import torch

        model = torchvision.models.get_model(spec, weights=None)
        if weights:
            state = _load_weights(Path(weights))
            model.load_state_dict(state)
        return model.eval(), None
    raise InputError(
        f"unknown model spec {spec!r}; pass zoo:NAME (see `mmcam list`), a local HF model directory, an "
        "ultralytics .pt file, or a torchvision model name with --weights FILE"
    )


def _load_weights(path: Path) -> dict:
    if not path.exists():
        raise InputError(f"weights file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    import torch

    return torch.load(str(path), map_location="cpu", weights_only=True)


def cmd_list(args: argparse.Namespace) -> int:
    from . import methods

    print("methods:", ", ".join(methods.available()), "(+ guided-backprop, guided-gradcam)")
    print("tasks:  ", ", ".join(TASKS))
    try:
        from . import zoo

        print("zoo:    ", ", ".join(zoo.available()) or "(none shipped)")
    except ImportError:
        print("zoo:     (not installed)")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from .io import list_images

    if args.task == "vqa" and not args.question:
        raise InputError("the vqa task needs --question, e.g. --question 'what color is the circle ?'")
    if args.model.startswith("zoo:") and ZOO_TASKS.get(args.model[4:], args.task) != args.task:
        raise InputError(f"zoo model {args.model[4:]!r} does the {ZOO_TASKS[args.model[4:]]!r} task, not {args.task!r}; pass --task {ZOO_TASKS[args.model[4:]]}")
    images = list_images(args.input)
    out = Path(args.out)
    _ensure_writable(out)
    model, processor = load_model(args.model, args.weights, args.task)
    ok, failed = 0, []
    from tqdm.auto import tqdm

    summaries, explanations, names = [], [], []
    for path in tqdm(images, desc="explaining", unit="image", disable=len(images) < 2):
        try:
            exp = _explain_one(args, model, processor, path)
        except MMCamError as error:
            failed.append({"image": str(path), "reason": str(error)})
            continue
        explanations.append(exp)
        names.append(path.name)
        files = exp.save(out, stem=path.stem)
        summaries.append({"image": str(path), "files": [f.name for f in files], **exp.to_dict()})
        ok += 1
    summary = {
        "command": " ".join(["mmcam"] + sys.argv[1:]),
        "task": args.task,
        "model": args.model,
        "explained": summaries,
        "failed": failed,
        "versions": _versions(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if explanations:
        from .render.report import write_report

        write_report(out / "report.html", explanations, title=f"mmcam explain · {args.task} · {args.model}", names=names)
    for item in failed:
        print(f"mmcam: skipped {item['image']}: {item['reason']}", file=sys.stderr)
    print(f"explained {ok} of {len(images)} image(s) -> {out}")
    return 0 if ok else 1


def _explain_one(args: argparse.Namespace, model: Any, processor: Any, path: Path):
    layers = args.layer or None
    if args.task == "classify":
        from .explain import explain_classification

        return explain_classification(model, path, processor=processor, method=args.method, layers=layers, topk=args.topk)
    if args.task == "detect":
        from .tasks.detection import explain_detections

        return explain_detections(model, path, processor=processor, method=args.method, layers=layers, conf=args.conf)
    if args.task == "segment":
        from .tasks.segmentation import explain_segmentation

        return explain_segmentation(model, path, processor=processor, method=args.method, layers=layers)
    if args.task == "caption":
        from .tasks.caption import explain_caption

        if processor is None:
            raise InputError("the caption task needs a model with a processor (e.g. --model zoo:captioner)")
        return explain_caption(model, processor, path, method=args.method, layers=layers)
    if args.task == "vqa":
        from .tasks.vqa import explain_vqa

        if processor is None:
            raise InputError("the vqa task needs a model with a processor (e.g. --model zoo:vqa)")
        return explain_vqa(model, processor, path, args.question, method=args.method, layers=layers)
    raise InputError(
        f"task {args.task!r} takes observations, not image files; use mmcam.explain_action(model, obs) from Python"
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    start = time.perf_counter()
    report = run_demo(Path(args.out), n_images=args.images)
    print(f"demo written to {report} in {time.perf_counter() - start:.1f} s")
    return 0


def _ensure_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".mmcam-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise InputError(f"cannot write to output directory {str(out)!r} ({error.strerror}); pass a writable --out") from None


def _versions() -> dict[str, str]:
    import torch

    from . import __version__

    return {"mmcam": __version__, "torch": torch.__version__, "python": sys.version.split()[0]}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmcam", description="Explain what a vision model looked at.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="methods, tasks and zoo models")
    p.set_defaults(fn=cmd_list)
    p = sub.add_parser("explain", help="explain an image or a folder of images")
    p.add_argument("input", help="an image file or a directory of images")
    p.add_argument("--task", choices=TASKS, default="classify")
    p.add_argument("--model", required=True, help="zoo:NAME, a local HF model directory, an ultralytics .pt/.yaml, or a torchvision model name")
    p.add_argument("--weights", help="weights file for a torchvision model (.safetensors or .pt state dict)")
    p.add_argument("--method", default="gradcam")
    p.add_argument("--layer", action="append", help="layer name (repeat to fuse several)")
    p.add_argument("--topk", type=int, default=1, help="classify: explain the k top classes")
    p.add_argument("--conf", type=float, default=0.25, help="detect: confidence threshold")
    p.add_argument("--question", help="vqa: the question to answer")
    p.add_argument("--out", default="out/explain")
    p.set_defaults(fn=cmd_explain)
    p = sub.add_parser("demo", help="every task on the zoo models, offline")
    p.add_argument("--out", default="out/demo")
    p.add_argument("--images", type=int, default=3)
    p.set_defaults(fn=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    _offline_env()
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except MMCamError as error:
        print(f"mmcam: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
