"""Helpers of the batch tests: the dataset's constants, running the CLI, comparing runs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

N_IMAGES = 40
CORRUPT = 6  # dataset position of the unreadable file
SETTINGS = ["--task", "classify", "--model", "zoo:classifier", "--batch-size", "4", "--shard-size", "4", "--workers", "1"]


def run_cli(args: list[str], launcher: list[str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *(launcher or ["-m"]), "mmcam.cli", "batch", *args],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=180,
        **kwargs,
    )


def child_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_run(out: Path) -> tuple[list[dict], dict[str, np.ndarray]]:
    """The merged index rows and every map by key."""
    rows = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    maps: dict[str, np.ndarray] = {}
    for npz in sorted((out / "shards").glob("*.npz")):
        with np.load(npz) as data:
            maps.update({k: data[k] for k in data.files})
    return rows, maps


def assert_same_run(out: Path, reference: Path) -> None:
    rows, maps = load_run(out)
    ref_rows, ref_maps = load_run(reference)
    assert rows == ref_rows
    assert sorted(maps) == sorted(ref_maps)
    for key, ref in ref_maps.items():
        assert maps[key].dtype == np.uint8 and np.array_equal(maps[key], ref), key


def assert_no_temp_files(out: Path) -> None:
    leftovers = [p.name for p in out.rglob("*") if ".tmp-" in p.name]
    assert leftovers == []
