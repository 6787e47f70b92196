"""BLIP and GIT captioning, BLIP-VQA answers: generate, then one teacher-forced forward
(tiny random-init models, processors built from parts, no downloads)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from modelstate import assert_same_state, snapshot
from vl_models import DEC, IMAGE, SIZE, blip, git

import mmcam
from mmcam.adapters.frame import Frame
from mmcam.adapters.hf_text import decoding_for, teacher_forced
from mmcam.errors import InputError, MethodError, TargetError
from mmcam.targets import CaptionTokens
from mmcam.tasks import explain_caption, explain_vqa

QUESTION = "what color is the circle"


def _warm(model, processor, **text):
    """transformers attaches its own hooks on a model's first call: make that call first."""
    inputs = dict(processor(images=IMAGE, return_tensors="pt", **text))
    with torch.no_grad():
        model.generate(**inputs)
    return inputs


@pytest.fixture(scope="module")
def blip_captioner():
    model, processor = blip("caption")
    _warm(model, processor)
    return model, processor


@pytest.fixture(scope="module")
def git_captioner():
    model, processor = git()
    _warm(model, processor)
    return model, processor


@pytest.fixture(scope="module")
def blip_vqa():
    model, processor = blip("vqa")
    _warm(model, processor, text=QUESTION)
    return model, processor


def _teacher_logits(model, processor, exp, **text):
    """Logits of a plain forward on the explained text, at the explained positions."""
    decoding = decoding_for(model, (type(model).__name__,))
    inputs = {k: v for k, v in processor(images=IMAGE, return_tensors="pt", **text).items() if k in ("pixel_values", "input_ids", "attention_mask")}
    if "input_ids" in inputs and decoding.ids_key == "input_ids":
        del inputs["input_ids"], inputs["attention_mask"]
    forced = teacher_forced(decoding, processor.tokenizer, torch.tensor(exp.meta["token_ids"]))
    with torch.no_grad():
        logits = decoding.module(**decoding.forward_inputs(inputs, forced.decoder_ids))
    logits = logits["logits"] if isinstance(logits, dict) else logits.logits
    offset = logits.shape[1] - forced.decoder_ids.shape[1]
    return logits[0, [p + offset for p in forced.target.positions]], inputs, forced, decoding


@pytest.mark.parametrize("family", ["blip", "git"])
def test_one_map_per_generated_word_and_teacher_forcing_reproduces_generate(family, blip_captioner, git_captioner, tmp_path):
    model, processor = blip_captioner if family == "blip" else git_captioner
    before = snapshot(model)
    exp = explain_caption(model, processor, IMAGE)
    pixel_values = processor(images=IMAGE, return_tensors="pt")["pixel_values"]
    generated = model.generate(pixel_values=pixel_values)[0]
    assert exp.items == processor.tokenizer.decode(generated, skip_special_tokens=True).split()
    assert len(exp.items) >= 3
    # the teacher-forced forward reproduces generate(): at every position its argmax over the
    # tokens generate may choose is the generated token
    logits, *_ = _teacher_logits(model, processor, exp)
    logits[:, :6] = -float("inf")  # the special tokens generation suppresses
    assert logits.argmax(-1).tolist() == exp.meta["token_ids"]
    assert exp.meta["teacher_forced_argmax_matches"]
    # each word's score is its log-probability in that forward
    torch.testing.assert_close(exp.scores, _logp(model, processor, exp), rtol=1e-4, atol=1e-5)
    assert exp.maps.shape == (len(exp.items), *IMAGE.shape[:2]) and torch.isfinite(exp.maps).all()  # the photo's size
    assert (exp.maps.flatten(1).std(1) > 0).all()
    paths = exp.save(tmp_path)  # the caption strip: one 96-px thumbnail per word
    from PIL import Image

    strip = Image.open(tmp_path / "explanation_strip.png")
    assert tmp_path / "explanation_strip.png" in paths and strip.width == len(exp.items) * 100 + 4
    tower = "vision_model" if family == "blip" else "git.image_encoder.vision_model"
    assert exp.layers == [f"{tower}.encoder.layers.1.layer_norm1"]
    assert_same_state(before, snapshot(model))


def _logp(model, processor, exp, **text):
    logits, _, forced, _ = _teacher_logits(model, processor, exp, **text)
    lp = logits.log_softmax(-1)
    per_token = lp[torch.arange(len(forced.token_ids)), forced.token_ids]
    return torch.stack([per_token[g].sum() for g in forced.groups])


@pytest.mark.parametrize("family", ["blip", "git"])
def test_all_words_at_once_equal_one_word_at_a_time(family, blip_captioner, git_captioner):
    model, processor = blip_captioner if family == "blip" else git_captioner
    caption = "a red circles left of the blue square"  # "circles" is WordPiece circle + ##s
    exp = explain_caption(model, processor, IMAGE, caption=caption)
    assert exp.items == caption.split()
    assert exp.tokens[2:4] == ["circle", "##s"] and len(exp.tokens) == len(exp.items) + 1
    _, inputs, forced, decoding = _teacher_logits(model, processor, exp)
    torch.testing.assert_close(exp.scores, _logp(model, processor, exp), rtol=1e-4, atol=1e-5)
    cam = mmcam.CAM(decoding.module, exp.layers, reshape=mmcam.reshape.Auto(model))
    run = decoding.forward_inputs(inputs, forced.decoder_ids)
    for k, group in enumerate(forced.groups):
        alone = CaptionTokens(
            [forced.target.positions[i] for i in group],
            [forced.token_ids[i] for i in group],
            groups=[list(range(len(group)))],  # sub-word tokens summed into one word
            text_length=forced.target.text_length,
        )
        one = cam(run, [alone])
        on_photo = Frame.resize(IMAGE.shape[:2], (SIZE, SIZE)).maps_to_photo(one.maps[0, :1])[0]  # the processor squashes
        torch.testing.assert_close(exp.maps[k], on_photo, rtol=1e-4, atol=1e-5)


def test_blip_vqa_generated_answer_is_teacher_forced_through_the_text_decoder(blip_vqa):
    model, processor = blip_vqa
    before = snapshot(model)
    exp = explain_vqa(model, processor, IMAGE, QUESTION)
    inputs = processor(images=IMAGE, text=QUESTION, return_tensors="pt")
    generated = model.generate(**inputs)[0]
    assert exp.meta["answer"] == processor.tokenizer.decode(generated, skip_special_tokens=True)
    assert exp.items == [exp.meta["answer"]] and exp.meta["teacher_forced_argmax_matches"]
    # the explained score is log p(answer | question, image) from the text decoder's logits
    decoder_ids = torch.tensor([exp.meta["token_ids"]])[:, :-1]
    decoder_ids = torch.cat([torch.tensor([[model.config.text_config.bos_token_id]]), decoder_ids], 1)
    seen = []
    handle = model.text_decoder.register_forward_hook(lambda m, a, o: seen.append(o.logits))
    try:
        with torch.no_grad():
            model(**inputs, decoder_input_ids=decoder_ids)
    finally:
        handle.remove()
    lp = seen[0][0].log_softmax(-1)
    expected = sum(lp[t, tok] for t, tok in enumerate(exp.meta["token_ids"]))
    assert exp.scores[0].item() == pytest.approx(float(expected), abs=1e-4)
    assert exp.meta["probability"] == pytest.approx(float(expected.exp()), abs=1e-4)
    assert exp.maps.shape == (1, *IMAGE.shape[:2]) and torch.isfinite(exp.maps).all() and exp.maps.std() > 0
    assert exp.layers == ["vision_model.encoder.layers.1.layer_norm1"]
    assert_same_state(before, snapshot(model))


def test_blip_vqa_given_answer_and_panel(blip_vqa, tmp_path):
    model, processor = blip_vqa
    exp = explain_vqa(model, processor, IMAGE, QUESTION, answer="blue")
    assert exp.items == ["blue"] and exp.meta["generated"] is False
    other = explain_vqa(model, processor, IMAGE, QUESTION, answer="red")
    assert not torch.allclose(exp.maps, other.maps)
    paths = exp.save(tmp_path)
    panel = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(tmp_path / "explanation_panel.png"))
    assert (tmp_path / "explanation_panel.png") in paths and panel.shape[1] > 2 * 160 and panel.shape[0] > 160


def test_bad_input(blip_captioner, blip_vqa):
    model, processor = blip_captioner
    with pytest.raises(InputError, match="empty"):
        explain_caption(model, processor, IMAGE, caption="  ")
    with pytest.raises(InputError, match="BlipForConditionalGeneration.*layers="):
        explain_caption(torch.nn.Linear(2, 2), processor, IMAGE)
    with pytest.raises(InputError, match="rejected the image.*not its tokenizer"):
        explain_caption(model, processor.tokenizer, IMAGE)
    with pytest.raises(InputError, match="an image array must be"):
        explain_caption(model, processor, np.zeros((2, 8, 8, 8, 3), np.uint8))
    with pytest.raises(InputError, match="supports ViltForQuestionAnswering, BlipForQuestionAnswering"):
        explain_vqa(model, processor, IMAGE, QUESTION)  # a captioner is not a VQA model
    vqa, vqa_processor = blip_vqa
    with pytest.raises(MethodError, match="supports ViltForQuestionAnswering"):
        explain_vqa(vqa, vqa_processor, IMAGE, QUESTION, method="gae")
    with pytest.raises(InputError, match="answer is empty"):
        explain_vqa(vqa, vqa_processor, IMAGE, QUESTION, answer=" ")
    # word index out of range: a target position past the teacher-forced text
    inputs = {"pixel_values": processor(images=IMAGE, return_tensors="pt")["pixel_values"], "input_ids": torch.tensor([[5, 8, 9]])}
    with pytest.raises(TargetError, match="out of range"):
        mmcam.CAM(model, "vision_model.encoder.layers.1.layer_norm1")(inputs, [CaptionTokens([3], [8])])


def test_gae_on_blip_reads_the_text_decoders_attentions(blip_captioner):
    """BLIP returns only its vision tower's attentions; gae takes the text decoder's self- and
    cross-attentions from the decoder's own output. Checked against the equations applied by
    hand to the two sub-models' attentions, one word at a time."""
    from mmcam.methods.attention import encoder_decoder_relevance

    model, processor = blip_captioner
    explain_caption(model, processor, IMAGE, method="gae")  # transformers adds its own hooks on the first output_attentions call
    before = snapshot(model)
    exp = explain_caption(model, processor, IMAGE, caption="a red circle left of a blue square", method="gae")
    assert exp.method == "gae" and exp.layers == ["encoder self-attention x2", "decoder self-attention x2", "cross-attention x2"]
    assert_same_state(before, snapshot(model))
    pixel_values = processor(images=IMAGE, return_tensors="pt")["pixel_values"]
    ids = torch.tensor([[DEC] + exp.meta["token_ids"][:-1]])  # the teacher-forced text, [DEC] first
    direct = mmcam.CAM(model, method="gae")(
        {"pixel_values": pixel_values, "input_ids": ids}, [CaptionTokens([1, 4], [exp.meta["token_ids"][1], exp.meta["token_ids"][4]])]
    )
    for column, position in enumerate([1, 4]):  # "red", "of"
        vision = model.vision_model(pixel_values=pixel_values, output_attentions=True)
        text = model.text_decoder(input_ids=ids, encoder_hidden_states=vision.last_hidden_state, output_attentions=True)
        score = text.logits.log_softmax(-1)[0, position, exp.meta["token_ids"][position]]
        maps = [*vision.attentions, *text.attentions, *text.cross_attentions]
        grads = [g[None] for g in torch.autograd.grad(score, maps)]
        r = encoder_decoder_relevance(maps[:2], grads[:2], maps[2:4], grads[2:4], maps[4:], grads[4:])
        torch.testing.assert_close(direct.raw[0, column].flatten(), r[0, 0, position, 1:].clamp(min=0).detach(), rtol=1e-4, atol=1e-7)


def test_gae_is_refused_for_git(git_captioner):
    model, processor = git_captioner
    with pytest.raises(MethodError, match="supports VisionEncoderDecoderModel, BlipForConditionalGeneration"):
        explain_caption(model, processor, IMAGE, method="gae")
