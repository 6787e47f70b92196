"""On-disk layout of a dataset run; every file appears whole or not at all.

::

    OUT/run.json                    the run's settings (a resumed run must match them)
    OUT/shards/shard-00012.npz      maps of the shard's images: key ``i{index:07d}`` → uint8 (K, H, W)
    OUT/shards/shard-00012.jsonl    the shard's index rows; written last: its presence marks the shard done
    OUT/index.jsonl                 every shard's rows, in dataset order (merged at the end)
    OUT/summary.json                counts, failures, aggregate map statistics, timing

Files are written to ``NAME.tmp-PID`` in the same folder, flushed, then ``os.replace``'d
(atomic on POSIX), so a run killed at any instant leaves finished files or stray temp
files, never a partial file under a final name; a restart deletes the temp files.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["shard_paths", "atomic_write", "write_shard", "read_rows", "is_done", "remove_temp_files", "merge_index", "TEMP_MARK"]

TEMP_MARK = ".tmp-"


def shard_paths(out: Path, shard: int) -> tuple[Path, Path]:
    """``(maps .npz, rows .jsonl)`` of shard ``shard``."""
    stem = out / "shards" / f"shard-{shard:05d}"
    return stem.with_suffix(".npz"), stem.with_suffix(".jsonl")


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file + ``os.replace``; the temp file is removed
    if writing fails (including on ``SystemExit``/``KeyboardInterrupt``)."""
    tmp = path.with_name(f"{path.name}{TEMP_MARK}{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_shard(out: Path, shard: int, rows: list[dict[str, Any]], maps: dict[str, np.ndarray]) -> None:
    """Maps first, then the rows file that marks the shard done."""
    npz, jsonl = shard_paths(out, shard)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **maps)
    atomic_write(npz, buffer.getvalue())
    atomic_write(jsonl, "".join(json.dumps(r) + "\n" for r in rows).encode())


def is_done(out: Path, shard: int) -> bool:
    """A shard is done when both its files exist (the rows file is written last)."""
    npz, jsonl = shard_paths(out, shard)
    return npz.exists() and jsonl.exists()


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def remove_temp_files(out: Path) -> list[Path]:
    """Delete temp files left by a killed run; return them."""
    found = [p for folder in (out, out / "shards") if folder.is_dir() for p in folder.iterdir() if TEMP_MARK in p.name]
    for p in found:
        p.unlink(missing_ok=True)
    return found


def merge_index(out: Path, shards: Iterable[int]) -> list[dict[str, Any]]:
    """Every shard's rows in dataset order (image index, then item), written to
    ``OUT/index.jsonl``; returns them."""
    rows = [row for s in shards for row in read_rows(shard_paths(out, s)[1])]
    rows.sort(key=lambda r: (r["index"], -1 if r.get("item") is None else r["item"]))
    atomic_write(out / "index.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
    return rows
