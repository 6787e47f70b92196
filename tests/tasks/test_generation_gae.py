"""``method="gae"`` for generative VLMs: Chefer et al.'s relevance through the language model,
against an explicit loop of the rule (full ``R`` matrices, one backward and one head at a time),
K words at once equal to one at a time, the model left as found, LLaVA and Qwen2-VL."""

from __future__ import annotations

import copy

import pytest
import torch
from modelstate import assert_same_state, snapshot
from PIL import Image
from vlm_models import PHOTO, VOCAB, llava, qwen2_vl

from mmcam.adapters.vlm import layout_for
from mmcam.engine.attention import _configs
from mmcam.engine.combine import normalize, upsample
from mmcam.engine.shifts import offsets, shift_grid
from mmcam.engine.shifts import shifted as _shifted
from mmcam.engine.shifts import unshifted as _unshifted
from mmcam.errors import MethodError
from mmcam.targets import CaptionTokens
from mmcam.tasks import explain_generation
from mmcam.tasks.generation_gae import GAE_TOWER, _image_relevance, gae_maps, lm_relevance

ANSWER = ["red", "circle", "##s", "blue"]
GROUPS = [[0], [1, 2], [3]]


@pytest.fixture(scope="module")
def tiny():
    return llava()


@pytest.fixture(scope="module")
def qwen():
    return qwen2_vl()


def _forced(model, processor, prompt):
    inputs = dict(processor(images=Image.fromarray(PHOTO), text=prompt, return_tensors="pt"))
    answer = [VOCAB.index(w) for w in ANSWER]
    t = inputs["input_ids"].shape[1]
    ids = torch.cat([inputs["input_ids"], torch.tensor([answer[:-1]])], 1)
    forced = {**inputs, "input_ids": ids, "attention_mask": torch.ones_like(ids)}
    for key, value in inputs.items():  # Qwen2-VL's mm_token_type_ids
        if key not in ("input_ids", "attention_mask") and isinstance(value, torch.Tensor) and value.shape == inputs["input_ids"].shape:
            forced[key] = torch.cat([value, value.new_zeros((1, len(answer) - 1))], 1)
    return inputs, forced, CaptionTokens([t - 1 + i for i in range(len(answer))], answer, GROUPS)


def _reference(model, forced, target):
    """The rule by hand: a copy in eager mode with every parameter requiring grad, one backward
    per word, ``Ā_l = mean_h relu(∇A ⊙ A)`` head by head, ``R ← R + Ā_l R`` as full matrices,
    word k's rows summed."""
    ref = copy.deepcopy(model)
    ref.set_attn_implementation("eager")
    out = ref(**forced, output_attentions=True)
    scores = target(out)[0]
    attns = list(out.attentions)
    n = attns[0].shape[-1]
    rows = []
    for k, group in enumerate(target.groups):
        grads = torch.autograd.grad(scores[k], attns, retain_graph=True, allow_unused=True)
        r = torch.eye(n)
        for attn, grad in zip(attns, grads):
            grad = torch.zeros_like(attn) if grad is None else grad
            heads = attn.shape[1]
            bar = torch.zeros(n, n)
            for h in range(heads):
                bar += (grad[0, h] * attn[0, h]).clamp(min=0) / heads
            r = r + bar @ r
        rows.append(sum(r[target.positions[i]] for i in group))
    return torch.stack(rows), scores.detach()


@pytest.mark.parametrize("family", ["llava", "qwen"])
def test_relevance_equals_the_rule_by_hand_and_k_at_once_equals_one_at_a_time(family, tiny, qwen):
    model, processor = tiny if family == "llava" else qwen
    prompt = (
        "<image> what color is the circle ?"
        if family == "llava"
        else processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what color is the circle ?"}]}],
            add_generation_prompt=True,
            tokenize=False,
        )
    )
    _, forced, target = _forced(model, processor, prompt)
    out = lm_relevance(model, forced, target)
    relevance, scores = out.rows, out.scores
    by_hand, ref_scores = _reference(model, forced, target)
    assert out.layers == ["language-model self-attention x2"] and relevance.shape == (3, forced["input_ids"].shape[1])
    torch.testing.assert_close(scores, ref_scores)
    torch.testing.assert_close(relevance, by_hand, rtol=1e-4, atol=1e-6)
    assert float((relevance - torch.eye(relevance.shape[1])[[target.positions[g[0]] for g in GROUPS]]).abs().max()) > 1e-4  # not the identity
    for k, group in enumerate(GROUPS):
        alone = lm_relevance(model, forced, CaptionTokens(target.positions, target.token_ids, [group]))
        torch.testing.assert_close(alone.rows[0], relevance[k], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(alone.scores[0], scores[k])


def test_maps_are_the_image_columns_on_the_grid_and_the_model_is_untouched(tiny):
    model, processor = tiny
    model.set_attn_implementation("sdpa")
    before, implementations = snapshot(model), [c._attn_implementation_internal for c in _configs(model)]
    prompt = "<image> what color is the circle ?"
    exp = explain_generation(model, processor, PHOTO, prompt, answer="red circle ##s blue", method="gae")
    assert_same_state(before, snapshot(model))
    assert [c._attn_implementation_internal for c in _configs(model)] == implementations and "sdpa" in implementations
    assert exp.items == ["red", "circles", "blue"] and exp.method == "gae" and exp.layers == ["language-model self-attention x2"]
    assert exp.maps.shape == (3, *PHOTO.shape[:2]) and all(float(m.max()) == 1 for m in exp.maps)
    inputs, forced, target = _forced(model, processor, prompt)
    layout = layout_for(model)
    tokens = layout.image_tokens(inputs)
    out = lm_relevance(model, forced, target)
    torch.testing.assert_close(exp.scores, out.scores)
    grid = out.rows[:, tokens.positions].reshape(3, *tokens.grid).clamp(min=0)  # LLaVA "default": CLS dropped, 4 x 4
    expected = normalize(upsample(grid[None], tokens.input_size))[0]
    prepared = layout.prepare(processor, Image.fromarray(PHOTO), prompt)
    torch.testing.assert_close(exp.maps, prepared.frame.maps_to_photo(expected))


def test_qwen2_vl_maps_on_the_photo(qwen):
    model, processor = qwen
    before = snapshot(model)
    exp = explain_generation(model, processor, PHOTO, [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "describe"}]}], method="gae")
    assert_same_state(before, snapshot(model))
    assert exp.maps.shape == (len(exp.items), *PHOTO.shape[:2]) and len(exp.items) == 4
    assert exp.meta["teacher_forced_argmax_matches"]


def test_a_model_without_attention_maps_is_refused(tiny):
    model, processor = tiny
    _, forced, target = _forced(model, processor, "<image> what color is the circle ?")
    with pytest.raises(MethodError, match="output_attentions"):
        lm_relevance(torch.nn.Linear(2, 2), forced, target)


def test_gae_tower_carries_the_image_columns_through_the_towers_rollout_by_hand(tiny):
    """CLIP tower (CLS + 4 x 4, CLS dropped by LLaVA), ``vision_feature_layer=-2``: the second
    block's maps get zero gradient. By hand: the tower's ``R = Π(I + Ā)`` per word, ``R̄ = (R −
    I) / rowsum + I``, the language model's image columns (a zero for the CLS) times ``R̄``."""
    model, processor = tiny
    inputs, forced, target = _forced(model, processor, "<image> what color is the circle ?")
    tokens = layout_for(model).image_tokens(inputs)
    out = lm_relevance(model, forced, target, tower=True)
    torch.testing.assert_close(out.rows, lm_relevance(model, forced, target).rows, rtol=1e-5, atol=1e-7)  # the leaf moved, not the rule
    assert out.layers == ["language-model self-attention x2", "vision-tower self-attention x2"] and out.tower.shape == (3, 17, 17)
    ref = copy.deepcopy(model)
    ref.set_attn_implementation("eager")
    kept = []
    for layer in ref.model.vision_tower.encoder.layers:
        layer.self_attn.register_forward_hook(lambda m, a, o: kept.append(o[1]))
    scores = target(ref(**forced))[0]
    expected = []
    for k in range(3):
        grads = torch.autograd.grad(scores[k], kept, retain_graph=True, allow_unused=True)
        r = torch.eye(17)
        for attn, grad in zip(kept, grads):
            grad = torch.zeros_like(attn) if grad is None else grad
            r = r + (grad[0] * attn[0]).clamp(min=0).mean(0) @ r
        hat = r - torch.eye(17)
        sums = hat.sum(-1, keepdim=True)
        bar = torch.where(sums > 0, hat / sums, torch.zeros(())) + torch.eye(17)  # rows of R - I that sum to 0 stay 0
        expected.append((torch.cat([torch.zeros(1), out.rows[k, tokens.positions]]) @ bar)[1:])
    assert grads[1] is None or not grads[1].any()  # the block after the feature layer takes no part
    torch.testing.assert_close(_image_relevance(out, tokens), torch.stack(expected), rtol=1e-4, atol=1e-6)


def test_gae_tower_averages_half_patch_shifts_and_leaves_the_model_as_found(tiny, qwen):
    model, processor = tiny
    pixels = torch.arange(2 * 8 * 8.0).reshape(1, 2, 8, 8)
    moved = _shifted(pixels, 2, 3)
    assert torch.equal(moved[..., 2:, 3:], pixels[..., :-2, :-3]) and torch.equal(moved[..., 0, 0], pixels[..., 0, 0])
    assert torch.equal(_unshifted(moved[0], 2, 3)[:, :-2, :-3], pixels[0, :, :-2, :-3])
    inputs, forced, target = _forced(model, processor, "<image> what color is the circle ?")
    tokens = layout_for(model).image_tokens(inputs)
    maps, scores, _, layers = gae_maps(model, forced, tokens, target, GAE_TOWER)
    assert layers[-1] == "mean over input shifts [(0, 0), (0, 4), (4, 0), (4, 4)]"  # patch 8
    by_hand = []
    for dy, dx in [(0, 0), (0, 4), (4, 0), (4, 4)]:
        out = lm_relevance(model, {**forced, "pixel_values": _shifted(forced["pixel_values"], dy, dx)}, target, tower=True)
        grid = _image_relevance(out, tokens).reshape(3, 4, 4).clamp(min=0)
        by_hand.append(_unshifted(normalize(upsample(grid[None], (32, 32)))[0], dy, dx))
    torch.testing.assert_close(maps, normalize(torch.stack(by_hand).mean(0)))
    torch.testing.assert_close(scores, lm_relevance(model, forced, target).scores)
    before = snapshot(model)
    exp = explain_generation(model, processor, PHOTO, "<image> what color is the circle ?", method=GAE_TOWER)
    assert_same_state(before, snapshot(model))
    assert exp.method == GAE_TOWER and exp.maps.shape == (4, *PHOTO.shape[:2]) and exp.meta["teacher_forced_argmax_matches"]
    qwen_model, qwen_processor = qwen  # Qwen2-VL's tower merges 2 x 2 patches per image token: refused, with what to use
    with pytest.raises(MethodError, match="'gae'"):
        explain_generation(
            qwen_model, qwen_processor, PHOTO, [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "describe"}]}], method=GAE_TOWER
        )


def test_the_default_is_gae_tower_on_llava_and_layercam_elsewhere(tiny, qwen):
    model, processor = tiny
    exp = explain_generation(model, processor, PHOTO, "<image> what color is the circle ?", answer="red")
    assert exp.method == GAE_TOWER
    layered = explain_generation(model, processor, PHOTO, "<image> what color is the circle ?", answer="red", layers="model.multi_modal_projector")
    assert layered.method == "layercam" and layered.layers == ["model.multi_modal_projector"]
    qwen_model, qwen_processor = qwen
    other = explain_generation(qwen_model, qwen_processor, PHOTO, [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "describe"}]}])
    assert other.method == "layercam"


def test_shift_offsets_per_phase_count():
    assert offsets(8, 2) == [0, 4] and offsets(14, 2) == [0, 7] and offsets(8, 1) == [0]
    assert offsets(8, 3) == [0, 3, 5] and offsets(14, 3) == [0, 5, 9]
    assert shift_grid((8, 14), 2) == [(0, 0), (0, 7), (4, 0), (4, 7)]


def test_gae_tower_takes_three_phases_for_captions(tiny):
    from mmcam.tasks.generation import GenerationTask
    from mmcam.tasks.generation_gae import shift_phases

    model, processor = tiny
    before = snapshot(model)
    exp = GenerationTask(model, processor, "<image> what color is the circle ?", "red circle", method=GAE_TOWER, task="caption")(PHOTO)
    assert_same_state(before, snapshot(model))
    assert exp.layers[-1] == f"mean over input shifts {shift_grid((8, 8), 3)}" and exp.maps.shape == (2, *PHOTO.shape[:2])
    assert shift_phases("caption") == 3 and shift_phases("vqa") == shift_phases("generation") == 2
