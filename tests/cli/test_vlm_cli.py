"""``mmcam explain / batch / evaluate`` on a generative VLM: the zoo LLaVA and a saved HF
directory (a tiny random-init LLaVA), answer words hoverable in the report."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from mmcam import zoo
from mmcam.cli import main
from mmcam.data import SceneConfig, generate_scenes


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("vlm-images")
    for i, scene in enumerate(generate_scenes(2, 515, SceneConfig())):
        Image.fromarray(scene.image).save(path / f"scene{i}.png")
    return path


def _needs_vlm():
    if "vlm" not in zoo.available():
        pytest.skip("zoo:vlm not shipped in this build")


def test_explain_vqa_report_has_every_answer_word_hoverable(folder, tmp_path):
    _needs_vlm()
    out = tmp_path / "vqa"
    question = "how many objects are there ?"
    assert main(["explain", str(folder / "scene0.png"), "--task", "vqa", "--model", "zoo:vlm", "--question", question, "--out", str(out)]) == 0
    record = json.loads((out / "scene0.json").read_text())
    words = [item["label"] for item in record["items"]]
    assert words and record["task"] == "vqa"
    html = (out / "report.html").read_text()
    assert f"Q: &lt;image&gt; {question}" in html
    for k, word in enumerate(words):
        assert f"<span class='word' data-item-ref='{k}'>{word}</span>" in html


def test_explain_caption_with_tam_and_batch_on_a_folder(folder, tmp_path):
    _needs_vlm()
    out = tmp_path / "cap"
    assert main(["explain", str(folder / "scene1.png"), "--task", "caption", "--model", "zoo:vlm", "--method", "tam", "--out", str(out)]) == 0
    record = json.loads((out / "scene1.json").read_text())
    assert record["method"] == "tam" and len(record["items"]) >= 3
    batch = tmp_path / "batch"
    assert (
        main(["batch", str(folder), "--task", "vqa", "--model", "zoo:vlm", "--question", "what color is the circle ?", "--workers", "0", "--out", str(batch)])
        == 0
    )
    lines = [json.loads(line) for line in (batch / "index.jsonl").read_text().splitlines()]
    assert {line["image_id"] for line in lines} == {"scene0.png", "scene1.png"}  # one line per map


def test_evaluate_vqa_on_the_zoo_vlm(tmp_path):
    _needs_vlm()
    out = tmp_path / "ev"
    # sanity and faithfulness off here (slow on a VLM); docs/vlm.md has the full run
    args = ["evaluate", "--task", "vqa", "--model", "zoo:vlm", "--images", "1", "--faithfulness-images", "0", "--sanity-images", "0"]
    assert main([*args, "--method", "gradcam,tam", "--out", str(out)]) == 0
    data = json.loads((out / "evaluate-vqa.json").read_text())
    assert {"gradcam", "tam", "baseline: centre"} <= set(data["rows"])
    assert data["settings"]["command"].startswith("mmcam evaluate --task vqa --model zoo:vlm --method gradcam,tam")


def test_hf_directory_of_a_generative_vlm_loads_for_vqa(tmp_path, folder):
    """A saved LLaVA (save_pretrained: safetensors + processor) loads through
    AutoModelForImageTextToText for --task vqa / caption."""
    from vlm_models import llava

    model, processor = llava(chat=True)
    model.save_pretrained(tmp_path / "llava")
    processor.save_pretrained(tmp_path / "llava")
    out = tmp_path / "hf"
    assert (
        main(
            [
                "explain",
                str(folder / "scene0.png"),
                "--task",
                "vqa",
                "--model",
                str(tmp_path / "llava"),
                "--question",
                "what color is the circle ?",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert len(json.loads((out / "scene0.json").read_text())["items"]) == 4
