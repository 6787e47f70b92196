"""The CLI on ordinary mistakes: one line on stderr, a documented exit code, no traceback;
folder runs skip bad files with the reason and survive Ctrl-C with a summary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmcam import cli


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as stop:  # argparse's own usage errors
        code = int(stop.code)
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if "error" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture()
def photo(tmp_path) -> Path:
    path = tmp_path / "scene.png"
    Image.fromarray((np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8)).save(path)
    return path


@pytest.mark.parametrize(
    "argv, says, code",
    [
        (["--task", "detect", "--model", "{tmp}/random.pt"], "--trust-pickle", 2),
        (["--task", "detect", "--model", "{tmp}/missing.yaml"], "missing.yaml", 2),
        (["--task", "detect", "--model", "zoo:yolo", "--conf", "2.0"], "confidence in [0, 1]", 2),
        (["--model", "zoo:classifier", "--topk", "-1"], "whole number >= 1", 2),
        (["--model", "zoo:nope"], "available", 2),
        (["--model", "resnet18", "--weights", "{tmp}/random.pt"], "state dict", 2),
        (["--task", "vqa", "--model", "zoo:vqa"], "--question", 2),
        (["--task", "caption", "--model", "zoo:classifier"], "--task classify", 2),
        (["--model", "zoo:classifier", "--method", "gradcamm"], "gradcam", 2),
        (["--model", "zoo:classifier", "--layer", "nope"], "nope", 2),
    ],
)
def test_mistakes_are_one_line_errors(capsys, tmp_path, photo, argv, says, code):
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(1).bytes(200))
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    got, _, err = _run(capsys, "explain", str(photo), *argv, "--out", str(tmp_path / "out"))
    assert got == code or (code == 2 and got == 1), err  # a per-image error is a skip (exit 1)
    assert says in err, err
    assert "Traceback" not in err


def test_evaluate_with_a_model_of_another_task_says_which(capsys, tmp_path):
    code, _, err = _run(capsys, "evaluate", "--task", "detect", "--model", "zoo:classifier", "--images", "2", "--out", str(tmp_path))
    assert code == 2 and "--task classify" in _one_line_error(err)


def test_unexpected_errors_are_one_line_and_debug_shows_the_traceback(capsys, tmp_path, photo, monkeypatch):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(cli, "_task", broken)
    code, _, err = _run(capsys, "explain", str(photo), "--model", "zoo:classifier", "--out", str(tmp_path))
    assert code == 3 and "unexpected ZeroDivisionError: boom" in _one_line_error(err) and "--debug" in err
    with pytest.raises(ZeroDivisionError):
        cli.main(["explain", str(photo), "--model", "zoo:classifier", "--out", str(tmp_path), "--debug"])


def test_a_folder_skips_bad_files_and_keeps_names_apart(capsys, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    array = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    Image.fromarray(array).save(folder / "cat.png")
    Image.fromarray(array).save(folder / "cat.jpg")
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    bomb = Image.new("L", (1, 1))
    bomb.save(folder / "bomb.png")
    data = bytearray((folder / "bomb.png").read_bytes())
    data[16:24] = (20000).to_bytes(4, "big") + (20000).to_bytes(4, "big")  # the IHDR declares 20000 x 20000
    (folder / "bomb.png").write_bytes(bytes(data))
    code, out, err = _run(capsys, "explain", str(folder), "--model", "zoo:classifier", "--out", str(tmp_path / "out"))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert code == 0 and len(summary["explained"]) == 2 and len(summary["failed"]) == 2
    assert {Path(f["image"]).name for f in summary["failed"]} == {"broken.png", "bomb.png"}
    files = {name for item in summary["explained"] for name in item["files"]}
    assert any(f.startswith("cat-png") for f in files) and any(f.startswith("cat-jpg") for f in files)
    assert (tmp_path / "out" / "report.html").exists() and "explained 2 of 4" in out


def test_ctrl_c_writes_the_summary_of_what_was_done(capsys, tmp_path, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        Image.fromarray((np.random.default_rng(i).random((32, 32, 3)) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    real = cli._task

    def interrupting(*args, **kwargs):
        task, calls = real(*args, **kwargs), []

        class Once:
            def read(self, path):
                return task.read(path)

            def __call__(self, image):
                calls.append(1)
                if len(calls) == 2:
                    raise KeyboardInterrupt
                return task(image)

        return Once()

    monkeypatch.setattr(cli, "_task", interrupting)
    code, out, _ = _run(capsys, "explain", str(folder), "--model", "zoo:classifier", "--out", str(tmp_path / "out"))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert code == 130 and len(summary["explained"]) == 1 and "stopped by the user" in summary["interrupted"]
    leftovers = [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]
    assert leftovers == [] and "(interrupted)" in out
