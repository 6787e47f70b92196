"""``mmcam evaluate`` under ``torchrun --nproc-per-node 2``: the same table as one process."""

from __future__ import annotations

import json
import subprocess
import sys

from batch_runs import child_env, free_port

from mmcam.evaluation import evaluate

SETTINGS = dict(images=8, faithfulness_images=2, sanity_images=2, steps=5, seed=0, threads=1)


def _comparable(data: dict) -> dict:
    """Everything but timing; records in case order (ranks concatenate theirs)."""
    rows = {n: {c: v for c, v in cols.items() if c != "seconds_per_image"} for n, cols in data["rows"].items()}
    totals = {n: {c: v for c, v in cols.items() if c != "seconds_per_image"} for n, cols in data["totals"].items()}
    records = sorted(data["records"], key=lambda r: (r["row"], str(r["case"]).zfill(6), r["item"]))
    return {
        "rows": rows,
        "row_order": list(data["rows"]),
        "totals": totals,
        "records": records,
        "sanity": data["sanity"],
        "counts": data["counts"],
        "sizes": (data["samples"], data["cases"], data["items"]),
        "notes": data["notes"],
    }


def test_evaluate_on_two_ranks_equals_one_process(tmp_path):
    single = json.loads(json.dumps(evaluate("classify", "zoo:classifier", progress=False, **SETTINGS).to_dict()))
    args = ["--task", "classify", "--images", "8", "--faithfulness-images", "2", "--sanity-images", "2", "--steps", "5", "--seed", "0", "--out", str(tmp_path)]
    launcher = ["-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(free_port())]
    done = subprocess.run([sys.executable, *launcher, "-m", "mmcam.cli", "evaluate", *args], env=child_env(), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("evaluated 8 item(s)") == 1  # rank 0 alone writes and prints
    two = json.loads((tmp_path / "evaluate-classify.json").read_text())
    assert _comparable(two) == _comparable(single)
    assert two["sanity"] and two["totals"]["gradcam"]["deletion"][1] == 2  # faithfulness/sanity parts ran and were reduced
