"""The ``mmcam`` command line: its arguments and their checks (the commands are in :mod:`mmcam.cli`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["TASKS", "build_parser"]

TASKS = ("classify", "caption", "vqa", "detect", "segment", "pose", "action")


def _model_arguments(p: argparse.ArgumentParser) -> None:
    """What `explain` and `batch` share: the task, the model and how to explain it."""
    p.add_argument("--task", choices=TASKS, default="classify")
    p.add_argument(
        "--model", required=True, help="zoo:NAME, a local HF model directory or cached hub id, an ultralytics .pt/.yaml, or a torchvision model name"
    )
    p.add_argument("--weights", help="weights file for a torchvision model (.safetensors or .pt state dict)")
    _trust_argument(p)
    p.add_argument(
        "--method",
        help="a CAM method (see `mmcam list`); default: the task's own (gradcam; layercam for detect and YOLO segment models; gae-shift for VisionEncoderDecoder captions and ViLT answers; gae-tower for LLaVA, layercam for other VLMs; sarfa for cell-grid action observations)",
    )
    p.add_argument("--layer", action="append", help="layer name (repeat to fuse several)")
    p.add_argument("--topk", type=_positive, default=1, help="classify: explain the k top classes")


def _trust_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="load pickled model files (ultralytics .pt, HF .bin) with the full unpickler: only for files you trust as code (see docs/safety.md)",
    )


def _positive(text: str) -> int:
    value = int(text) if text.lstrip("-").isdigit() else None
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a confidence in [0, 1], got {text!r}")
    return value


def build_parser(commands: dict[str, Callable[[argparse.Namespace], int]]) -> argparse.ArgumentParser:
    """The ``mmcam`` parser; ``commands`` maps each subcommand to the function that runs it."""
    parser = argparse.ArgumentParser(
        prog="mmcam",
        description="Explain what a vision model looked at.",
        epilog="exit codes: 0 done, 1 nothing explained, 2 usage or input error, 3 unexpected error (add --debug for the traceback), 130 interrupted",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="methods, tasks and zoo models")
    p.set_defaults(fn=commands["list"])
    p = sub.add_parser("explain", help="explain an image or a folder of images")
    p.add_argument("input", help="an image file or a directory of images (action: .npy observations)")
    _model_arguments(p)
    p.add_argument("--conf", type=_probability, default=0.25, help="detect (and YOLO segment models): confidence threshold")
    p.add_argument(
        "--box-weight", type=float, default=0.0, help="detect: add box-weight x IoU with the kept box to each box's score (for scorecam/ablationcam)"
    )
    p.add_argument("--question", help="vqa: the question to answer")
    p.add_argument(
        "--text",
        nargs="+",
        help="detect, open-vocabulary detectors (OWL-ViT, OWLv2, Grounding DINO; YOLO-World / YOLOE with their text encoder on disk): the queries, e.g. --text 'a person' 'a bus'",
    )
    p.add_argument("--out", default="out/explain")
    p.set_defaults(fn=commands["explain"])
    p = sub.add_parser("demo", help="every task on the zoo models, offline")
    p.add_argument("--out", default="out/demo")
    p.add_argument("--images", type=int, default=3)
    p.set_defaults(fn=commands["demo"])
    p = sub.add_parser("batch", help="a whole dataset (COCO .json or image folder), batched, sharded under torchrun, resumable")
    p.add_argument("source", help="a COCO annotation .json (images in --image-dir) or a folder of images (action: of .npy observations)")
    _model_arguments(p)
    p.add_argument("--conf", type=_probability, help="detect: confidence threshold (default: the detector's own, 0.25 for YOLO)")
    p.add_argument("--question", help="vqa: the question asked of every image")
    p.add_argument("--text", nargs="+", help="detect, open-vocabulary detectors: the queries asked of every image, e.g. --text 'a person' 'a bus'")
    p.add_argument("--image-dir", help="COCO: the images folder (default: images/ beside annotations/)")
    p.add_argument("--batch-size", type=int, default=16, help="images per forward (classify, segment, action, detect on YOLO; caption/vqa go image by image)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers decoding images, per process")
    p.add_argument("--shard-size", type=int, default=64, help="images per output shard (the unit of resuming)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (under torchrun: each rank's LOCAL_RANK GPU, nccl)")
    p.add_argument("--out", default="out/batch")
    p.set_defaults(fn=commands["batch"])
    p = sub.add_parser("evaluate", help="measure a task's maps: localisation, faithfulness, sanity checks, with baselines")
    p.add_argument("--task", choices=TASKS, default="classify")
    p.add_argument("--model", help="as for `mmcam explain`; default: the task's zoo model")
    _trust_argument(p)
    p.add_argument(
        "--method", action="append", help="CAM method(s), comma-separated or repeated (default: the task's own for the model, as mmcam explain picks it)"
    )
    p.add_argument("--dataset", help="a COCO annotation .json (default: scenes generated from --seed)")
    p.add_argument("--image-dir", help="COCO: the images folder (default: images/ beside annotations/)")
    p.add_argument("--images", type=int, default=200, help="images (or grid states) to evaluate")
    p.add_argument("--layer", action="append", help="layer(s) every map comes from, repeated or comma-separated (default: the task's own)")
    p.add_argument("--seed", type=int, default=0, help="scenes, random baselines and ROAD noise all follow it")
    p.add_argument("--faithfulness-images", type=int, default=40, help="cases scored by deletion/insertion/ROAD/avg drop (0: off)")
    p.add_argument("--attribution", action="append", help="captum baselines: occlusion, saliency, smoothgrad, integrated-gradients, kernelshap")
    p.add_argument("--attribution-images", type=int, default=10, help="cases the captum baselines run on")
    p.add_argument("--sanity-images", type=int, default=8, help="cases for cascading randomization / other-target test (0: off)")
    p.add_argument("--steps", type=int, default=20, help="deletion/insertion steps")
    p.add_argument("--tolerance", type=int, help="pointing ±r tolerance in pixels (default: TorchRay's 15 px at 224, scaled to the input)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a busy machine)")
    p.add_argument("--interventions", action="store_true", help="also re-render each scene without each object (interventional ground truth)")
    p.add_argument("--shift", action="store_true", help="shifted scenes: more, smaller objects, occluders, clutter (action: more walls)")
    p.add_argument("--out", default="out/evaluate")
    p.add_argument("--stem", help="output file stem (default evaluate-TASK)")
    p.set_defaults(fn=commands["evaluate"])
    return parser


#: exit codes: 0 done, 1 nothing could be explained, 2 a usage or input error (one line, no
#: traceback), 3 an unexpected error (one line; ``--debug`` shows the traceback), 130 Ctrl-C
EXIT_OK, EXIT_NOTHING, EXIT_INPUT, EXIT_BUG, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
