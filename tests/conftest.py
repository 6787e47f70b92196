"""Shared test setup: offline, deterministic, quiet."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_CONFIG_DIR", str(ROOT / ".yolo"))
os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(scope="session", autouse=True)
def _scratch(tmp_path_factory):
    """Temporary files of the suite and of its subprocesses (torchrun's torchelastic_*, the
    multiprocessing pymp-* dirs, tempfile) under pytest's own base directory, which pytest
    prunes, instead of left in /tmp."""
    scratch = str(tmp_path_factory.mktemp("scratch"))
    saved = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"], tempfile.tempdir = scratch, scratch
    yield
    if saved[0] is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = saved[0]
    tempfile.tempdir = saved[1]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
