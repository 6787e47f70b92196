"""Encoder-decoder VLMs (Florence-2; BLIP-2 and InstructBLIP with Flan-T5) on bus.jpg (810 x
1080): the image tokens in the encoder's sequence, the answer teacher-forced through the
decoder. One map per answer word at the photo's size, the teacher-forced tokens and logits equal
generate()'s, K words at once equal one at a time, a bright square found through an
identity-like vision tower, the model left as found, bad input refused."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from adapters.test_vlm_families import SQUARE, bright_bus, identity_like
from modelstate import assert_same_state, snapshot
from PIL import Image
from torch import nn
from vlm_seq2seq import blip2_t5, florence2

import mmcam
from mmcam.adapters.vlm import decoder_inputs, decoder_prefix, generated_answer, layout_for
from mmcam.errors import InputError, MethodError, TargetError
from mmcam.targets import CaptionTokens
from mmcam.tasks import explain_generation, explain_vqa

BUS = Path(__import__("ultralytics").__file__).parent / "assets" / "bus.jpg"
PROMPT = "<image> what color is the circle ?"
FAMILIES = {
    "florence2": (florence2, "Florence2ForConditionalGeneration"),
    "blip2_t5": (blip2_t5, "Blip2ForConditionalGeneration"),
    "instructblip_t5": (lambda: blip2_t5(instruct=True), "InstructBlipForConditionalGeneration"),
}


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request):
    build, name = FAMILIES[request.param]
    model, processor = build()
    assert type(model).__name__ == name and decoder_prefix(model) is not None
    return request.param, model, processor


@pytest.fixture(scope="module")
def bus():
    return Image.open(BUS).convert("RGB")


def test_one_map_per_word_tokens_and_logits_equal_generate(family, bus):
    name, model, processor = family
    before = snapshot(model)
    exp = explain_vqa(model, processor, bus, "what color is the circle ?")
    assert_same_state(before, snapshot(model))
    prepared = layout_for(model).prepare(processor, bus, PROMPT)
    with torch.no_grad():
        out = model.generate(**prepared.inputs, output_logits=True, output_scores=True, return_dict_in_generate=True)
    prefix = decoder_prefix(model)
    assert prefix == ([2, 0] if name == "florence2" else [0])  # BART: </s> then the forced <s>; T5: <pad>
    generated = out.sequences[0, len(prefix) :].tolist()
    assert exp.meta["token_ids"] == generated and exp.meta["teacher_forced_argmax_matches"] and len(generated) == 3
    steps = slice(len(prefix) - 1, None)  # generate()'s steps after the forced ones
    with torch.no_grad():
        forced = model(**decoder_inputs(prepared.inputs, prefix, generated[:-1])).logits[0, steps]
    torch.testing.assert_close(forced, torch.cat(out.logits[steps]), rtol=1e-4, atol=1e-4)  # the decoder's logits, step by step
    per_token = torch.stack([logits[0].log_softmax(-1)[t] for logits, t in zip(out.logits[steps], generated)])
    torch.testing.assert_close(exp.scores, per_token, rtol=1e-4, atol=1e-4)  # one word a token here
    chosen = torch.stack([scores[0, t] for scores, t in zip(out.scores[steps], generated)])
    torch.testing.assert_close(chosen, forced[range(3), generated])  # the processors leave the chosen token's score as is
    assert exp.maps.shape == (3, 1080, 810) and all(float(m.max()) == 1 for m in exp.maps)
    info = exp.meta["image_tokens"]
    if name == "florence2":  # 1 + 8 x 8 image tokens first in the encoder's sequence, then <s> and the prompt
        assert info == {"first": 0, "count": 65, "prefix": 0, "grid": [8, 8]} and prepared.inputs["input_ids"][0, 65] == 0
        assert exp.layers == ["model.vision_tower.blocks.1.0"]
    else:
        assert info["count"] == 4 and info["grid"] == [4, 4]
    for method in ("logit-lens", "gae", "gae-tower"):  # they read the causal LM's head / self-attention
        with pytest.raises(MethodError, match="encoder-decoder"):
            explain_generation(model, processor, bus, PROMPT, method=method)


def test_k_words_at_once_equal_one_at_a_time(family, bus):
    name, model, processor = family
    exp = explain_generation(model, processor, bus, PROMPT, answer="red circle blue")
    assert exp.items == ["red", "circle", "blue"] and exp.maps.shape == (3, 1080, 810)
    layout = layout_for(model)
    prepared = layout.prepare(processor, bus, PROMPT)
    tokens = layout.image_tokens(prepared.inputs, prepared.frame)
    answer = processor.tokenizer("red circle blue", add_special_tokens=False)["input_ids"]
    prefix = decoder_prefix(model)
    forced = decoder_inputs(prepared.inputs, prefix, answer[:-1])
    cam = mmcam.CAM(model, exp.layers, method=exp.method, reshape=layout.reshape(tokens))
    positions = [len(prefix) - 1 + i for i in range(3)]
    together = cam(forced, [CaptionTokens(positions, answer)], input_size=tokens.input_size)
    for k in range(3):
        alone = cam(forced, [CaptionTokens(positions, answer, [[k]])], input_size=tokens.input_size)
        torch.testing.assert_close(alone.raw[0, 0], together.raw[0, k])
        torch.testing.assert_close(alone.scores[0, 0], together.scores[0, k])
    torch.testing.assert_close(prepared.frame.maps_to_photo(together.maps[0]), exp.maps)
    torch.testing.assert_close(exp.scores, together.scores[0])


def davit_identity_like(model: nn.Module) -> nn.Module:
    """A Florence-2 copy whose DaViT passes brightness through to its last block: each stage's
    patch convolution averages its window (no bias, its layer norm the identity) and every
    block's layers are zero (depthwise convolutions, window and channel attention, MLPs): the
    blocks' residuals pass the averages on, the sign of the brightness kept."""
    model = copy.deepcopy(model)
    tower = model.model.vision_tower
    for conv in tower.convs:
        conv.norm = nn.Identity()
    with torch.no_grad():
        for module in tower.convs.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.fill_(1.0 / module.weight[0].numel())
                module.bias.zero_()
        for module in tower.blocks.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.weight.zero_()
                module.bias.zero_()
    return model


def test_bright_square_lands_in_its_place_on_the_photo(family, bus):
    """LayerCAM (ReLU(gradient) x activation) at the identity-like tower's block is zero where
    the photo is dark: each word's map sits on the square, in cells (2..4, 5..7) of Florence-2's
    8 x 8 grid (the photo resized to 64 x 64) and in cell (1, 3) of BLIP-2's 4 x 4 patches."""
    name, model, processor = family
    if name == "florence2":
        plain, layer = davit_identity_like(model), layout_for(model).default_layers(model)[0]
    else:
        blocks = layout_for(model).default_layers(model)[0].rsplit(".", 1)[0]
        plain, layer = identity_like(model, blocks), f"{blocks}.0"
    exp = explain_generation(plain, processor, bright_bus(bus), PROMPT, answer="red circle blue", layers=layer, method="layercam")
    top, bottom, left, right = SQUARE
    inside = torch.zeros(1080, 810, dtype=torch.bool)
    inside[top:bottom, left:right] = True
    lit = [m for m in exp.maps if float(m.max()) > 0]
    assert len(lit) >= 2
    for m in lit:
        y, x = divmod(int(m.argmax()), 810)
        assert top <= y < bottom and left <= x < right, (name, y, x)
        assert float(m[inside].mean()) > 5 * float(m[~inside].mean())


def test_bad_input_says_what_to_pass(family, bus):
    name, model, processor = family
    with pytest.raises(InputError, match="no image placeholder"):
        explain_generation(model, processor, bus, "what color is the circle ?")
    with pytest.raises(InputError, match="2 image placeholders"):
        explain_generation(model, processor, bus, f"{PROMPT} <image>")
    with pytest.raises(InputError, match="answer is empty"):
        explain_generation(model, processor, bus, PROMPT, answer=" ")
    if name != "florence2":  # BLIP-2's generate() is its language model's: the decoder starts where that one says
        config = model.language_model.generation_config
        start, config.decoder_start_token_id = config.decoder_start_token_id, 4
        try:
            assert decoder_prefix(model) == [4]
            exp = explain_generation(model, processor, bus, PROMPT)
            assert exp.meta["teacher_forced_argmax_matches"] and len(exp.items) == 3
        finally:
            config.decoder_start_token_id = start
    with pytest.raises(TargetError, match="started the decoder"):
        generated_answer([4, 9, 10], [0])


def test_florence2_processor_disagreeing_with_the_model_is_refused(bus):
    model, processor = florence2(size=64)
    processor.image_processor.size = {"height": 96, "width": 96}  # 1 + 12 x 12 tokens, the processor still writes 65
    with pytest.raises(InputError, match="image tokens"):
        explain_generation(model, processor, bus, PROMPT)
    model, processor = florence2(forced_bos=False)
    assert decoder_prefix(model) == [2]
    exp = explain_generation(model, processor, bus, "<image> <CAPTION>")  # a task token: the processor's own prompt
    assert len(exp.items) == 3 and exp.meta["teacher_forced_argmax_matches"]
    assert "Florence2ForConditionalGeneration" in str(pytest.raises(InputError, layout_for, nn.Linear(2, 2)).value)


def test_florence2_grid_from_the_davit_convolutions():
    """Florence-2-base's own vision config (the defaults: kernels 7/3/3/3, strides 4/2/2/2): 768 px
    -> 192 -> 96 -> 48 -> 24 cells a side, 1 + 576 = 577 tokens, its processor's image_seq_length;
    the mean token spread over every cell, each other token on its own."""
    from types import SimpleNamespace

    from transformers import Florence2Config

    from mmcam.adapters.vlm import Florence2Layout

    layout = Florence2Layout(SimpleNamespace(config=Florence2Config()))
    assert layout.grid((768, 768)) == (24, 24) and layout.grid((768, 512)) == (24, 16) and layout.patch_size == 32
    inputs = {"input_ids": torch.tensor([[51289] * 577 + [0, 7, 2]]), "pixel_values": torch.zeros(1, 3, 768, 768)}
    tokens = layout.image_tokens(inputs)
    assert tokens.positions == list(range(577)) and tokens.grid == (24, 24)
    values = torch.zeros(577)
    values[0], values[1 + 24 * 5 + 7] = 1.0, 10.0
    folded = tokens.fold(values)
    assert folded.shape == (24, 24) and folded[5, 7] == 11.0 and folded[0, 0] == 1.0 and folded.sum() == 576 + 10
