"""One language-model prefill per explained VLM call (mmcam.adapters.vlm.shared_prefill): the greedy
decoding with the graph is the explained forward for answers of up to GRAPH_STEPS tokens. Against
the one-tower two-prefill call (SharedTower: generate() under no-grad, then the teacher-forced
forward), on tiny LLaVA, Qwen2-VL, Idefics3 and zoo:vlm: the tokens equal plain generate()'s;
a short answer's scores and maps to rounding with the language model run as often as in
generate() (once fewer than before); a longer answer's bit for bit (its steps' graph dropped, the
teacher-forced forward on the same features); no parameter gradients, the model left as found;
anything but plain greedy search keeps the SharedTower path."""

from __future__ import annotations

import pytest
import torch
from modelstate import assert_same_state, snapshot
from PIL import Image
from vlm_families import idefics3
from vlm_models import PHOTO, llava, qwen2_vl

import mmcam.tasks.generation as generation
from mmcam.adapters.vlm.shared_prefill import GRAPH_STEPS, plain_greedy
from mmcam.tasks import explain_generation

#: measured: scores and maps differ by <= 2.4e-6 (tiny configs) between the decode steps' and the teacher-forced logits
TOLERANCE = 1e-5
FAMILIES = {
    "llava": (lambda: llava(new_tokens=4), "<image> what color is the circle ?"),
    "qwen2-vl": (lambda: qwen2_vl(new_tokens=4), "<|vision_start|> <|image_pad|> <|vision_end|> what color is the circle ?"),
    "idefics3": (lambda: idefics3(new_tokens=4, longest_edge=64), "<image> what color is the circle ?"),
    "zoo": (None, None),
}


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request):
    build, prompt = FAMILIES[request.param]
    if build is None:
        from mmcam import zoo
        from mmcam.tasks.caption import CAPTION_PROMPT

        model, processor = zoo.load("vlm")
        photo = zoo_scene()
        prompt = generation.chat_prompt(processor, CAPTION_PROMPT)
    else:
        (model, processor), photo = build(), PHOTO
    explain_generation(model, processor, photo, prompt, method="layercam")  # transformers' hooks, the gradient mode: measured once
    return request.param, model, processor, prompt, photo


def zoo_scene():
    from mmcam.data.scenes import generate_scene

    return generate_scene(5).image


def _call(model, processor, prompt, photo, share: bool, **kwargs):
    """The task call and, per language-model (``get_decoder()``) run in it, whether autograd was on."""
    runs = []
    handle = model.get_decoder().register_forward_hook(lambda *_: runs.append(torch.is_grad_enabled()))
    saved = generation.plain_greedy
    if not share:
        generation.plain_greedy = lambda model, kwargs: False  # one tower pass, two prefills: the path before
    try:
        exp = explain_generation(model, processor, photo, prompt, **kwargs)
    finally:
        generation.plain_greedy = saved
        handle.remove()
    assert torch.is_grad_enabled()  # the mode the steps' graph was switched off in is restored
    return exp, runs


def _generated(model, processor, prompt, photo, max_new_tokens=None):
    """Plain ``generate()``'s answer (cut at the stop token) and how many times the language model ran."""
    inputs = generation.layout_for(model).prepare(processor, Image.fromarray(photo), prompt).inputs
    runs = []
    handle = model.get_decoder().register_forward_hook(lambda *_: runs.append(1))
    try:
        with torch.no_grad():
            out = model.generate(**inputs, **({"max_new_tokens": max_new_tokens} if max_new_tokens else {}))
    finally:
        handle.remove()
    return generation.GenerationTask(model, processor, prompt)._cut(out[0, inputs["input_ids"].shape[1] :].tolist()), len(runs)


def _state(model):
    return snapshot(model), {n: sorted(vars(m)) for n, m in model.named_modules()}


@pytest.mark.parametrize("method,target", [("layercam", "log-prob"), ("gradcam", "contrastive")])
def test_short_answer_one_prefill_same_tokens_maps_to_rounding(family, method, target):
    name, model, processor, prompt, photo = family
    before = _state(model)
    exp, runs = _call(model, processor, prompt, photo, True, method=method, target=target, max_new_tokens=GRAPH_STEPS)
    assert_same_state(before[0], _state(model)[0])
    assert before[1] == _state(model)[1] and all(p.grad is None for p in model.parameters())  # no parameter gradients
    reference, reference_runs = _call(model, processor, prompt, photo, False, method=method, target=target, max_new_tokens=GRAPH_STEPS)
    generated, generate_runs = _generated(model, processor, prompt, photo, GRAPH_STEPS)
    assert exp.meta["token_ids"] == reference.meta["token_ids"] == generated and len(generated) == GRAPH_STEPS
    assert runs == [True] * generate_runs and len(reference_runs) == generate_runs + 1  # the teacher-forced forward is gone
    assert exp.items == reference.items and exp.meta["teacher_forced_argmax_matches"]
    assert exp.maps.shape == (len(exp.items), *photo.shape[:2]) and exp.layers == reference.layers
    torch.testing.assert_close(exp.scores, reference.scores, rtol=0, atol=TOLERANCE)
    torch.testing.assert_close(exp.maps, reference.maps, rtol=0, atol=TOLERANCE)
    scores = ("word_log_probs", "word_contrastive_scores")
    assert {k: v for k, v in exp.meta.items() if k not in scores} == {k: v for k, v in reference.meta.items() if k not in scores}


def test_longer_answer_is_teacher_forced_on_the_same_features(family):
    name, model, processor, prompt, photo = family
    new = GRAPH_STEPS + 1 if name != "zoo" else None  # zoo:vlm's caption: its own 11 words
    before = _state(model)
    exp, runs = _call(model, processor, prompt, photo, True, method="layercam", max_new_tokens=new)
    assert_same_state(before[0], _state(model)[0])
    reference, reference_runs = _call(model, processor, prompt, photo, False, method="layercam", max_new_tokens=new)
    generated, generate_runs = _generated(model, processor, prompt, photo, new)
    assert exp.meta["token_ids"] == reference.meta["token_ids"] == generated and len(generated) > GRAPH_STEPS
    # the first GRAPH_STEPS decode steps with the graph, the rest without, then the teacher-forced forward
    assert runs == [True] * GRAPH_STEPS + [False] * (generate_runs - GRAPH_STEPS) + [True] and reference_runs == [False] * generate_runs + [True]
    torch.testing.assert_close(exp.scores, reference.scores, rtol=0, atol=0)
    torch.testing.assert_close(exp.maps, reference.maps, rtol=0, atol=0)


def test_only_plain_greedy_search_shares_the_prefill(family):
    name, model, processor, prompt, photo = family
    assert plain_greedy(model, {}) and plain_greedy(model, {"max_new_tokens": 3})
    assert not plain_greedy(model, {"do_sample": True}) and not plain_greedy(model, {"num_beams": 2})
    assert not plain_greedy(model, {"penalty_alpha": 0.6, "top_k": 4}) and not plain_greedy(model, {"num_return_sequences": 2, "do_sample": True})
    if name != "llava":
        return
    config = model.generation_config
    config.num_beams = 2  # beam search: the steps' logits belong to beams, so the SharedTower path (its own generate())
    try:
        exp, runs = _call(model, processor, prompt, photo, True, method="layercam", max_new_tokens=2)
        reference, _ = _call(model, processor, prompt, photo, False, method="layercam", max_new_tokens=2)
        generated, _ = _generated(model, processor, prompt, photo, 2)
    finally:
        config.num_beams = 1
    assert exp.meta["token_ids"] == generated and runs[-1] and not any(runs[:-1])  # generate() under no-grad, then the forward
    torch.testing.assert_close(exp.maps, reference.maps, rtol=0, atol=0)


def test_the_decode_steps_run_under_the_models_lock(family):
    name, model, processor, prompt, photo = family
    from mmcam.engine.guard import model_lock

    owned = []
    handle = model.get_decoder().register_forward_hook(lambda *_: owned.append(model_lock(model)._is_owned()))
    try:
        explain_generation(model, processor, photo, prompt, method="layercam", max_new_tokens=2)
    finally:
        handle.remove()
    assert owned == [True] * _generated(model, processor, prompt, photo, 2)[1]
    with torch.no_grad():  # a caller's no-grad block: the call turns autograd on for itself, and back off
        exp = explain_generation(model, processor, photo, prompt, method="layercam", max_new_tokens=GRAPH_STEPS + 1)
        assert not torch.is_grad_enabled() and len(exp.items) > 0
