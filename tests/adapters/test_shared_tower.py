"""One vision-tower pass per explained VLM call (mmcam.adapters.vlm.shared_tower): generate() and
the teacher-forced forward read the same image features. Against the two-pass call (the same task
with the sharing switched off: generate() on the pixels, then the explained forward on them
again), on tiny LLaVA, Qwen2-VL and Idefics3: the same tokens (and plain generate()'s), scores and
maps equal exactly (atol 0), the tower run once instead of twice, the model left as found. (With
plain greedy decoding the task takes the one-prefill path instead; here it is switched off.)"""

from __future__ import annotations

import warnings

import pytest
import torch
from modelstate import assert_same_state, snapshot
from PIL import Image
from vlm_families import idefics3
from vlm_models import PHOTO, llava, qwen2_vl

import mmcam.tasks.generation as generation
from mmcam.adapters.vlm.shared_tower import shares_tower, supports_features
from mmcam.engine.guard import model_lock
from mmcam.engine.hooks import resolve_layers
from mmcam.errors import MMCamWarning, TargetError
from mmcam.tasks import explain_generation

FAMILIES = {
    "llava": (lambda: llava(new_tokens=4), "<image> what color is the circle ?", "model.vision_tower"),
    "qwen2-vl": (lambda: qwen2_vl(new_tokens=4), "<|vision_start|> <|image_pad|> <|vision_end|> what color is the circle ?", "model.visual"),
    "idefics3": (lambda: idefics3(new_tokens=4, longest_edge=64), "<image> what color is the circle ?", "model.vision_model"),
}


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request):
    build, prompt, tower = FAMILIES[request.param]
    model, processor = build()
    explain_generation(model, processor, PHOTO, prompt, method="layercam")  # transformers' hooks, the gradient mode: measured once
    return request.param, model, processor, prompt, dict(model.named_modules())[tower]


def _state(model):
    """The model's full state plus every module's attribute names (nothing cached or patched on it)."""
    return snapshot(model), {name: sorted(vars(m)) for name, m in model.named_modules()}


def _call(model, processor, prompt, tower, shared: bool, **kwargs):
    """The task call and how many times the vision tower ran in it; the one-prefill path
    (shared_prefill, tests/adapters/test_vlm_shared_prefill.py) off: this file pins SharedTower."""
    runs = []
    handle = tower.register_forward_hook(lambda *_: runs.append(1))
    saved, greedy = generation.supports_features, generation.plain_greedy
    generation.plain_greedy = lambda model, kwargs: False
    if not shared:
        generation.supports_features = lambda model: False  # the two-pass call, as before
    try:
        exp = explain_generation(model, processor, PHOTO, prompt, **kwargs)
    finally:
        generation.supports_features, generation.plain_greedy = saved, greedy
        handle.remove()
    return exp, len(runs)


@pytest.mark.parametrize("method,target", [("layercam", "log-prob"), ("gradcam", "contrastive"), ("logit-lens", "log-prob")])
def test_one_tower_pass_same_tokens_scores_and_maps(family, method, target):
    name, model, processor, prompt, tower = family
    assert supports_features(model)
    before = _state(model)
    exp, runs = _call(model, processor, prompt, tower, True, method=method, target=target)
    after = _state(model)
    assert_same_state(before[0], after[0])
    assert before[1] == after[1]
    reference, reference_runs = _call(model, processor, prompt, tower, False, method=method, target=target)
    assert (runs, reference_runs) == (1, 2)  # generate() and the explained forward read one tower pass
    inputs = dict(processor(images=Image.fromarray(PHOTO), text=prompt, return_tensors="pt"))
    with torch.no_grad():
        generated = model.generate(**inputs)[0, inputs["input_ids"].shape[1] :].tolist()
    assert exp.meta["token_ids"] == reference.meta["token_ids"] == generated and len(generated) == 4
    assert exp.items == reference.items and exp.meta["teacher_forced_argmax_matches"]
    torch.testing.assert_close(exp.scores, reference.scores, rtol=0, atol=0)
    torch.testing.assert_close(exp.maps, reference.maps, rtol=0, atol=0)
    assert exp.maps.shape == (len(exp.items), *PHOTO.shape[:2]) and exp.layers == reference.layers and exp.method == reference.method
    assert {k: v for k, v in exp.meta.items()} == {k: v for k, v in reference.meta.items()}


def test_given_answer_and_attention_methods_keep_their_path(family):
    name, model, processor, prompt, tower = family
    exp, runs = _call(model, processor, prompt, tower, True, method="layercam")
    given, given_runs = _call(model, processor, prompt, tower, True, method="layercam", answer=" ".join(exp.tokens))
    assert given_runs == 1 and given.items == exp.items  # no generate(): one pass already
    torch.testing.assert_close(given.maps, exp.maps, rtol=0, atol=0)
    layers = resolve_layers(model, generation.layout_for(model).default_layers(model))
    assert shares_tower(model, "layercam", layers) and shares_tower(model, "gradcam", layers)
    assert not shares_tower(model, "scorecam", layers) and not shares_tower(model, "gae", layers)  # extra forwards / attention
    text = model.get_decoder()
    assert not shares_tower(model, "layercam", [("lm", text.layers[0])]) and not shares_tower(model, "layercam", [("all", model.model)])
    if name == "llava":  # a language-model layer: its hook would fire in every generate() step, so the two-pass call
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MMCamWarning)  # some word's evidence at that layer is negative: not what is tested here
            lm, lm_runs = _call(model, processor, prompt, tower, True, method="layercam", layers="model.language_model.layers.0")
        assert lm_runs == 2 and lm.items == exp.items


def test_empty_generated_answer_is_refused_on_the_shared_path(family):
    name, model, processor, prompt, tower = family
    config = model.generation_config
    saved = config.suppress_tokens
    config.suppress_tokens = [t for t in range(model.lm_head.out_features) if t != config.eos_token_id]  # EOS the only choice
    try:
        with pytest.raises(TargetError, match="generated no words"):
            explain_generation(model, processor, PHOTO, prompt, method="layercam")
    finally:
        config.suppress_tokens = saved


def test_the_call_holds_the_models_lock_where_the_tower_runs(family):
    """The view is a new object per call; the task holds the model's own lock around it
    (Task.explain's untouched), so two threads' hooks on the shared tower take turns."""
    name, model, processor, prompt, tower = family
    owned = []
    handle = tower.register_forward_hook(lambda *_: owned.append(model_lock(model)._is_owned()))
    try:
        explain_generation(model, processor, PHOTO, prompt, method="layercam")
    finally:
        handle.remove()
    assert owned == [True]
