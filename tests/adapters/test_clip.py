"""CLIP image–text similarity: one map per text from one forward (tiny random-init CLIPModel)."""

from __future__ import annotations

import pytest
import torch
from modelstate import assert_same_state, snapshot
from vl_models import IMAGE, SIZE, clip

import mmcam
from mmcam.errors import InputError, TargetError
from mmcam.targets import ImageTextSimilarity

TEXTS = ["a red circle", "a blue square", "two green triangles"]


@pytest.fixture(scope="module")
def clip_model():
    model, processor = clip()
    with torch.no_grad():
        model(**processor(images=IMAGE, text=TEXTS, padding=True, return_tensors="pt"))  # transformers' first-call hooks
    return model, processor


def test_one_map_per_text_with_clips_own_similarities(clip_model):
    model, processor = clip_model
    before = snapshot(model)
    exp = mmcam.explain_similarity(model, processor, IMAGE, TEXTS)
    assert exp.items == TEXTS and exp.maps.shape == (3, *IMAGE.shape[:2])  # the photo's size
    assert torch.isfinite(exp.maps).all() and (exp.maps.flatten(1).std(1) > 0).all()
    assert exp.layers == ["vision_model.encoder.layers.1.layer_norm1"]
    with torch.no_grad():
        out = model(**processor(images=IMAGE, text=TEXTS, padding=True, return_tensors="pt"))
    torch.testing.assert_close(exp.scores, out.logits_per_image[0], rtol=1e-5, atol=1e-5)
    cosine = torch.nn.functional.cosine_similarity(out.image_embeds, out.text_embeds)
    assert exp.meta["cosine"] == pytest.approx(cosine.tolist(), abs=1e-4)
    assert exp.meta["probability"] == pytest.approx(out.logits_per_image[0].softmax(-1).tolist(), abs=1e-4)
    assert not torch.allclose(exp.maps[0], exp.maps[1])
    assert_same_state(before, snapshot(model))


def test_all_texts_at_once_equal_one_text_at_a_time_and_cosine_gives_the_same_map(clip_model):
    model, processor = clip_model
    inputs = dict(processor(images=IMAGE, text=TEXTS, padding=True, return_tensors="pt"))
    cam = mmcam.CAM(model, "vision_model.encoder.layers.1.layer_norm1")
    every = cam(inputs, [ImageTextSimilarity()])
    for k in range(len(TEXTS)):
        one = cam(inputs, [ImageTextSimilarity(k)])
        torch.testing.assert_close(every.maps[0, k], one.maps[0, 0], rtol=1e-4, atol=1e-5)
        # cosine = logit / exp(τ): same Grad-CAM map after normalisation
        cos = cam(inputs, [ImageTextSimilarity(k, scaled=False)])
        torch.testing.assert_close(cos.maps[0, 0], one.maps[0, 0], rtol=1e-4, atol=1e-4)
        assert cos.scores[0, 0].item() == pytest.approx(one.scores[0, 0].item() / model.logit_scale.exp().item(), rel=1e-4)
    # composition: "why text 0 rather than text 1"
    contrast = cam(inputs, [ImageTextSimilarity(0) - ImageTextSimilarity(1)])
    assert contrast.scores[0, 0].item() == pytest.approx((every.scores[0, 0] - every.scores[0, 1]).item(), abs=1e-5)


def test_the_token_grid_comes_from_the_config(clip_model):
    model, processor = clip_model
    exp = mmcam.explain_similarity(model, processor, IMAGE, "a red circle")
    assert exp.items == ["a red circle"]
    grid = SIZE // model.config.vision_config.patch_size
    assert mmcam.CAM(model, exp.layers)(dict(processor(images=IMAGE, text=["a"], return_tensors="pt")), [ImageTextSimilarity()]).raw.shape[-2:] == (grid, grid)


def test_bad_input(clip_model, tmp_path):
    model, processor = clip_model
    inputs = dict(processor(images=IMAGE, text=TEXTS, padding=True, return_tensors="pt"))
    with pytest.raises(TargetError, match="text index 3 is out of range for 3 texts"):
        mmcam.CAM(model, "vision_model.encoder.layers.1.layer_norm1")(inputs, [ImageTextSimilarity(3)])
    with pytest.raises(InputError, match="non-empty texts"):
        mmcam.explain_similarity(model, processor, IMAGE, [])
    with pytest.raises(InputError, match="CLIPModel.*ImageTextSimilarity"):
        mmcam.explain_similarity(torch.nn.Linear(2, 2), processor, IMAGE, TEXTS)
    with pytest.raises(InputError, match="rejected the image"):
        mmcam.explain_similarity(model, processor.image_processor, IMAGE, TEXTS)  # no tokenizer: no texts
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(InputError, match="cannot read image"):
        mmcam.explain_similarity(model, processor, bad, TEXTS)
    paths = mmcam.explain_similarity(model, processor, IMAGE, TEXTS).save(tmp_path / "out")
    assert (tmp_path / "out" / "explanation_strip.png") in paths and len(paths) == len(TEXTS) + 2
