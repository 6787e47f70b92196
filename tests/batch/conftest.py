"""A small COCO dataset (40 scenes, one corrupt file) and one uninterrupted reference run
that the distributed and kill tests compare against."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from batch_runs import CORRUPT, N_IMAGES, SETTINGS, run_cli  # noqa: E402


@pytest.fixture(scope="session")
def coco(tmp_path_factory) -> Path:
    from mmcam.data import classification_config, generate_scenes, write_coco

    root = tmp_path_factory.mktemp("batch-data")
    path = write_coco(generate_scenes(N_IMAGES, seed=3, config=classification_config()), root, "scenes")
    (root / "images" / f"{CORRUPT + 1:06d}.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return path


@pytest.fixture(scope="session")
def reference(coco, tmp_path_factory) -> Path:
    """The uninterrupted single-process run (one torch thread, as each torchrun rank uses)."""
    out = tmp_path_factory.mktemp("batch-reference") / "out"
    done = run_cli([str(coco), *SETTINGS, "--out", str(out)])
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(autouse=True)
def _one_thread():
    """In-process runs on one thread too (the machine is shared; results match the children)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
