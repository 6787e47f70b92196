"""Generative VLMs (LLaVA): one map per answer word from one teacher-forced forward, the
image-token layout, forward-only logit lens, routing and bad input (tiny random-init
models, processors built offline, no downloads)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from modelstate import assert_same_state, snapshot
from PIL import Image
from vlm_models import EOS, IMAGE_TOKEN, PHOTO, VOCAB, llava

import mmcam
from mmcam.adapters.vlm import ImageLayout, LlavaLayout, layout_for
from mmcam.engine.combine import normalize, upsample
from mmcam.errors import InputError, TargetError
from mmcam.targets import CaptionTokens
from mmcam.tasks import explain_caption, explain_generation, explain_vqa
from mmcam.tasks.registry import build_task

PROMPT = "<image> what color is the circle ?"
BUS = Path(__import__("ultralytics").__file__).parent / "assets" / "bus.jpg"


@pytest.fixture(scope="module")
def tiny():
    return llava()


def test_one_map_per_word_on_the_photo_and_tokens_equal_generate(tiny):
    model, processor = tiny
    before = snapshot(model)
    exp = explain_generation(model, processor, PHOTO, PROMPT, method="layercam")  # the CAM path (LLaVA's default is gae-tower)
    assert_same_state(before, snapshot(model))
    inputs = processor(images=Image.fromarray(PHOTO), text=PROMPT, return_tensors="pt")
    with torch.no_grad():
        generated = model.generate(**inputs)[0, inputs["input_ids"].shape[1] :].tolist()
    assert exp.meta["token_ids"] == generated and len(generated) == 4
    assert exp.meta["teacher_forced_argmax_matches"]
    assert exp.items == [VOCAB[t] for t in generated] and exp.answer == " ".join(exp.items)
    assert exp.maps.shape == (4, *PHOTO.shape[:2]) and exp.scores.shape == (4,)
    assert 0 <= float(exp.maps.min()) and float(exp.maps.max()) <= 1 and all(float(m.max()) == 1 for m in exp.maps)
    assert exp.layers == ["model.vision_tower.encoder.layers.0"]  # vision_feature_layer=-2 of 2 blocks
    assert exp.meta["image_tokens"] == {"first": 0, "count": 16, "prefix": 0, "grid": [4, 4]}
    assert (exp.scores < 0).all()


def test_k_words_at_once_equal_one_at_a_time(tiny):
    model, processor = tiny
    exp = explain_generation(model, processor, PHOTO, PROMPT, answer="red circle ##s blue", method="layercam")
    assert exp.items == ["red", "circles", "blue"]  # sub-words merged
    inputs = dict(processor(images=Image.fromarray(PHOTO), text=PROMPT, return_tensors="pt"))
    answer = [VOCAB.index(w) for w in ("red", "circle", "##s", "blue")]
    t = inputs["input_ids"].shape[1]
    ids = torch.cat([inputs["input_ids"], torch.tensor([answer[:-1]])], 1)
    forced = {**inputs, "input_ids": ids, "attention_mask": torch.ones_like(ids)}
    layout = LlavaLayout(model)
    reshape = layout.reshape(layout.image_tokens(inputs))
    positions = [t - 1 + i for i in range(4)]
    cam = mmcam.CAM(model, exp.layers, method=exp.method, reshape=reshape)
    together = cam(forced, [CaptionTokens(positions, answer, [[0], [1, 2], [3]])])
    for k, group in enumerate([[0], [1, 2], [3]]):
        alone = cam(forced, [CaptionTokens(positions, answer, [group])])
        torch.testing.assert_close(alone.raw[0, 0], together.raw[0, k])
        torch.testing.assert_close(alone.scores[0, 0], together.scores[0, k])
    with torch.no_grad():  # the scores are the words' log-probabilities of a plain forward
        logp = model(**forced).logits[0].log_softmax(-1)
    by_hand = torch.stack([logp[t - 1, answer[0]], logp[t, answer[1]] + logp[t + 1, answer[2]], logp[t + 2, answer[3]]])
    torch.testing.assert_close(exp.scores, by_hand, rtol=1e-4, atol=1e-4)


def test_layout_from_config_and_processor():
    model, processor = llava(strategy="full", feature_layer=-1)
    prompt = "what is <image> left ?"
    inputs = processor(images=Image.fromarray(PHOTO), text=prompt, return_tensors="pt")
    tokens = layout_for(model).image_tokens(inputs)
    assert tokens.positions == list(range(2, 2 + 17)) and tokens.prefix == 1 and tokens.grid == (4, 4)  # CLS kept
    assert tokens.patch_positions == list(range(3, 19))
    assert tokens.region(0) == (0, 0, 8, 8) and tokens.region(7) == (8, 24, 16, 32)
    assert LlavaLayout(model).default_layers(model) == ["model.vision_tower.encoder.layers.1"]
    exp = explain_generation(model, processor, PHOTO, prompt)
    assert exp.maps.shape == (4, *PHOTO.shape[:2]) and exp.meta["image_tokens"]["prefix"] == 1
    projected = explain_generation(model, processor, PHOTO, prompt, layers="model.multi_modal_projector")
    assert projected.layers == ["model.multi_modal_projector"] and projected.meta["token_ids"] == exp.meta["token_ids"]
    assert projected.maps.shape == exp.maps.shape and not torch.equal(projected.maps, exp.maps)


def test_bright_patch_lands_in_its_grid_cell_and_back_on_the_photo(tiny):
    """Through the layout and the processor's frame: a tower whose embedding is the patch's mean
    brightness (positions and CLS zeroed) puts a bright square in the top-right of the photo in
    the top-right grid cell, and the cell's map back in the photo's top-right."""
    model, processor = tiny
    photo = np.full((48, 64, 3), 20, np.uint8)
    photo[2:14, 44:58] = 255  # inside the centre crop's top-right cell
    inputs = processor(images=Image.fromarray(photo), text=PROMPT, return_tensors="pt")
    layout = layout_for(model)
    tokens = layout.image_tokens(inputs)
    embeddings = copy.deepcopy(model.model.vision_tower.embeddings)
    with torch.no_grad():
        embeddings.patch_embedding.weight.fill_(1.0 / embeddings.patch_embedding.weight[0].numel())
        embeddings.position_embedding.weight.zero_()
        embeddings.class_embedding.zero_()
        grid = layout.reshape(tokens)(embeddings(inputs["pixel_values"]), tokens.input_size)[0, 0]
    assert grid.shape == (4, 4) and divmod(int(grid.argmax()), 4) == (0, 3)
    top, left, bottom, right = tokens.region(int(grid.argmax()))
    assert inputs["pixel_values"][0, :, top:bottom, left:right].mean() > inputs["pixel_values"][0].mean()
    from mmcam.adapters.base import processor_prepare

    frame = processor_prepare(processor, Image.fromarray(photo), text=PROMPT).frame
    on_photo = frame.maps_to_photo(upsample(normalize(grid.clamp_min(0))[None, None], tokens.input_size)[0])[0]
    y, x = divmod(int(on_photo.argmax()), on_photo.shape[1])
    assert y < 24 and x > 40


def test_logit_lens_is_the_lm_head_at_the_image_tokens(tiny):
    model, processor = tiny
    exp = explain_generation(model, processor, PHOTO, PROMPT, answer="red circle", method="logit-lens")
    assert exp.method == "logit-lens" and exp.items == ["red", "circle"]
    prepared = processor_prepare_for(processor)
    inputs = dict(prepared.inputs)
    ids = torch.cat([inputs["input_ids"], torch.tensor([[VOCAB.index("red")]])], 1)
    with torch.no_grad():
        logits = model(**{**inputs, "input_ids": ids, "attention_mask": torch.ones_like(ids)}).logits[0]
    grid = logits[:16, [VOCAB.index("red"), VOCAB.index("circle")]].T.reshape(1, 2, 4, 4)
    by_hand = prepared.frame.maps_to_photo(normalize(upsample(normalize(grid), (32, 32)))[0])
    torch.testing.assert_close(exp.maps, by_hand)
    gradcam = explain_generation(model, processor, PHOTO, PROMPT, answer="red circle")
    torch.testing.assert_close(exp.scores, gradcam.scores)


def processor_prepare_for(processor, photo=PHOTO, prompt=PROMPT):
    from mmcam.adapters.base import processor_prepare

    return processor_prepare(processor, Image.fromarray(photo), text=prompt)


def test_vqa_and_caption_route_generative_vlms_through_the_chat_template():
    model, processor = llava(chat=True)
    vqa = explain_vqa(model, processor, PHOTO, "what color is the circle ?")
    assert vqa.task == "vqa" and vqa.meta["prompt"] == PROMPT and len(vqa.items) == 4
    direct = explain_generation(
        model, processor, PHOTO, [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what color is the circle ?"}]}]
    )
    torch.testing.assert_close(direct.maps, vqa.maps)
    given = explain_vqa(model, processor, PHOTO, "what color is the circle ?", "red")
    assert given.items == ["red"] and not given.meta["generated"]
    caption = explain_caption(model, processor, PHOTO, prompt="describe the image")
    assert caption.task == "caption" and caption.maps.shape == (4, *PHOTO.shape[:2])
    task = build_task("vqa", model, processor, question="what color is the circle ?")
    [batched] = task.explain([task.prepare(PHOTO)])
    torch.testing.assert_close(batched.maps, vqa.maps)


def test_real_photo_maps_at_its_size(tiny):
    model, processor = tiny
    exp = explain_vqa(model, processor, str(BUS), "what color is the circle ?", max_length=2)
    assert exp.maps.shape[1:] == Image.open(BUS).size[::-1] and len(exp.items) == 2


def test_a_layout_by_hand_gives_the_same_maps(tiny):
    model, processor = tiny
    auto = explain_generation(model, processor, PHOTO, PROMPT, answer="red", method="layercam")
    layout = ImageLayout(image_token_id=IMAGE_TOKEN, patch_size=8, layers=["model.vision_tower.encoder.layers.0"])
    manual = explain_generation(model, processor, PHOTO, PROMPT, answer="red", layout=layout)
    torch.testing.assert_close(manual.maps, auto.maps)


def test_bad_input_says_what_to_pass(tiny):
    model, processor = tiny
    with pytest.raises(InputError, match="LlavaForConditionalGeneration.*ImageLayout"):
        explain_generation(torch.nn.Linear(2, 2), processor, PHOTO, PROMPT)
    with pytest.raises(InputError, match="no image placeholder"):
        explain_generation(model, processor, PHOTO, "what color is the circle ?")
    with pytest.raises(InputError, match="2 image placeholders"):
        explain_generation(model, processor, PHOTO, "<image> <image> what color ?")
    with pytest.raises(InputError, match="answer is empty"):
        explain_generation(model, processor, PHOTO, PROMPT, answer="  ")
    with pytest.raises(InputError, match="string"):
        explain_vqa(model, processor, PHOTO, "what color ?", answer=3)
    with pytest.raises(InputError, match="image tokens"):  # the processor's count disagrees with the model's
        explain_generation(model, processor, PHOTO, PROMPT, layout=ImageLayout(IMAGE_TOKEN, patch_size=4, layers=["model.multi_modal_projector"]))
    silent = copy.deepcopy(model)
    silent.generation_config.suppress_tokens = [t for t in range(len(VOCAB)) if t != EOS]  # stops at once
    before = snapshot(silent)
    with pytest.raises(TargetError, match="generated no words"):
        explain_generation(silent, processor, PHOTO, PROMPT)
    assert_same_state(before, snapshot(silent))
