"""Every script in examples/ runs offline on the zoo (each in its own process) and writes PNGs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import mmcam

ROOT = Path(__file__).resolve().parents[1]
# script -> (zoo model it needs, or None; small-run arguments)
EXAMPLES = {
    "classify": ("classifier", ["--images", "1"]),
    "caption": ("captioner", ["--images", "1"]),
    "vqa": ("vqa", ["--images", "1"]),
    "detect": ("yolo", ["--images", "1"]),
    "segment": ("segmenter", ["--images", "1"]),
    "action": ("qnet", ["--states", "2"]),
    "similarity": (None, []),  # a random-init tiny CLIP built in the script
}


def _run(name: str, out: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", YOLO_OFFLINE="1")
    env.setdefault("YOLO_CONFIG_DIR", str(ROOT / ".yolo"))
    args = [sys.executable, str(ROOT / "examples" / f"{name}.py"), "--out", str(out / name), *EXAMPLES[name][1]]
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run the runnable examples two at a time (2 cores), once for the module."""
    out = tmp_path_factory.mktemp("examples")
    shipped = set(mmcam.zoo.available())
    names = [n for n, (model, _) in EXAMPLES.items() if model is None or model in shipped]
    with ThreadPoolExecutor(2) as pool:
        results = dict(zip(names, pool.map(lambda n: _run(n, out), names)))
    return out, results


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_example_runs_and_writes_pngs(name, runs):
    model = EXAMPLES[name][0]
    if model is not None and model not in mmcam.zoo.available():
        pytest.skip(f"zoo model {model!r} is not shipped in this build (examples/{name}.py needs it)")
    out, results = runs
    done = results[name]
    assert done.returncode == 0, done.stderr[-2000:]
    pngs = list((out / name).rglob("*.png"))
    reports = list((out / name).rglob("*.json"))
    assert pngs and reports, f"examples/{name}.py wrote no PNG/JSON under {out / name}"
    for report in reports:
        summary = json.loads(report.read_text())
        assert summary["items"] and all(f in {p.name for p in pngs} for f in summary["files"])
    assert done.stdout.strip(), "each example prints what it explained"
