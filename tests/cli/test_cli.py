"""The mmcam command: explain, list, demo, and one-line errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mmcam.data import generate_scenes


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "mmcam.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture()
def images(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, scene in enumerate(generate_scenes(2, 77)):
        Image.fromarray(scene.image).save(folder / f"scene{i}.png")
    (folder / "broken.png").write_bytes(b"not a png")
    return folder


def test_explain_folder_with_a_bad_image(images, tmp_path):
    out = tmp_path / "out"
    res = run("explain", str(images), "--task", "classify", "--model", "zoo:classifier", "--topk", "2", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "skipped" in res.stderr and "broken.png" in res.stderr and "Traceback" not in res.stderr
    summary = json.loads((out / "summary.json").read_text())
    import jsonschema

    from mmcam.cli import SCHEMA

    jsonschema.validate(summary, json.loads(SCHEMA.read_text()))
    assert len(summary["explained"]) == 2 and summary["failed"][0]["image"].endswith("broken.png")
    assert summary["explained"][0]["task"] == "classification" and len(summary["explained"][0]["items"]) == 2
    assert (out / "report.html").exists() and len(list(out.glob("scene0_*.png"))) == 2


def test_only_bad_images_exit_non_zero(images, tmp_path):
    res = run("explain", str(images / "broken.png"), "--model", "zoo:classifier", "--out", str(tmp_path / "o"))
    assert res.returncode == 1 and "Traceback" not in res.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["explain", "/no/such/dir", "--model", "zoo:classifier"], "does not exist"),
        (["explain", "IMAGES", "--model", "zoo:unknown"], "no zoo model named"),
        (["explain", "IMAGES", "--model", "resnet-9000"], "unknown model spec"),
        (["explain", "IMAGES", "--task", "vqa", "--model", "zoo:classifier"], "needs --question"),
        (["explain", "IMAGES", "--task", "detect", "--model", "zoo:classifier"], "pass --task classify"),
        (["explain", "IMAGES", "--task", "detect", "--model", "zoo:vlm"], "does the vqa / caption task"),
        (["explain", "IMAGES", "--task", "classify", "--model", "zoo:yolo26"], "pass --task detect"),
        (["explain", "IMAGES", "--task", "segment", "--model", "zoo:pose"], "pass --task pose"),
        (["explain", "IMAGES", "--model", "zoo:classifier", "--out", "/proc/forbidden"], "cannot write"),
        (["explain", "IMAGES", "--model", "someone/not-cached-vit"], "would need the network"),
        (["explain", "IMAGES", "--task", "segment", "--model", "someone/not-cached-vit"], "would need the network"),
        (["explain", "IMAGES", "--task", "action", "--model", "zoo:qnet"], "no .npy observations"),
        (["explain", "IMAGES", "--model", "zoo:classifier", "--method", "gradcan"], "unknown method"),
    ],
)
def test_one_line_errors(images, args, message):
    res = run(*[str(images) if a == "IMAGES" else a for a in args])
    assert res.returncode == 2
    assert message in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_list():
    res = run("list")
    assert res.returncode == 0 and "gradcam" in res.stdout and "classifier" in res.stdout
    assert "model families:" in res.stdout and "Segformer" in res.stdout


def test_explain_action_observations(tmp_path):
    """The action task reads .npy observations; a corrupt one is skipped with its reason."""
    from mmcam import zoo
    from mmcam.data import GridConfig, generate_grids

    if "qnet" not in zoo.available():
        pytest.skip("zoo model 'qnet' is not shipped in this build")
    folder = tmp_path / "obs"
    folder.mkdir()
    states = generate_grids(2, 5, GridConfig())
    for i, state in enumerate(states):
        np.save(folder / f"state{i}.npy", state.obs)
    (folder / "broken.npy").write_bytes(b"garbage")
    out = tmp_path / "out"
    res = run("explain", str(folder), "--task", "action", "--model", "zoo:qnet", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "broken.npy" in res.stderr and "Traceback" not in res.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [len(e["items"]) for e in summary["explained"]] == [1, 1]
    model, _ = zoo.load("qnet")
    for entry, state in zip(summary["explained"], states):
        greedy = int(model(__import__("torch").as_tensor(state.obs)[None].float()).argmax())
        assert entry["action"] == greedy


def test_method_default_is_the_tasks_own(images, tmp_path):
    """Without --method each task keeps its own default (LayerCAM for detection)."""
    out = tmp_path / "d"
    res = run("explain", str(images), "--task", "detect", "--model", "zoo:yolo", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert json.loads((out / "summary.json").read_text())["explained"][0]["method"] == "layercam"


IMAGE_TASKS = {"classifier": "classify", "vit": "classify", "segmenter": "segment", "yolo": "detect", "captioner": "caption", "vqa": "vqa"}


@pytest.mark.parametrize("name", sorted(IMAGE_TASKS))
def test_explain_every_task_with_zoo_models(name, images, tmp_path):
    import jsonschema

    from mmcam import zoo
    from mmcam.cli import SCHEMA

    if name not in zoo.available():
        pytest.skip(f"zoo model {name!r} is not shipped in this build")
    out = tmp_path / name
    extra = ["--question", "how many objects are there ?"] if name == "vqa" else []
    res = run("explain", str(images), "--task", IMAGE_TASKS[name], "--model", f"zoo:{name}", "--out", str(out), *extra)
    assert res.returncode == 0, res.stderr
    summary = json.loads((out / "summary.json").read_text())
    jsonschema.validate(summary, json.loads(SCHEMA.read_text()))
    assert len(summary["explained"]) == 2 and all(entry["items"] for entry in summary["explained"])
    for entry in summary["explained"]:
        assert all((out / f).exists() for f in entry["files"])
    assert (out / "report.html").stat().st_size > 1000


def test_local_hf_directory_offline(images, tmp_path):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    directory = tmp_path / "vit"
    config = ViTConfig(image_size=64, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=3)
    ViTForImageClassification(config).save_pretrained(directory)
    ViTImageProcessor(size={"height": 64, "width": 64}).save_pretrained(directory)
    out = tmp_path / "out"
    res = run("explain", str(images), "--model", str(directory), "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert json.loads((out / "summary.json").read_text())["explained"][0]["layers"] == ["vit.layers.1.layernorm_before"]


def test_ultralytics_yaml_spec(images, tmp_path):
    res = run("explain", str(images), "--task", "detect", "--model", "yolov8n.yaml", "--conf", "0.9", "--out", str(tmp_path / "y"))
    assert res.returncode == 0, res.stderr  # random weights: nothing above conf, still a clean run
    summary = json.loads((tmp_path / "y" / "summary.json").read_text())
    assert summary["explained"][0]["note"].startswith("nothing to explain")


def test_output_check_is_safe_when_ranks_race(tmp_path):
    """torchrun ranks check the same --out at once: per-process probe files, so none of them
    deletes another's (a shared probe name failed CI with 'No such file or directory')."""
    from concurrent.futures import ThreadPoolExecutor

    from mmcam.cli import _ensure_writable

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: _ensure_writable(tmp_path / "out"), range(200)))
    assert list((tmp_path / "out").iterdir()) == []


def test_box_weight_reaches_the_detection_scores(images, tmp_path):
    scores = {}
    for weight in ("0", "1.5"):
        out = tmp_path / f"w{weight}"
        res = run("explain", str(images), "--task", "detect", "--model", "zoo:yolo", "--box-weight", weight, "--out", str(out))
        assert res.returncode == 0, res.stderr
        scores[weight] = [item["score"] for path in sorted(out.glob("*.json")) if path.name != "summary.json" for item in json.loads(path.read_text())["items"]]
    assert scores["0"] and scores["1.5"] == pytest.approx([s + 1.5 for s in scores["0"]], abs=1e-4)


def test_segment_task_on_a_yolo_segment_model(images, tmp_path):
    res = run("explain", str(images), "--task", "segment", "--model", "yolov8n-seg.yaml", "--conf", "0.9", "--out", str(tmp_path / "s"))
    assert res.returncode == 0, res.stderr  # random weights: nothing above conf, still a clean run
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["explained"][0]["note"].startswith("nothing to explain: no instance above conf=0.9")


def test_every_zoo_model_has_its_tasks():
    from mmcam import zoo
    from mmcam.cli import ZOO_TASKS
    from mmcam.tasks.registry import TASKS

    assert set(ZOO_TASKS) == set(zoo.available())
    assert all(set(tasks) <= set(TASKS) for tasks in ZOO_TASKS.values())
