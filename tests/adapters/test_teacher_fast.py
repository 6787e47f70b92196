"""The cheaper teacher-forced passes give the maps of the naive two-pass call (mmcam.adapters.teacher):
the captioner's encoder shared by generate() and the explained forward; a VLM's LM head on the
answer's positions only (logits_to_keep). Each against a naive reference kept here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from modelstate import assert_same_state, snapshot
from PIL import Image
from vl_models import tiny_ved
from vlm_models import PHOTO, llava

import mmcam
from mmcam.adapters.hf_text import decoding_for, teacher_forced, vision_layers
from mmcam.adapters.vlm import layout_for
from mmcam.reshape import Auto
from mmcam.targets import CaptionTokens
from mmcam.tasks import explain_caption, explain_generation
from mmcam.tasks.generation import ContrastiveTokens

IMAGE = (np.random.default_rng(3).random((64, 80, 3)) * 255).astype(np.uint8)
PROMPT = "<image> what color is the circle ?"


@pytest.fixture(scope="module")
def captioner():
    model, processor = tiny_ved(decoder_layers=2)
    model(pixel_values=torch.rand(1, 3, 64, 64), decoder_input_ids=torch.tensor([[1]]))  # transformers adds its hooks on call 1
    explain_caption(model, processor, IMAGE, method="gradcam")  # the default layer's probing forward runs once per model
    return model, processor


@pytest.fixture(scope="module")
def vlm():
    return llava()


def naive_caption(model, processor, method, layers):
    """The two-pass call: generate() runs the encoder, the explained forward runs it again."""
    prepared = mmcam.adapters.hf_text.processor_inputs(processor, IMAGE)
    pixels = prepared.inputs["pixel_values"]
    decoding = decoding_for(model)
    forced = teacher_forced(decoding, processor.tokenizer, decoding.generate({"pixel_values": pixels}))
    inputs = {"pixel_values": pixels, "decoder_input_ids": forced.decoder_ids}
    exp = mmcam.CAM(model, layers or vision_layers(model, pixels), method=method, reshape=Auto(model))(inputs, [forced.target])
    return forced, exp, prepared


@pytest.mark.parametrize("method", ["gradcam", "layercam"])
def test_shared_encoder_caption_equals_the_two_pass_call(captioner, method):
    model, processor = captioner
    before = snapshot(model)
    runs = []
    handle = model.encoder.register_forward_hook(lambda *_: runs.append(1))
    try:
        exp = explain_caption(model, processor, IMAGE, method=method)
    finally:
        handle.remove()
    assert_same_state(before, snapshot(model))
    assert len(runs) == 1  # generate() and the explained forward read one encoder pass
    from mmcam.engine.core import _MEASURED

    assert model in _MEASURED  # the gradient mode measured through the per-call view is kept for the model
    forced, reference, prepared = naive_caption(model, processor, method, None)
    assert exp.meta["token_ids"] == forced.token_ids and exp.items == forced.words and len(forced.words) >= 3
    assert exp.meta["teacher_forced_argmax_matches"]
    torch.testing.assert_close(exp.scores, reference.scores[0], rtol=0, atol=0)
    # the maps (in [0, 1]) to float32 round-off: the view's GPT-2 cross-attention backward
    # associates the same sums differently (mmcam.adapters.cross_attention, its own exact tests)
    torch.testing.assert_close(exp.maps, prepared.frame.maps_to_photo(reference.maps[0]), rtol=0, atol=1e-5)
    # a given caption and an attention method keep the two-pass path, unchanged
    given = explain_caption(model, processor, IMAGE, caption=" ".join(forced.words), method=method)
    torch.testing.assert_close(given.maps, exp.maps, rtol=0, atol=1e-5)
    assert explain_caption(model, processor, IMAGE, method="gae").items == forced.words


def naive_generation(model, processor, method, target_cls, answer_ids, groups, **extra):
    """Teacher-forced forward with the LM head on every position (the previous implementation)."""
    inputs = dict(processor(images=Image.fromarray(PHOTO), text=PROMPT, return_tensors="pt"))
    layout = layout_for(model)
    tokens = layout.image_tokens(inputs)
    t = inputs["input_ids"].shape[1]
    ids = torch.cat([inputs["input_ids"], torch.tensor([answer_ids[:-1]])], 1)
    forced = {**inputs, "input_ids": ids, "attention_mask": torch.ones_like(ids)}
    target = target_cls([t - 1 + i for i in range(len(answer_ids))], answer_ids, groups, **extra)
    cam = mmcam.CAM(model, layout.default_layers(model), method=method, reshape=layout.reshape(tokens))
    return cam(forced, [target], input_size=tokens.input_size), target


@pytest.mark.parametrize("method,target", [("layercam", "log-prob"), ("gradcam", "contrastive")])
def test_kept_logits_maps_equal_every_position_logits(vlm, method, target):
    model, processor = vlm
    before = snapshot(model)
    rows = []
    handle = model.lm_head.register_forward_hook(lambda m, args, out: rows.append(out.shape[1]))
    try:
        exp = explain_generation(model, processor, PHOTO, PROMPT, method=method, target=target)
    finally:
        handle.remove()
    assert_same_state(before, snapshot(model))
    assert rows[-1] == len(exp.meta["token_ids"])  # the explained forward's head ran on the answer's positions only
    answer = exp.meta["token_ids"]
    groups = [[i] for i in range(len(answer))]
    if target == "contrastive":
        extra = {"suppress": model.generation_config.suppress_tokens}
        reference, tgt = naive_generation(model, processor, method, ContrastiveTokens, answer, groups, **extra)
        full = reference.output["logits"][0]
        names = processor.tokenizer.convert_ids_to_tokens(tgt.competitors(full))
        assert exp.meta["competitors"] == [[n] for n in names]
    else:
        reference, _ = naive_generation(model, processor, method, CaptionTokens, answer, groups)
    assert exp.meta["teacher_forced_argmax_matches"] and len(answer) == 4
    torch.testing.assert_close(exp.scores, reference.scores[0], rtol=0, atol=0)
    frame = mmcam.adapters.base.processor_prepare(processor, Image.fromarray(PHOTO), text=PROMPT).frame
    torch.testing.assert_close(exp.maps, frame.maps_to_photo(reference.maps[0]), rtol=0, atol=0)


def test_kept_logits_only_for_gradient_methods(vlm):
    from mmcam.adapters.teacher import kept_logits
    from mmcam.tasks.generation import FORWARD_ONLY

    model, _ = vlm
    assert kept_logits(model, "layercam", 3, FORWARD_ONLY) == {"logits_to_keep": 3}
    assert kept_logits(model, "logit-lens", 3, FORWARD_ONLY) == {} and kept_logits(model, "gae", 3, FORWARD_ONLY) == {}
    assert kept_logits(torch.nn.Linear(2, 2), "layercam", 3, FORWARD_ONLY) == {}
