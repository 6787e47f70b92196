"""Image-token layouts of Qwen2.5-VL, Qwen3-VL, Idefics3, SmolVLM, PaliGemma and Gemma 3 on a real
non-square photo (bus.jpg, 810 x 1080): one map per answer word at the photo's size, the
teacher-forced tokens and log-probabilities equal generate()'s, K words at once equal one at a
time, and a bright square lands where it is on the photo through an identity-like tower
(tiles stitched in their places, Qwen2.5-VL's window order undone)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from modelstate import assert_same_state, snapshot
from PIL import Image
from torch import nn
from vlm_families import blip2, gemma3, idefics3, internvl, llava_next, paligemma, qwen2_5_vl, qwen3_vl

import mmcam
from mmcam.adapters.vlm import layout_for
from mmcam.errors import InputError, MethodError
from mmcam.targets import CaptionTokens
from mmcam.tasks import explain_generation

BUS = Path(__import__("ultralytics").__file__).parent / "assets" / "bus.jpg"
QWEN = "<|vision_start|> <|image_pad|> <|vision_end|> what color is the circle ?"
FAMILIES = {
    "qwen2_5_vl": (qwen2_5_vl, QWEN, "Qwen2_5_VLForConditionalGeneration"),
    "qwen3_vl": (qwen3_vl, QWEN, "Qwen3VLForConditionalGeneration"),
    "idefics3": (idefics3, "<image> what color is the circle ?", "Idefics3ForConditionalGeneration"),
    "smolvlm": (lambda: idefics3(smolvlm=True), "<image> what color is the circle ?", "SmolVLMForConditionalGeneration"),
    "llava_next": (llava_next, "<image> what color is the circle ?", "LlavaNextForConditionalGeneration"),
    "llava_onevision": (lambda: llava_next(onevision=True), "<image> what color is the circle ?", "LlavaOnevisionForConditionalGeneration"),
    "internvl": (internvl, "<IMG_CONTEXT> what color is the circle ?", "InternVLForConditionalGeneration"),
    "paligemma": (paligemma, "<image> what color is the circle ?", "PaliGemmaForConditionalGeneration"),
    "gemma3": (gemma3, "<start_of_image> what color is the circle ?", "Gemma3ForConditionalGeneration"),
    "gemma3_pan_and_scan": (lambda: gemma3(pan_and_scan=True), "<start_of_image> what color is the circle ?", "Gemma3ForConditionalGeneration"),
    "blip2": (blip2, "<image> what color is the circle ?", "Blip2ForConditionalGeneration"),
    "instructblip": (lambda: blip2(instruct=True), "<image> what color is the circle ?", "InstructBlipForConditionalGeneration"),
}
QFORMER = ("blip2", "instructblip")  # query tokens: no region, the map at the tower's patches
SQUARE = (270, 540, 608, 810)  # photo rows / cols: one Idefics3 tile (4 x 3 tiles), one cell of a 4 x 4 grid


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request):
    build, prompt, name = FAMILIES[request.param]
    model, processor = build()
    assert type(model).__name__ == name and (request.param != "smolvlm" or type(processor).__name__ == "SmolVLMProcessor")
    return request.param, model, processor, prompt


@pytest.fixture(scope="module")
def bus():
    return Image.open(BUS).convert("RGB")


def test_one_map_per_word_tokens_and_log_probs_equal_generate(family, bus):
    name, model, processor, prompt = family
    before = snapshot(model)
    exp = explain_generation(model, processor, bus, prompt)
    assert_same_state(before, snapshot(model))
    prepared = layout_for(model).prepare(processor, bus, prompt)
    with torch.no_grad():
        out = model.generate(**prepared.inputs, output_logits=True, return_dict_in_generate=True)
    generated = out.sequences[0, prepared.inputs["input_ids"].shape[1] :].tolist()
    assert exp.meta["token_ids"] == generated and exp.meta["teacher_forced_argmax_matches"] and len(generated) == 3
    assert " ".join(exp.items) == " ".join(exp.tokens).replace(" ##", "")  # sub-words merged
    per_token = torch.stack([logits[0].log_softmax(-1)[t] for logits, t in zip(out.logits, generated)])
    groups = _groups(exp.tokens)
    by_generate = torch.stack([per_token[g].sum() for g in groups])
    torch.testing.assert_close(exp.scores, by_generate, rtol=1e-4, atol=1e-4)  # the same attention masks as generation
    assert exp.maps.shape == (len(exp.items), 1080, 810) and all(float(m.max()) == 1 for m in exp.maps)
    if name in QFORMER:
        with pytest.raises(InputError, match="no region"):
            explain_generation(model, processor, bus, prompt, answer=" ".join(exp.tokens), method="logit-lens")
        with pytest.raises(MethodError, match="no region"):
            explain_generation(model, processor, bus, prompt, answer=" ".join(exp.tokens), method="gae")
        return
    lens = explain_generation(model, processor, bus, prompt, answer=" ".join(exp.tokens), method="logit-lens")
    assert lens.maps.shape == exp.maps.shape and torch.allclose(lens.scores, exp.scores, atol=1e-4)
    before = snapshot(model)  # (the generate() above may install transformers' own capture hooks)
    gae = explain_generation(model, processor, bus, prompt, answer=" ".join(exp.tokens), method="gae")  # through the language model
    assert gae.maps.shape == exp.maps.shape and torch.allclose(gae.scores, exp.scores, atol=1e-4) and all(float(m.max()) == 1 for m in gae.maps)
    assert_same_state(before, snapshot(model))


def _groups(tokens: list[str]) -> list[list[int]]:
    out: list[list[int]] = []
    for i, token in enumerate(tokens):
        if token.startswith("##") and out:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def test_k_words_at_once_equal_one_at_a_time(family, bus):
    name, model, processor, prompt = family
    exp = explain_generation(model, processor, bus, prompt, answer="red circle blue")
    layout = layout_for(model)
    prepared = layout.prepare(processor, bus, prompt)
    tokens = layout.image_tokens(prepared.inputs, prepared.frame)
    tokenizer = processor.tokenizer
    answer = tokenizer("red circle blue", add_special_tokens=False)["input_ids"]
    t = prepared.inputs["input_ids"].shape[1]
    forced = dict(prepared.inputs, input_ids=torch.cat([prepared.inputs["input_ids"], torch.tensor([answer[:-1]])], 1))
    forced["attention_mask"] = torch.ones_like(forced["input_ids"])
    for key in ("token_type_ids", "mm_token_type_ids"):
        if key in prepared.inputs:  # the answer is text; PaliGemma's text after the prompt is its causal suffix (1)
            fill = 1 if name == "paligemma" else 0
            forced[key] = torch.cat([prepared.inputs[key], torch.full((1, 2), fill, dtype=torch.long)], 1)
    cam = mmcam.CAM(model, exp.layers, method=exp.method, reshape=layout.reshape(tokens))
    positions = [t - 1, t, t + 1]
    together = cam(forced, [CaptionTokens(positions, answer)], input_size=tokens.input_size)
    for k in range(3):
        alone = cam(forced, [CaptionTokens(positions, answer, [[k]])], input_size=tokens.input_size)
        torch.testing.assert_close(alone.raw[0, 0], together.raw[0, k])
        torch.testing.assert_close(alone.scores[0, 0], together.scores[0, k])
    torch.testing.assert_close(prepared.frame.maps_to_photo(together.maps[0]), exp.maps)


def identity_like(model: nn.Module, blocks: str) -> nn.Module:
    """A copy whose vision tower passes brightness through to the first block's output: every
    patch-embedding convolution averages its patch (no bias), position embeddings are zero, a
    layer norm before the blocks (CLIP's ``pre_layrnorm``) is the identity and the first block's
    linear layers are zero (its residual branches add nothing)."""
    model = copy.deepcopy(model)
    for name in [n for n, _ in model.named_modules() if n.endswith("pre_layrnorm")]:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, nn.Identity())
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, (nn.Conv2d, nn.Conv3d)):
                module.weight.fill_(1.0 / module.weight[0].numel())
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.Embedding) and ("pos_embed" in name or "position_embedding" in name) and "language" not in name:
                module.weight.zero_()
        for name, parameter in model.named_parameters():
            if name.endswith(("embeddings.position_embeddings", "embeddings.position_embedding")):  # InternVL's, BLIP-2's: parameters
                parameter.zero_()
        for module in dict(model.named_modules())[f"{blocks}.0"].modules():
            if isinstance(module, nn.Linear):
                module.weight.zero_()
                if module.bias is not None:
                    module.bias.zero_()
    return model


def bright_bus(image: Image.Image) -> Image.Image:
    """bus.jpg dimmed to an eighth (every normalised value below the processors' mean) with a
    white square in one tile."""
    photo = np.asarray(image) // 8
    top, bottom, left, right = SQUARE
    photo[top:bottom, left:right] = 255
    return Image.fromarray(photo)


def test_bright_square_lands_in_its_place_on_the_photo(family, bus):
    """Through the identity-like tower hooked at its first block, LayerCAM (ReLU(gradient) x
    activation) is zero wherever the photo is dark, so each word's map sits on the square: in
    tile (1, 2) of Idefics3's 4 x 3 tiles and in the thumbnail's matching cells, in cell (1, 3) of
    the 4 x 4 grids, in Qwen's merged cells after its window order is undone."""
    name, model, processor, prompt = family
    layout = layout_for(model)
    blocks = layout.default_layers(model)[0].rsplit(".", 1)[0]
    plain = identity_like(model, blocks)
    photo = bright_bus(bus)
    exp = explain_generation(plain, processor, photo, prompt, answer="red circle blue", layers=f"{blocks}.0", method="layercam")
    top, bottom, left, right = SQUARE
    inside = torch.zeros(1080, 810, dtype=torch.bool)
    inside[top:bottom, left:right] = True
    lit = [m for m in exp.maps if float(m.max()) > 0]
    assert len(lit) >= 2
    for m in lit:
        y, x = divmod(int(m.argmax()), 810)
        assert top <= y < bottom and left <= x < right, (name, y, x)
        assert float(m[inside].mean()) > 5 * float(m[~inside].mean())


def test_tiles_and_thumbnail_stitched_from_the_towers_batch(bus):
    """Idefics3 on bus.jpg: 4 x 3 tiles + the thumbnail; the first block's input (the model's own
    tower batch) folded by the layout puts the square's tile at (1, 2) in the tile channels and
    over the same cells in the thumbnail channels; a column-major stitch would not."""
    model, processor = idefics3()
    layout = layout_for(model)
    blocks = layout.default_layers(model)[0].rsplit(".", 1)[0]
    plain = identity_like(model, blocks)
    prepared = layout.prepare(processor, bright_bus(bus), "<image> what color ?")
    tokens = layout.image_tokens(prepared.inputs, prepared.frame)
    assert tokens.grid == (8, 6) and tokens.input_size == (128, 96) and len(tokens.positions) == 13 * 4
    seen = []
    hook = dict(plain.named_modules())[f"{blocks}.0"].register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    with torch.no_grad():
        plain(**prepared.inputs)
    hook.remove()
    assert seen[0].shape == (13, 16, 32)  # 13 tower images of 4 x 4 patches
    reshape = layout.reshape(tokens)
    grid = reshape(seen[0], tokens.input_size)[0]  # (2 * 32, 16, 12)
    tiles, thumbnail = grid[0], grid[32]
    assert grid.shape == (64, 16, 12) and divmod(int(tiles.argmax()), 12)[0] // 4 == 1 and divmod(int(tiles.argmax()), 12)[1] // 4 == 2
    lit = tiles > 0  # normalised values above the processor's mean: only the white square's patches
    assert lit[4:8, 9:12].all() and lit.sum() == 12  # tile (1, 2)'s 3 right columns of patches (the square's 608..810 px)
    peak = divmod(int(thumbnail.argmax()), 12)
    assert 4 <= peak[0] < 8 and 8 <= peak[1] < 12  # the thumbnail's square over the same cells
    by_columns = seen[0][:12].reshape(3, 4, 4, 4, 32).permute(4, 1, 2, 0, 3).reshape(32, 16, 12)[0]
    assert not (by_columns > 0)[4:8, 8:12].any()  # a column-major stitch puts the square elsewhere
    lens = tokens.fold(torch.arange(52.0))  # the language model's order: tiles row-major, then the thumbnail
    assert lens.shape == (8, 6) and lens[0, 0] == 0 + 48  # tile (0, 0)'s first token + the thumbnail's first
    assert lens[2, 4] == 5 * 4 + 49 and lens[7, 5] == 11 * 4 + 3 + 51  # tile (1, 2)'s first, tile (3, 2)'s last + thumbnail (1, 1)


def test_bad_input_says_what_to_pass(family, bus):
    name, model, processor, prompt = family
    placeholder = processor.image_token
    with pytest.raises(InputError, match="no image placeholder"):
        explain_generation(model, processor, bus, "what color is the circle ?")
    with pytest.raises(InputError, match="2 image placeholders"):
        explain_generation(model, processor, bus, f"{prompt} {placeholder}")
    with pytest.raises(InputError, match="answer is empty"):
        explain_generation(model, processor, bus, prompt, answer=" ")


def test_unsupported_vlm_names_the_supported_and_the_layout_by_hand():
    with pytest.raises(InputError) as error:
        layout_for(nn.Linear(2, 2))
    for name in (
        "Qwen2_5_VLForConditionalGeneration",
        "Qwen3VLForConditionalGeneration",
        "Idefics3ForConditionalGeneration",
        "SmolVLMForConditionalGeneration",
    ):
        assert name in str(error.value)
    assert "PaliGemmaForConditionalGeneration" in str(error.value) and "Gemma3ForConditionalGeneration" in str(error.value)
    assert "layout=mmcam.adapters.vlm.ImageLayout(image_token_id=" in str(error.value)


def test_pan_and_scan_crops_stitched_over_the_photo(bus):
    """Gemma 3 pan-and-scan on bus.jpg (portrait): the original + 2 crops, one above the other;
    the crops' tokens on a 2 x 1 grid over the photo, the original's over all of it."""
    model, processor = gemma3(pan_and_scan=True)
    layout = layout_for(model)
    prepared = layout.prepare(processor, bus, "<start_of_image> what color ?")
    assert prepared.inputs["pixel_values"].shape[0] == 3 and prepared.frame.input == (64, 32)
    tokens = layout.image_tokens(prepared.inputs, prepared.frame)
    assert tokens.grid == (4, 2) and len(tokens.positions) == 12
    lens = tokens.fold(torch.arange(12.0))  # original 0..3 (2 x 2, each over 2 x 1 cells), crop 0: 4..7, crop 1: 8..11
    assert lens[0, 0] == 0 + 4 and lens[3, 1] == 3 + 11 and lens[2, 0] == 2 + 8


def test_processor_disagreeing_with_the_model_is_refused(bus):
    model, processor = paligemma()
    processor.image_seq_length = 9  # the model's grid is 4 x 4
    with pytest.raises(InputError, match="image tokens"):
        explain_generation(model, processor, bus, "<image> what color ?")
    model, processor = idefics3()
    processor.image_seq_len = 9  # the model's tiles hold 4 tokens each
    with pytest.raises(InputError, match="image tokens"):
        explain_generation(model, processor, bus, "<image> what color ?")
