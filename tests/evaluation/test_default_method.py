"""``mmcam evaluate`` without ``--method`` scores the task's own default for the model (the one
``mmcam explain`` picks), not Grad-CAM everywhere."""

from __future__ import annotations

from mmcam.evaluation import evaluate
from mmcam.evaluation.defaults import default_method
from mmcam.loading import load_model


def test_default_method_is_the_tasks_own():
    captioner, processor = load_model("zoo:captioner", task="caption")
    assert default_method("caption", captioner, processor, []) == "gae-shift"
    assert default_method("caption", captioner, processor, [], layers=["encoder.encoder.layer.3"]) == "gradcam"  # layers named: a CAM
    vilt, vilt_processor = load_model("zoo:vqa", task="vqa")
    assert default_method("vqa", vilt, vilt_processor, []) == "gae-shift"
    detr, detr_processor = load_model("zoo:detr", task="detect")
    assert default_method("detect", detr, detr_processor, []) == "layercam"
    classifier, _ = load_model("zoo:classifier")
    assert default_method("classify", classifier, None, []) == "gradcam"


def test_evaluate_without_methods_runs_the_default():
    ev = evaluate("action", "zoo:qnet", seed=2, images=2, faithfulness_images=0, sanity_images=0, progress=False, threads=1)
    assert ev.settings["methods"] == ["sarfa"] and "sarfa" in ev.rows  # a cell-grid observation: SARFA, as explain_action picks
