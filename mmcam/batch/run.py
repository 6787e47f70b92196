"""``run_batch``: explain every image of a dataset, sharded over ranks, resumable."""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..errors import InputError, MMCamError
from ..explain import TaskExplanation, _jsonable, map_stats
from ..loading import load_model
from ..tasks.base import Task as Engine
from ..tasks.registry import TASKS, build_task
from . import store
from .distributed import Distributed, all_reduce_sums, means, shards_for_rank
from .source import ImageDataset, Record, collate, die_with_parent, list_records, records_digest, unpack

__all__ = ["run_batch", "BatchResult"]


@dataclass
class BatchResult:
    """What a run did. ``explained``/``failed``/``images`` count the whole dataset (all ranks,
    including shards finished by an earlier run); ``written_shards``/``resumed_shards`` are
    this rank's; ``stats``: dataset means of the items' score and map statistics.
    ``seconds``: the whole call after the dataset check (process group, model load, imports
    included); ``explain_seconds``: from this rank's first batch request until every rank has
    written its shards (the throughput phase)."""

    out_dir: Path
    images: int
    explained: int
    failed: int
    items: int
    shards: int
    written_shards: int
    resumed_shards: int
    seconds: float
    explain_seconds: float = 0.0
    rank: int = 0
    world_size: int = 1
    stats: dict[str, float] = field(default_factory=dict)


def run_batch(
    task: str,
    model_spec: Any,
    source: "str | Path",
    out_dir: "str | Path",
    *,
    batch_size: int = 16,
    num_workers: int = 2,
    method: str | None = None,
    layers: Any = None,
    question: str | None = None,
    text: "list[str] | None" = None,
    topk: int = 1,
    conf: float | None = None,
    weights: str | None = None,
    image_dir: "str | Path | None" = None,
    shard_size: int = 64,
    device: str = "cpu",
    progress: bool | None = None,
    trust_pickle: bool = False,
) -> BatchResult:
    """Explain every image of ``source`` with ``task`` and write maps + an index under ``out_dir``.

    ``source``: a COCO annotation ``.json`` (images in ``image_dir``, default ``images/``
    beside ``annotations/``) or a folder of images. ``model_spec``: what ``mmcam explain
    --model`` takes (``zoo:NAME``, an HF directory, a YOLO ``.pt``, a torchvision name with
    ``weights``) or a ``(model, processor)`` pair; ``text``: an open-vocabulary detector's
    queries (``detect`` with OWL-ViT / OWLv2 / Grounding DINO), asked of every image; ``trust_pickle`` as for
    :func:`mmcam.loading.load_model` (default: pickled model files are refused).

    How it runs:

    * The dataset is cut into shards of ``shard_size`` consecutive images; shard ``s`` goes
      to rank ``s % world_size`` (under ``torchrun``; one process otherwise), so every image
      is explained exactly once and a shard's content does not depend on the number of
      processes. A ``DataLoader`` with ``num_workers`` workers decodes and preprocesses.
    * ``classify``, ``segment`` and ``action`` (``source``: a folder of ``.npy``
      observations) explain ``batch_size`` inputs per forward with all K items of every
      input in that pass; ``detect``, ``caption`` and ``vqa`` call the
      single-image function per image (NMS and ``generate()`` work on one image).
    * An unreadable image gets a ``"failed"`` index row with the reason; the run goes on.
      A batch that fails as a whole is retried image by image, so one image's error
      (e.g. all-zero gradients) fails only that image.
    * Each finished shard is written atomically (``shards/shard-NNNNN.npz`` maps as uint8
      ``round(255·map)``, then ``.jsonl`` rows); a restarted run with the same settings
      skips finished shards and removes temp files of a killed run. At the end rank 0
      merges every shard's rows into ``index.jsonl`` and writes ``summary.json`` with
      counts and means reduced over ranks (:func:`all_reduce_sums`).

    Missing dataset paths, an unknown task or a vqa run without ``question`` raise
    :class:`~mmcam.errors.InputError` before the process group or any worker starts.
    """
    if task not in TASKS:
        raise InputError(f"unknown task {task!r} for mmcam batch; pass one of {', '.join(TASKS)}")
    if task == "vqa" and not question:
        raise InputError("the vqa task needs a question, e.g. --question 'what color is the circle ?'")
    if batch_size < 1 or shard_size < 1 or num_workers < 0:
        raise InputError(f"batch_size and shard_size must be >= 1 and num_workers >= 0, got {batch_size}, {shard_size}, {num_workers}")
    records = list_records(source, image_dir, observations=task == "action")
    out = Path(out_dir)
    _ensure_dir(out / "shards")
    settings = {
        "task": task,
        "model": model_spec if isinstance(model_spec, str) else type(model_spec[0]).__name__,
        "weights": weights,
        "method": method,
        "layers": layers,
        "question": question,
        "text": text,
        "topk": topk,
        "conf": conf,
        "source": str(Path(source).resolve()),
        "images": len(records),
        "images_digest": records_digest(records),
        "shard_size": shard_size,
    }
    _check_settings(out, settings)
    start = time.perf_counter()
    dist = Distributed.from_env(device)
    if device == "cuda":
        device = f"cuda:{dist.local_rank}"
    try:
        with _sigterm_exits():
            if dist.is_main:
                store.remove_temp_files(out)
                if not (out / "run.json").exists():
                    store.atomic_write(out / "run.json", json.dumps(settings, indent=2).encode())
            dist.barrier()  # no rank writes before the temp files of a killed run are gone
            num_shards = math.ceil(len(records) / shard_size)
            mine = shards_for_rank(num_shards, dist.rank, dist.world_size)
            pending = [s for s in mine if not store.is_done(out, s)]
            if pending:
                model, processor = _load(model_spec, weights, task, device, trust_pickle)
                engine = build_task(task, model, processor, method=method, layers=layers, topk=topk, conf=conf, question=question, text=text, device=device)
            explain_start = time.perf_counter()
            if pending:
                _explain_shards(engine, records, pending, shard_size, batch_size, num_workers, out, dist, progress)
            sums = all_reduce_sums(_sums(out, mine))  # a collective: every rank has written its shards
            explain_seconds = time.perf_counter() - explain_start
            if dist.is_main:
                rows = store.merge_index(out, range(num_shards))
                _check_complete(rows, records)
            counts = {k: int(v[0]) for k, v in sums.items() if k.startswith("n_")}
            result = BatchResult(
                out_dir=out,
                images=len(records),
                explained=counts.get("n_explained", 0),
                failed=counts.get("n_failed", 0),
                items=counts.get("n_items", 0),
                shards=num_shards,
                written_shards=len(pending),
                resumed_shards=len(mine) - len(pending),
                seconds=time.perf_counter() - start,
                explain_seconds=explain_seconds,
                rank=dist.rank,
                world_size=dist.world_size,
                stats={k: round(v, 6) for k, v in means({k: v for k, v in sums.items() if not k.startswith("n_")}).items()},
            )
            if dist.is_main:
                summary = {**{k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items()}, "settings": settings}
                summary["failures"] = [
                    {"index": r["index"], "image_id": r["image_id"], "file": r["file"], "error": r["error"]} for r in rows if r["status"] == "failed"
                ]
                store.atomic_write(out / "summary.json", json.dumps(summary, indent=2).encode())
            dist.barrier()
            return result
    finally:
        dist.close()


def _explain_shards(
    engine: Engine,
    records: list[Record],
    pending: list[int],
    shard_size: int,
    batch_size: int,
    num_workers: int,
    out: Path,
    dist: Distributed,
    progress: bool | None,
) -> None:
    members = {s: list(range(s * shard_size, min((s + 1) * shard_size, len(records)))) for s in pending}
    batches = [idx[i : i + batch_size] for s in pending for idx in [members[s]] for i in range(0, len(idx), batch_size)]
    loader = DataLoader(
        ImageDataset(records, engine.prepare, engine.read),
        batch_sampler=batches,
        num_workers=num_workers,
        collate_fn=collate,
        worker_init_fn=die_with_parent if num_workers else None,
    )
    show = dist.is_main and (progress if progress is not None else True)
    bar = tqdm(total=sum(len(m) for m in members.values()), desc=f"mmcam batch {engine.name}", unit="image", disable=not show)
    rows: dict[int, list[dict[str, Any]]] = {s: [] for s in pending}
    maps: dict[int, dict[str, np.ndarray]] = {s: {} for s in pending}
    done: dict[int, int] = {s: 0 for s in pending}
    try:
        for batch in loader:
            shard = batch[0]["index"] // shard_size
            for item, exp in zip(batch, _explain_batch(engine, batch)):
                record = records[item["index"]]
                error = exp if isinstance(exp, str) else item["error"]
                new_rows, array = _rows(record, shard, error, None if isinstance(exp, str) else exp, out)
                rows[shard].extend(new_rows)
                if array is not None:
                    maps[shard][_key(record)] = array
            done[shard] += len(batch)
            bar.update(len(batch))
            if done[shard] == len(members[shard]):
                store.write_shard(out, shard, rows.pop(shard), maps.pop(shard))
    finally:
        bar.close()


def _explain_batch(engine: Engine, batch: list[dict[str, Any]]) -> list["TaskExplanation | str | None"]:
    """One explanation per image; ``None`` where the worker could not read it, the error
    message where explaining it failed."""
    readable = [i for i, item in enumerate(batch) if item["error"] is None]
    data = {i: unpack(batch[i]["data"]) for i in readable}
    results: list[TaskExplanation | str | None] = [None] * len(batch)
    explained: list[Any] | None = None
    if engine.batched and len(readable) > 1:
        try:
            explained = engine.explain([data[i] for i in readable])
        except MMCamError:
            explained = None  # find the image(s) at fault one by one
    for n, i in enumerate(readable):
        if explained is not None:
            results[i] = explained[n]
            continue
        try:
            results[i] = engine.explain([data[i]])[0]
        except MMCamError as error:
            results[i] = str(error)
    return results


def _key(record: Record) -> str:
    return f"i{record.index:07d}"


def _rows(record: Record, shard: int, error: str | None, exp: TaskExplanation | None, out: Path) -> tuple[list[dict[str, Any]], np.ndarray | None]:
    """Index rows of one image (one per item; one row with ``item`` null when it failed or
    had nothing to explain) and its uint8 maps."""
    base = {"index": record.index, "image_id": record.image_id, "file": record.path, "shard": shard}
    if error is not None or exp is None:
        return [{**base, "status": "failed", "item": None, "error": error or "not explained"}], None
    prediction = _prediction(exp)
    if len(exp.items) == 0:
        return [{**base, "status": "empty", "item": None, "prediction": prediction, "note": exp.meta.get("note", "")}], None
    maps = exp.maps.detach().float().cpu()
    array = np.rint(maps.numpy().clip(0, 1) * 255).astype(np.uint8)  # numpy: tiny torch ops stall on a busy machine
    npz = store.shard_paths(out, shard)[0].name
    extras = _item_extras(exp)
    rows = [
        {
            **base,
            "status": "ok",
            "item": k,
            "label": label,
            "score": round(float(score), 6),
            "prediction": prediction,
            **map_stats(m),
            "maps": f"shards/{npz}",
            "key": _key(record),
            "map_size": list(array.shape[1:]),
            **extras[k],
        }
        for k, (label, score, m) in enumerate(zip(exp.items, exp.scores, maps))
    ]
    return rows, array


def _prediction(exp: TaskExplanation) -> Any:
    """The image-level prediction: class, caption, answer; else the explained items."""
    for key in ("predicted_label", "caption", "answer", "action_name"):
        if key in exp.meta:
            return exp.meta[key]
    return list(exp.items)


def _item_extras(exp: TaskExplanation) -> list[dict[str, Any]]:
    """Per-item metadata lists of length K (a detection's box and confidence, a class id)."""
    per_item = {"boxes": "box", "confidences": "confidence", "classes": "class_id", "class_ids": "class_id", "probabilities": "probability"}
    k = len(exp.items)
    extras: list[dict[str, Any]] = [{} for _ in range(k)]
    for key, name in per_item.items():
        values = exp.meta.get(key)
        if isinstance(values, (list, tuple)) and len(values) == k:
            for item, value in zip(extras, _jsonable(list(values))):
                item[name] = value
    return extras


def _sums(out: Path, shards: list[int]) -> dict[str, tuple[float, float]]:
    """This rank's ``(sum, count)`` of counts and item statistics over its finished shards."""
    sums = {
        "n_images": [0.0, 1.0],
        "n_explained": [0.0, 1.0],
        "n_failed": [0.0, 1.0],
        "n_items": [0.0, 1.0],
        "score": [0.0, 0.0],
        "mean": [0.0, 0.0],
        "top10_mass": [0.0, 0.0],
    }
    for s in shards:
        rows = store.read_rows(store.shard_paths(out, s)[1])
        images = {r["index"]: r["status"] for r in rows}
        sums["n_images"][0] += len(images)
        sums["n_failed"][0] += sum(status == "failed" for status in images.values())
        sums["n_explained"][0] += sum(status != "failed" for status in images.values())
        for r in rows:
            if r["status"] == "ok":
                sums["n_items"][0] += 1
                for name in ("score", "mean", "top10_mass"):
                    sums[name][0] += r[name]
                    sums[name][1] += 1
    return {k: (v[0], v[1]) for k, v in sums.items()}


def _check_complete(rows: list[dict[str, Any]], records: list[Record]) -> None:
    seen = sorted({r["index"] for r in rows})
    if seen != list(range(len(records))):
        missing = sorted(set(range(len(records))) - set(seen))
        raise MMCamError(f"the merged index misses {len(missing)} image(s) (first: {missing[:5]}); run the same command again to finish them")


def _check_settings(out: Path, settings: dict[str, Any]) -> None:
    path = out / "run.json"
    if not path.exists():
        return
    previous = json.loads(path.read_text())
    changed = sorted(k for k in settings if previous.get(k) != settings[k])
    if changed:
        raise InputError(
            f"{str(out)!r} holds a run with other settings ({', '.join(f'{k}: {previous.get(k)!r} -> {settings[k]!r}' for k in changed)}); "
            "pass a new --out, or the same settings to resume it"
        )


def _ensure_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"cannot write to output directory {str(path.parent)!r} ({error.strerror}); pass a writable --out") from None


def _load(model_spec: Any, weights: str | None, task: str, device: str, trust_pickle: bool = False) -> tuple[Any, Any]:
    if isinstance(model_spec, str):
        model, processor = load_model(model_spec, weights, task, trust_pickle=trust_pickle)
    else:
        model, processor = model_spec
    if isinstance(model, torch.nn.Module) and device != "cpu":
        model.to(device)
    return model, processor


@contextmanager
def _sigterm_exits():
    """SIGTERM (what ``torchrun`` and schedulers send) raises ``SystemExit`` in the main
    thread so ``finally`` blocks remove temp files; the old handler comes back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
