"""VQA grounding with ViLT: the shuffled patches are put back where they came from."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from modelstate import assert_same_state, snapshot
from vl_models import tiny_vilt

from mmcam.errors import InputError, TargetError
from mmcam.tasks import explain_vqa

LABELS = ["red", "green", "blue", "yes", "no"]
IMAGE = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def vilt():
    model, processor = tiny_vilt(LABELS)
    model(**processor(images=IMAGE, text="is there a red circle ?"))  # transformers adds its own hooks on call 1
    explain_vqa(model, processor, IMAGE, "is there a red circle ?")  # ... and on its first output_attentions call (gae)
    return model, processor


def test_map_is_independent_of_vilts_patch_shuffling(vilt):
    model, processor = vilt
    before = snapshot(model)
    torch.manual_seed(1)
    a = explain_vqa(model, processor, IMAGE, "what color is the circle ?")
    torch.manual_seed(2)  # another draw of the patch order
    b = explain_vqa(model, processor, IMAGE, "what color is the circle ?")
    torch.testing.assert_close(a.maps, b.maps, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a.scores, b.scores, rtol=1e-5, atol=1e-6)
    assert a.maps.shape == (1, 64, 64) and a.maps.std() > 0
    assert a.items == [a.meta["answer"]] and a.meta["answer"] in LABELS
    assert a.method == "gae-shift" and a.layers[0] == "self-attention x2" and a.layers[1].startswith("mean over input shifts")
    assert explain_vqa(model, processor, IMAGE, "what color is the circle ?", method="gradcam").layers == ["vilt.encoder.layer.1.layernorm_before"]
    assert_same_state(before, snapshot(model))


def test_answer_scores_match_the_model(vilt):
    model, processor = vilt
    exp = explain_vqa(model, processor, IMAGE, "is there a red circle ?", answer="yes")
    logits = model(**processor(images=IMAGE, text="is there a red circle ?")).logits[0]
    assert exp.scores[0].item() == pytest.approx(logits[LABELS.index("yes")].item(), abs=1e-4)
    by_index = explain_vqa(model, processor, IMAGE, "is there a red circle ?", answer=LABELS.index("yes"))
    torch.testing.assert_close(by_index.maps, exp.maps)
    assert by_index.items == ["yes"]
    with pytest.raises(TargetError, match="answer index 9 is out of range for 5 labels"):
        explain_vqa(model, processor, IMAGE, "is there a red circle ?", answer=9)


def test_bad_input(vilt):
    model, processor = vilt
    with pytest.raises(TargetError, match="not one of the model's answers"):
        explain_vqa(model, processor, IMAGE, "what color is it ?", answer="purple-ish")
    with pytest.raises(TargetError, match="close ones: 'red'"):
        explain_vqa(model, processor, IMAGE, "what color is it ?", answer="rde")
    with pytest.raises(InputError, match="question is empty"):
        explain_vqa(model, processor, IMAGE, "  ")
    with pytest.raises(InputError, match="ViltForQuestionAnswering, BlipForQuestionAnswering.*layers="):
        explain_vqa(torch.nn.Linear(2, 2), processor, IMAGE, "what ?")


def test_answer_grounding_panel(vilt, tmp_path):
    model, processor = vilt
    exp = explain_vqa(model, processor, IMAGE, "what color is the circle ?", answer="green")
    paths = exp.save(tmp_path)
    assert tmp_path / "explanation_panel.png" in paths
    from PIL import Image

    panel = np.asarray(Image.open(tmp_path / "explanation_panel.png"))
    # image and heatmap side by side (160 px each), question and answer written below
    assert panel.shape[1] == 2 * 160 + 3 * 6 and panel.shape[0] > 160 + 2 * 14
    assert exp.meta["answer"] == "green" and exp.items == ["green"]


def test_another_patch_draw_gives_the_same_map_and_scorecam_masks_the_image(vilt, monkeypatch):
    """The map is scattered back through the draw the forward made: a different seed (another
    patch order) gives the same map; Score-CAM can mask ``pixel_values``; the caller's random
    state is not consumed."""
    import mmcam.tasks.vqa as vqa_mod

    model, processor = vilt
    question = "what color is the circle ?"
    pixel_values, mask = processor(images=IMAGE)["pixel_values"], torch.ones(1, 64, 64, dtype=torch.long)
    a = explain_vqa(model, processor, IMAGE, question)
    monkeypatch.setattr(vqa_mod, "PATCH_SEED", 123)
    assert not torch.equal(vqa_mod.patch_order(model, pixel_values, mask, 0)[0], vqa_mod.patch_order(model, pixel_values, mask)[0])
    b = explain_vqa(model, processor, IMAGE, question)
    torch.testing.assert_close(a.maps, b.maps, rtol=1e-4, atol=1e-5)
    torch.manual_seed(9)
    state = torch.random.get_rng_state()
    s = explain_vqa(model, processor, IMAGE, question, method="scorecam")
    assert torch.equal(torch.random.get_rng_state(), state)
    assert s.maps.shape == (1, 64, 64) and torch.isfinite(s.maps).all() and s.maps.std() > 0


def test_layer_errors_name_layers_as_the_user_does(vilt):
    """Layers are given relative to the ViLT model; errors must not leak the wrapper's prefix."""
    from mmcam.errors import GradientError

    model, processor = vilt
    with pytest.raises(GradientError) as info:
        explain_vqa(model, processor, IMAGE, "what color is the circle ?", layers="vilt.encoder.layer.1.layernorm_after")
    assert "'vilt.encoder.layer.1.layernorm_after'" in str(info.value) and "model.vilt" not in str(info.value)
