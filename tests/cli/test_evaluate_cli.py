"""``mmcam evaluate``: the table as Markdown and JSON, the command that reproduces it, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys


def run(*args):
    return subprocess.run([sys.executable, "-m", "mmcam.cli", "evaluate", *args], capture_output=True, text=True, timeout=300)


def test_evaluate_writes_markdown_and_json(tmp_path):
    out = tmp_path / "ev"
    res = run(
        "--task",
        "action",
        "--images",
        "5",
        "--method",
        "gradcam,hirescam",
        "--faithfulness-images",
        "2",
        "--sanity-images",
        "2",
        "--steps",
        "5",
        "--seed",
        "7",
        "--out",
        str(out),
    )
    assert res.returncode == 0, res.stderr
    md = (out / "evaluate-action.md").read_text()
    data = json.loads((out / "evaluate-action.json").read_text())
    assert set(data["rows"]) >= {"gradcam", "hirescam", "baseline: centre", "baseline: uniform", "baseline: random", "guided-backprop"}
    assert data["samples"] == 5 and data["settings"]["seed"] == 7 and data["settings"]["methods"] == ["gradcam", "hirescam"]
    command = data["settings"]["command"]
    assert command.startswith("mmcam evaluate --task action --model zoo:qnet --method gradcam,hirescam --images 5 --seed 7")
    assert f"`{command}`" in md and "| hirescam |" in md and "guided-backprop" in md
    assert "evaluated" in res.stdout
    # the recorded command reproduces the numbers
    again = run(*command.split()[2:], "--out", str(tmp_path / "again"))
    assert again.returncode == 0, again.stderr
    repeat = json.loads((tmp_path / "again" / "evaluate-action.json").read_text())
    strip = lambda rows: {n: {c: v for c, v in r.items() if c != "seconds_per_image"} for n, r in rows.items()}  # noqa: E731
    assert strip(repeat["rows"]) == strip(data["rows"])


def test_evaluate_errors_are_one_line(tmp_path):
    res = run("--task", "classify", "--method", "nosuchcam", "--images", "2", "--out", str(tmp_path))
    assert res.returncode == 2 and "mmcam: error:" in res.stderr and "Traceback" not in res.stderr
    res = run("--task", "detect", "--model", "zoo:classifier", "--out", str(tmp_path))
    assert res.returncode == 2 and "pass --task classify" in res.stderr
    res = run("--task", "action", "--dataset", "x.json", "--out", str(tmp_path))
    assert res.returncode == 2 and "leave out --dataset" in res.stderr
