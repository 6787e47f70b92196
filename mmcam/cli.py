"""The ``mmcam`` command.

    mmcam demo [--out DIR]                      every task on the zoo models, offline
    mmcam explain IMAGE|DIR --task classify --model zoo:classifier [--method M] [--layer L] [--out DIR]
    mmcam list                                  methods, tasks, zoo models
    mmcam batch COCO.json|DIR --task classify --model zoo:classifier [--out DIR]   a dataset; under torchrun: sharded
    mmcam evaluate --task classify [--method gradcam,layercam] [--images 200] [--out DIR]   metrics table (Markdown + JSON)

Model files load safely by default (pickled ``.pt``/``.bin`` through restricted unpicklers,
see ``docs/safety.md``); ``--trust-pickle`` opts in to full unpickling for trusted files.
Errors a user can cause are reported as one line (``mmcam: error: ...``) and exit code 2,
without a traceback. ``summary.json`` follows ``mmcam/schemas/explain_summary.schema.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .cli_args import EXIT_BUG, EXIT_INPUT, EXIT_INTERRUPTED, TASKS, build_parser
from .errors import InputError, MMCamError
from .loading import load_model

ZOO_TASKS: dict[str, tuple[str, ...]] = {
    "classifier": ("classify",),
    "vit": ("classify",),
    "segmenter": ("segment",),
    "yolo": ("detect",),
    "yolo26": ("detect",),
    "pose": ("pose", "detect"),
    "detr": ("detect",),
    "captioner": ("caption",),
    "vqa": ("vqa",),
    "vlm": ("vqa", "caption"),
    "qnet": ("action",),
}
SCHEMA = Path(__file__).parent / "schemas" / "explain_summary.schema.json"


def _offline_env() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(Path.cwd() / ".yolo"))


#: What ``mmcam explain`` / the ``explain_*`` calls adapt, shown by ``mmcam list``.
FAMILIES = {
    "classify": "torchvision classifiers (resnet, vgg, densenet, mobilenet, efficientnet, convnext, regnet, vit, swin); HF ViT, DeiT, BEiT, Swin, ConvNeXt; ultralytics YOLO11 / YOLO26 -cls",
    "detect": "ultralytics YOLOv8/10/11/12/26 detect/segment/pose and OBB (rotated boxes), ultralytics RT-DETR (rtdetr-*.yaml/.pt), YOLO-World / YOLOE (their set classes, or --text with their CLIP / MobileCLIP on disk); HF DETR, Conditional / Deformable / DAB-DETR, RT-DETR(v2), D-FINE, LW-DETR, RF-DETR, YOLOS, and OWL-ViT / OWLv2 / Grounding DINO with --text (local directory); torchvision Faster/Mask/Keypoint R-CNN, RetinaNet, FCOS, SSD, SSDlite (name + --weights)",
    "segment": "HF Segformer; torchvision deeplabv3, lraspp, fcn; ultralytics YOLOv8/11/26 segment and torchvision Mask R-CNN (one map per instance mask)",
    "pose": "ultralytics YOLOv8/11/26 pose and torchvision Keypoint R-CNN: one map per person and per keypoint",
    "caption": "HF VisionEncoderDecoderModel (local directory); BLIP / GIT captioners through the Python API",
    "vqa": "HF ViltForQuestionAnswering (local directory); BLIP-VQA through the Python API",
    "action": "any Q-network or policy nn.Module on (C, H, W) observations (.npy files)",
}


def _check_zoo_task(model: str, task: str) -> None:
    """A zoo model asked for another task than its own is one error up front."""
    own = ZOO_TASKS.get(model[4:], (task,)) if model.startswith("zoo:") else (task,)
    if task not in own:
        raise InputError(f"zoo model {model[4:]!r} does the {' / '.join(own)} task, not {task!r}; pass --task {own[0]}")


def cmd_list(args: argparse.Namespace) -> int:
    from . import methods

    print("methods:", ", ".join(methods.available()), "(+ guided-backprop, guided-gradcam)")
    print("tasks:  ", ", ".join(TASKS))
    print("model families:")
    for task, families in FAMILIES.items():
        print(f"  {task:<9} {families}")
    try:
        from . import zoo

        print("zoo:    ", ", ".join(zoo.available()) or "(none shipped)")
    except ImportError:
        print("zoo:     (not installed)")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    if args.task == "vqa" and not args.question:
        raise InputError("the vqa task needs --question, e.g. --question 'what color is the circle ?'")
    _check_zoo_task(args.model, args.task)
    if args.method:
        from . import methods
        from .tasks.generation import OWN_METHODS

        if args.method not in OWN_METHODS:  # generative VLMs' logit-lens / tam / gae-tower: checked by the task, once
            methods.get(args.method)  # an unknown name is one error up front, not one per image
    images = _inputs(args.input, args.task)
    out = Path(args.out)
    _ensure_writable(out)
    model, processor = load_model(args.model, args.weights, args.task, trust_pickle=args.trust_pickle)
    task = _task(args, model, processor)  # one task object for every file: its errors come once, up front
    from tqdm.auto import tqdm

    from .io import unique_stems
    from .render.report import Report

    stems = unique_stems(images)  # cat.png and cat.jpg in one folder do not overwrite each other
    report = Report(f"mmcam explain · {args.task} · {args.model}")  # sections rendered as photos arrive: no photo's maps are kept
    summaries, failed, interrupted = [], [], False
    try:
        for path in tqdm(images, desc="explaining", unit="image", disable=len(images) < 2):
            try:
                exp = task(task.read(str(path)))
            except MMCamError as error:
                failed.append({"image": str(path), "reason": str(error)})
                continue
            files = _save_whole(exp, out, stems[Path(path)])
            report.add(exp, path.name)
            summaries.append({"image": str(path), "files": [f.name for f in files], **exp.to_dict()})
            del exp
    except KeyboardInterrupt:  # Ctrl-C: the summary and report of what was done, no half-written file
        interrupted = True
    summary = {
        "command": " ".join(["mmcam"] + sys.argv[1:]),
        "task": args.task,
        "model": args.model,
        "explained": summaries,
        "failed": failed,
        "versions": _versions(),
    }
    if interrupted:
        summary["interrupted"] = f"stopped by the user after {len(summaries) + len(failed)} of {len(images)} file(s)"
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if report.sections:
        report.write(out / "report.html")
    for item in failed:
        print(f"mmcam: skipped {item['image']}: {item['reason']}", file=sys.stderr)
    print(f"explained {len(summaries)} of {len(images)} image(s) -> {out}" + (" (interrupted)" if interrupted else ""))
    if interrupted:
        return 130
    return 0 if summaries else 1


def _task(args: argparse.Namespace, model: Any, processor: Any) -> Any:
    """The task object ``mmcam batch`` runs too (the model family's own read and pipeline)."""
    from .tasks.registry import build_task

    return build_task(
        args.task,
        model,
        processor,
        method=args.method or None,
        layers=args.layer or None,
        topk=args.topk,
        conf=args.conf,
        question=args.question,
        box_weight=getattr(args, "box_weight", 0.0),
        text=getattr(args, "text", None),
    )


def _save_whole(exp: Any, out: Path, stem: str) -> list[Path]:
    """``exp.save`` into a temporary folder, then each file moved into ``out``: an interrupted
    save leaves no half-written file behind."""
    import shutil

    staging = Path(tempfile.mkdtemp(prefix=f".{stem}-", dir=out))
    try:
        return [Path(shutil.move(str(f), str(out / f.name))) for f in exp.save(staging, stem=stem)]
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _inputs(path: str, task: str) -> list[Path]:
    """The files to explain: images, or ``.npy`` observations for the action task."""
    from .io import list_images

    if task != "action":
        return list_images(path)
    root = Path(path)
    if not root.exists():
        raise InputError(f"{path!r} does not exist; pass a .npy observation or a directory of them")
    files = [root] if root.is_file() else sorted(root.glob("*.npy"))
    if not files:
        raise InputError(f"no .npy observations in {path!r}; save each observation (C, H, W) with numpy.save")
    return files


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    start = time.perf_counter()
    report = run_demo(Path(args.out), n_images=args.images)
    print(f"demo written to {report} in {time.perf_counter() - start:.1f} s")
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    """``mmcam batch``: a whole dataset, sharded over ``torchrun`` ranks, resumable."""
    from .batch import run_batch

    _check_zoo_task(args.model, args.task)
    result = run_batch(
        args.task,
        args.model,
        args.source,
        args.out,
        batch_size=args.batch_size,
        num_workers=args.workers,
        method=args.method,
        layers=args.layer or None,
        question=args.question,
        text=args.text,
        topk=args.topk,
        conf=args.conf,
        weights=args.weights,
        image_dir=args.image_dir,
        shard_size=args.shard_size,
        device=args.device,
        trust_pickle=args.trust_pickle,
    )
    if result.rank == 0:
        print(
            f"explained {result.explained} of {result.images} image(s) ({result.failed} failed, {result.items} maps; "
            f"{result.resumed_shards} shard(s) resumed) on {result.world_size} process(es) -> {result.out_dir / 'index.jsonl'}"
        )
    return 0 if result.explained else 1


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``mmcam evaluate``: a method x metric table (with baselines and the sanity check)."""
    from .evaluation import ZOO_MODEL, evaluate

    model = args.model or f"zoo:{ZOO_MODEL[args.task]}"
    _check_zoo_task(model, args.task)
    out = Path(args.out)
    _ensure_writable(out)
    methods = [m for group in (args.method or []) for m in group.split(",") if m]  # none: the task's default
    attributions = [a for group in (args.attribution or []) for a in group.split(",") if a]
    from .batch import Distributed, all_reduce_evaluation

    dist = Distributed.from_env()  # under torchrun: each rank evaluates cases rank::world, then all_reduce
    try:
        result = all_reduce_evaluation(
            evaluate(
                args.task,
                model,
                methods=methods,
                layers=_layer_arg(args.layer),
                dataset=args.dataset,
                image_dir=args.image_dir,
                images=args.images,
                seed=args.seed,
                faithfulness_images=args.faithfulness_images,
                attributions=attributions,
                attribution_images=args.attribution_images,
                sanity_images=args.sanity_images,
                steps=args.steps,
                tolerance=args.tolerance,
                threads=args.threads,
                command=_evaluate_command(args, model, methods, attributions),
                trust_pickle=args.trust_pickle,
                interventions=args.interventions,
                shift=args.shift,
                shard=(dist.rank, dist.world_size) if dist.world_size > 1 else None,
            )
        )
    finally:
        dist.close()
    if dist.rank:
        return 0
    md, js = result.save(out, stem=args.stem)
    print(result.to_markdown())
    print(f"evaluated {result.items} item(s) of {result.cases} case(s) in {result.seconds:.0f} s -> {md}, {js}")
    return 0


def _layer_arg(groups: "list[str] | None") -> "list[str] | None":
    """``--layer`` values, repeated or comma-separated; ``None`` when none was given."""
    names = [name for group in (groups or []) for name in group.split(",") if name]
    return names or None


def _evaluate_command(args: argparse.Namespace, model: str, methods: list[str], attributions: list[str]) -> str:
    """The command that reproduces this table, every setting spelled out."""
    parts = ["mmcam evaluate", f"--task {args.task}", f"--model {model}"] + ([f"--method {','.join(methods)}"] if methods else [])
    parts += ["--trust-pickle"] if args.trust_pickle else []
    parts += [f"--layer {','.join(_layer_arg(args.layer))}"] if args.layer else []
    parts += [f"--dataset {args.dataset}"] if args.dataset else []
    parts += [f"--images {args.images}", f"--seed {args.seed}", f"--faithfulness-images {args.faithfulness_images}"]
    parts += [f"--attribution {','.join(attributions)} --attribution-images {args.attribution_images}"] if attributions else []
    parts += [f"--sanity-images {args.sanity_images}", f"--steps {args.steps}"] + ([f"--tolerance {args.tolerance}"] if args.tolerance is not None else [])
    parts += ["--interventions"] * args.interventions + ["--shift"] * args.shift
    return " ".join(parts)


def _ensure_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        # one probe file per process: torchrun ranks check the same directory at once
        with tempfile.NamedTemporaryFile(dir=out, prefix=".mmcam-write-test-"):
            pass
    except OSError as error:
        raise InputError(f"cannot write to output directory {str(out)!r} ({error.strerror}); pass a writable --out") from None


def _versions() -> dict[str, str]:
    import torch

    from . import __version__

    return {"mmcam": __version__, "torch": torch.__version__, "python": sys.version.split()[0]}


COMMANDS = {"list": cmd_list, "explain": cmd_explain, "demo": cmd_demo, "batch": cmd_batch, "evaluate": cmd_evaluate}


def main(argv: list[str] | None = None) -> int:
    _offline_env()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    args = build_parser(COMMANDS).parse_args([a for a in argv if a != "--debug"])
    try:
        return args.fn(args)
    except MMCamError as error:
        if debug:
            raise
        print(f"mmcam: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("mmcam: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # noqa: BLE001 - the one line a user sees instead of a traceback
        if debug:
            raise
        print(f"mmcam: error: unexpected {type(error).__name__}: {_one_line(error)} (run again with --debug for the traceback)", file=sys.stderr)
        return EXIT_BUG


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
