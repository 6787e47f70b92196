"""Dataset throughput: the single-image path in a loop vs ``mmcam batch`` on 1 and 2 processes.

    python -m bench.batch [--images 100] [--batch-size 32] [--rounds 1] [--threads N]

On the same scenes (a COCO dataset written once), with the zoo classifier and Grad-CAM:

(a) ``explain_classification`` called per image in a loop (model loaded once; the loop
    alone is timed; nothing written);
(a2) the same with the layer lookup done once — the classify task object (one ``CAM`` reused)
    fed one image per call — and (a3) fed ``--batch-size`` images per call, in-process with
    images decoded up front: what reusing the ``CAM`` gains (``layers=None`` probes the model
    for its layer on every single-image call) and what batching the forward gains, apart;
(b) ``mmcam batch`` in one process and (c) under ``torchrun --nproc-per-node 2`` (gloo,
    one thread per rank): images/s of the explain phase (``explain_seconds``: first batch
    request to every rank's shards written, with decoding in ``--workers`` DataLoader
    workers), of the whole call (``seconds``: + process group, imports, model load) and of
    the whole command (+ starting Python).

Images/s side by side with ratios to (a); with ``--rounds`` > 1, the median per variant.
On a shared machine the rates move with the other load (and a variant with two processes
gets a larger share of a busy CPU); the load average is printed with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")


def _dataset(root: Path, n: int) -> Path:
    from mmcam.data import classification_config, generate_scenes, write_coco

    return write_coco(generate_scenes(n, seed=7, config=classification_config()), root, "bench")


def _loop(coco: Path) -> float:
    from mmcam import zoo
    from mmcam.batch import list_records
    from mmcam.tasks.classification import explain_classification

    model, processor = zoo.load("classifier")
    records = list_records(coco)
    start = time.perf_counter()
    for r in records:
        explain_classification(model, r.path, processor=processor)
    return len(records) / (time.perf_counter() - start)


def _engine_loop(coco: Path, per_call: int) -> float:
    from mmcam import zoo
    from mmcam.batch import list_records
    from mmcam.io import load_image
    from mmcam.tasks.registry import build_task

    model, processor = zoo.load("classifier")
    engine = build_task("classify", model, processor, method="gradcam")
    images = [load_image(r.path) for r in list_records(coco)]
    engine.explain([engine.prepare(images[0])])  # the layer lookup, once
    start = time.perf_counter()
    for i in range(0, len(images), per_call):
        engine.explain([engine.prepare(img) for img in images[i : i + per_call]])
    return len(images) / (time.perf_counter() - start)


def _batch_cli(coco: Path, out: Path, batch_size: int, workers: int, processes: int) -> tuple[float, float, float]:
    """Images/s of one ``mmcam batch`` command: explain phase, whole call, whole command."""
    args = [str(coco), "--task", "classify", "--model", "zoo:classifier", "--batch-size", str(batch_size), "--workers", str(workers), "--out", str(out)]
    if processes == 1:
        cmd = [sys.executable, "-m", "mmcam.cli", "batch", *args]
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc-per-node={processes}",
            "--master-addr=127.0.0.1",
            f"--master-port={port}",
            "-m",
            "mmcam.cli",
            "batch",
            *args,
        ]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    wall = time.perf_counter() - start
    summary = json.loads((out / "summary.json").read_text())
    n = summary["images"]
    return n / summary["explain_seconds"], n / summary["seconds"], n / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers per process for (b) and (c)")
    parser.add_argument("--threads", type=int, help="torch threads per process for every variant (default: torch's; torchrun ranks use 1)")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the mmcam batch commands

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        coco = _dataset(root / "data", args.images)
        results: dict[str, list[tuple[float, ...]]] = {"loop": [], "reused": [], "batched": [], "batch1": [], "batch2": []}
        load_start = os.getloadavg()[0]
        for r in range(args.rounds):  # interleaved, so load changes hit every variant alike
            results["loop"].append((_loop(coco),))
            results["reused"].append((_engine_loop(coco, 1),))
            results["batched"].append((_engine_loop(coco, args.batch_size),))
            results["batch1"].append(_batch_cli(coco, root / f"out1-{r}", args.batch_size, args.workers, 1))
            results["batch2"].append(_batch_cli(coco, root / f"out2-{r}", args.batch_size, args.workers, 2))
    med = {k: [statistics.median(v[i] for v in vals) for i in range(len(vals[0]))] for k, vals in results.items()}
    base = med["loop"][0]
    print(
        f"{args.images} scenes (64x64), zoo classifier, gradcam, batch size {args.batch_size}, {args.workers} DataLoader worker(s) "
        f"per process, {torch.get_num_threads()} torch thread(s) per process (torchrun ranks: 1), torch {torch.__version__}, "
        f"{os.cpu_count()} CPUs, median of {args.rounds} round(s), load average {load_start:.1f} -> {os.getloadavg()[0]:.1f}"
    )
    print("| variant | images/s | x loop | images/s, whole call | images/s, incl. Python start |")
    print("|---|---|---|---|---|")
    rows = [
        ("(a) `explain_classification` in a loop", "loop"),
        ("(a2) one `CAM` reused, 1 image per call", "reused"),
        ("(a3) one `CAM` reused, batch per call", "batched"),
        ("(b) `mmcam batch`, 1 process", "batch1"),
        ("(c) `torchrun --nproc-per-node 2 ... mmcam batch`", "batch2"),
    ]
    for label, key in rows:
        values = med[key]
        rest = " | ".join(f"{v:.1f}" for v in values[1:]) if len(values) > 1 else "— | —"
        print(f"| {label} | {values[0]:.1f} | {values[0] / base:.2f}x | {rest} |")


if __name__ == "__main__":
    main()
