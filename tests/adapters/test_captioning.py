"""Per-word caption maps from one teacher-forced forward (tiny random VisionEncoderDecoder)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from modelstate import assert_same_state, snapshot
from vl_models import tiny_ved

import mmcam
from mmcam.errors import InputError
from mmcam.targets import CaptionTokens
from mmcam.tasks import explain_caption
from mmcam.tasks.caption import merge_subwords

IMAGE = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def captioner():
    model, processor = tiny_ved(decoder_layers=1)
    model(pixel_values=torch.rand(1, 3, 64, 64), decoder_input_ids=torch.tensor([[1]]))  # transformers adds its own hooks on call 1
    explain_caption(model, processor, IMAGE, caption="a red circle")  # ... and on its first output_attentions call (gae)
    return model, processor


def test_one_map_per_generated_word_and_teacher_forcing_reproduces_generate(captioner):
    model, processor = captioner
    before = snapshot(model)
    exp = explain_caption(model, processor, IMAGE)
    generated = model.generate(pixel_values=processor(images=IMAGE)["pixel_values"])[0]
    words = processor.decode(generated).split()
    assert exp.items == words and len(words) >= 3
    # the teacher-forced forward reproduces generate(): its argmax (over the tokens generate
    # may choose) at every position is the generated token
    pixel_values = processor(images=IMAGE)["pixel_values"]
    logits = model(pixel_values=pixel_values, decoder_input_ids=torch.tensor([[1] + exp.meta["token_ids"][:-1]])).logits[0]
    logits[:, model.generation_config.suppress_tokens] = -float("inf")
    assert logits.argmax(-1).tolist() == exp.meta["token_ids"]
    assert exp.maps.shape == (len(words), 64, 64) and torch.isfinite(exp.maps).all()
    assert (exp.maps.flatten(1).std(1) > 0).sum() >= len(words) - 1
    assert exp.method == "gae-shift" and exp.layers[:3] == ["encoder self-attention x2", "decoder self-attention x1", "cross-attention x1"]
    assert explain_caption(model, processor, IMAGE, method="gradcam").layers == ["encoder.layers.1.layernorm_before"]
    assert explain_caption(model, processor, IMAGE, layers="encoder.layers.0.layernorm_before").method == "gradcam"
    assert_same_state(before, snapshot(model))


@pytest.mark.parametrize("method", ["gradcam", "gae"])
def test_all_words_at_once_equal_one_word_at_a_time(captioner, method):
    model, processor = captioner
    exp = explain_caption(model, processor, IMAGE, caption="a red circle left of a blue square", method=method)
    assert exp.items == "a red circle left of a blue square".split()
    pixel_values = processor(images=IMAGE)["pixel_values"]
    ids = [1] + exp.meta["token_ids"]
    inputs = {"pixel_values": pixel_values, "decoder_input_ids": torch.tensor([ids])}
    logp = model(**inputs).logits.log_softmax(-1)[0]
    for k, token in enumerate(exp.meta["token_ids"]):
        assert exp.scores[k].item() == pytest.approx(logp[k, token].item(), abs=1e-5)
        alone = mmcam.CAM(model, None if method == "gae" else exp.layers, method=method)(inputs, [CaptionTokens([k], [token])])
        torch.testing.assert_close(exp.maps[k], alone.maps[0, 0], rtol=1e-4, atol=1e-5)


def test_subword_merging():
    assert merge_subwords(["a", "red", "cir", "##cle"]) == [[0], [1], [2, 3]]
    assert merge_subwords(["Ġa", "Ġred", "Ġcir", "cle"]) == [[0], [1], [2, 3]]
    target = CaptionTokens([0, 1, 2], [5, 6, 7], groups=[[0], [1, 2]])
    logits = torch.randn(2, 3, 10)
    lp = logits.log_softmax(-1)
    torch.testing.assert_close(target(logits), torch.stack([lp[:, 0, 5], lp[:, 1, 6] + lp[:, 2, 7]], 1))


def test_bad_input(captioner):
    model, processor = captioner
    with pytest.raises(InputError, match="empty"):
        explain_caption(model, processor, IMAGE, caption="")
    import torchvision

    with pytest.raises(InputError, match="VisionEncoderDecoderModel"):
        explain_caption(torchvision.models.resnet18(), processor, IMAGE)
    with pytest.raises(InputError, match="does not exist"):
        explain_caption(model, processor, "/no/such/image.png")
