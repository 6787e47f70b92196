"""method="gae" (Chefer et al. 2021): the relevance rules against naive loops, and the
engine path against a reference built by hand from output_attentions on tiny models."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from modelstate import assert_same_state, snapshot
from vl_models import tiny_ved, tiny_vilt

import mmcam
from mmcam.engine.attention import _configs
from mmcam.errors import InputError, MethodError, TargetError
from mmcam.methods.attention import encoder_decoder_relevance, normalized, self_relevance, weighted_attention
from mmcam.targets import CaptionTokens
from mmcam.tasks import explain_caption, explain_vqa

IMAGE = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)


# -- the rules, against loops in float64 numpy -------------------------------------------


def _bar(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    """E_h[(∇A ⊙ A)+] for one (H, Q, N) map, element by element."""
    h, q, n = a.shape
    out = np.zeros((q, n))
    for i in range(q):
        for j in range(n):
            out[i, j] = sum(max(0.0, g[x, i, j] * a[x, i, j]) for x in range(h)) / h
    return out


def _norm(r: np.ndarray) -> np.ndarray:
    hat = r - np.eye(len(r))
    out = np.zeros_like(hat)
    for i in range(len(r)):
        s = hat[i].sum()
        out[i] = hat[i] / s if s > 0 else 0.0
    return out + np.eye(len(r))


def _random_attention(*shape: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).softmax(-1).double()


def test_weighted_attention_and_self_relevance_match_loops():
    k, b, h, n = 2, 2, 3, 5
    attns = [_random_attention(b, h, n, n, seed=i) for i in range(3)]
    grads = [torch.randn(k, b, h, n, n, generator=torch.Generator().manual_seed(10 + i)).double() for i in range(3)]
    np.testing.assert_allclose(weighted_attention(attns[0], grads[0])[1, 0].numpy(), _bar(attns[0][0].numpy(), grads[0][1, 0].numpy()), rtol=1e-12)
    r = self_relevance(attns, grads)
    for kk in range(k):
        for bb in range(b):
            ref = np.eye(n)
            for a, g in zip(attns, grads):
                ref = ref + _bar(a[bb].numpy(), g[kk, bb].numpy()) @ ref
            np.testing.assert_allclose(r[kk, bb].numpy(), ref, rtol=1e-10)


def test_normalization_hand_solved():
    r = torch.tensor([[1.5, 0.5, 1.0], [0.0, 1.0, 0.0], [0.25, 0.75, 2.0]], dtype=torch.float64)
    # R - I = [[.5,.5,1],[0,0,0],[.25,.75,1]] -> rows / their sums (2, 0 -> stays 0, 2) -> + I
    expected = torch.tensor([[1.25, 0.25, 0.5], [0.0, 1.0, 0.0], [0.125, 0.375, 1.5]], dtype=torch.float64)
    torch.testing.assert_close(normalized(r), expected)


def test_encoder_decoder_relevance_matches_equations():
    k, b, h, t, n = 2, 1, 2, 3, 4
    enc = [_random_attention(b, h, n, n, seed=i) for i in range(2)]
    dec = [_random_attention(b, h, t, t, seed=5 + i) for i in range(2)]
    cross = [_random_attention(b, h, t, n, seed=9 + i) for i in range(2)]
    g = lambda x, s: torch.randn(k, *x.shape, generator=torch.Generator().manual_seed(s)).double()  # noqa: E731
    enc_g, dec_g, cross_g = [g(a, 20 + i) for i, a in enumerate(enc)], [g(a, 30 + i) for i, a in enumerate(dec)], [g(a, 40 + i) for i, a in enumerate(cross)]
    r = encoder_decoder_relevance(enc, enc_g, dec, dec_g, cross, cross_g)
    for kk in range(k):
        r_ii = np.eye(n)
        for a, gg in zip(enc, enc_g):
            r_ii = r_ii + _bar(a[0].numpy(), gg[kk, 0].numpy()) @ r_ii
        r_tt, r_ti = np.eye(t), np.zeros((t, n))
        for a, gg, c, gc in zip(dec, dec_g, cross, cross_g):
            s = _bar(a[0].numpy(), gg[kk, 0].numpy())
            r_tt, r_ti = r_tt + s @ r_tt, r_ti + s @ r_ti
            r_ti = r_ti + _norm(r_tt).T @ _bar(c[0].numpy(), gc[kk, 0].numpy()) @ _norm(r_ii)
        np.testing.assert_allclose(r[kk, 0].numpy(), r_ti, rtol=1e-10)


# -- the engine on tiny random models -----------------------------------------------------


@pytest.fixture(scope="module")
def vit():
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=4)
    model = ViTForImageClassification(config).eval()
    torch.nn.init.normal_(model.classifier.weight, std=0.5)
    mmcam.CAM(model, method="gae")(torch.rand(1, 3, 32, 32), [0])  # transformers adds its own hooks on the first output_attentions call
    return model


def _rollout(model, x, c):
    """A separate eager forward, the class logit's gradients, the rollout in numpy (N x N)."""
    ref = copy.deepcopy(model)
    ref.set_attn_implementation("eager")
    out = ref(x, output_attentions=True)
    grads = torch.autograd.grad(out.logits[0, c], out.attentions)
    n = out.attentions[0].shape[-1]
    r = np.eye(n)
    for a, g in zip(out.attentions, grads):
        r = r + _bar(a[0].detach().double().numpy(), g[0].double().numpy()) @ r
    return r


def _reference_self(model, x, classes):
    """Per class: the CLS row of the hand rollout over the 4x4 patch tokens."""
    return np.stack([np.maximum(_rollout(model, x, c)[0, 1:], 0).reshape(4, 4) for c in classes])


def test_vit_maps_equal_hand_rollout_and_model_is_untouched(vit):
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    vit.vit.embeddings.patch_embeddings.projection.weight.requires_grad_(False)  # a user's own freeze
    before, implementations = snapshot(vit), [c._attn_implementation_internal for c in _configs(vit)]
    exp = mmcam.CAM(vit, method="gae")(x, [1, 3])
    assert exp.maps.shape == (1, 2, 32, 32) and exp.raw.shape == (1, 2, 4, 4) and exp.layers == ["self-attention x2"]
    np.testing.assert_allclose(exp.raw[0].double().numpy(), _reference_self(vit, x, [1, 3]), rtol=1e-4, atol=1e-6)
    assert torch.isfinite(exp.maps).all() and (exp.maps.flatten(2).std(-1) > 0).all()
    assert_same_state(before, snapshot(vit))
    assert [c._attn_implementation_internal for c in _configs(vit)] == implementations != ["eager"]
    vit.vit.embeddings.patch_embeddings.projection.weight.requires_grad_(True)


def test_gae_leaves_no_hook_even_on_the_first_call():
    """transformers installs its output-recording hooks on a model's first output_attentions
    call and keeps them (marking the model); gae removes the ones its own call caused and
    resets the mark, so later calls still capture; hooks a user's own call installed stay."""
    from transformers import ViTConfig, ViTForImageClassification

    from mmcam.engine.attention import eager_attention

    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=4)
    ours = ViTForImageClassification(config).eval()
    theirs = copy.deepcopy(ours)
    x = torch.rand(1, 3, 32, 32)
    fresh = snapshot(ours)
    first = mmcam.CAM(ours, method="gae")(x, [0])
    assert_same_state(fresh, snapshot(ours))
    torch.testing.assert_close(mmcam.CAM(ours, method="gae")(x, [0]).raw, first.raw)  # still captures
    assert_same_state(fresh, snapshot(ours))
    with eager_attention(theirs):
        theirs(x, output_attentions=True)  # the user's call: transformers' hooks, kept
    users = snapshot(theirs)
    assert any(sum(v) for v in users["hooks"].values())
    torch.testing.assert_close(mmcam.CAM(theirs, method="gae")(x, [0]).raw, first.raw)
    assert_same_state(users, snapshot(theirs))


def test_k_at_once_equals_one_at_a_time_for_every_grad_mode(vit):
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    together = mmcam.CAM(vit, method="gae", grad_mode="batched")(x, [0, 2, 3])
    looped = mmcam.CAM(vit, method="gae", grad_mode="loop")(x, [0, 2, 3])
    torch.testing.assert_close(together.raw, looped.raw, rtol=1e-5, atol=1e-7)
    for j, c in enumerate([0, 2, 3]):
        alone = mmcam.CAM(vit, method="gae")(x, [c])
        torch.testing.assert_close(together.raw[:, j], alone.raw[:, 0], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(together.scores[:, j], vit(x).logits[:, c].detach())


def test_query_rows_choose_the_token_whose_relevance_is_shown(vit):
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    cls_row = mmcam.CAM(vit, method=mmcam.methods.GenericAttention(query_rows=[0]))(x, [1])
    patch_row = mmcam.CAM(vit, method=mmcam.methods.GenericAttention(query_rows=[5]))(x, [1])
    assert not torch.allclose(cls_row.raw, patch_row.raw)
    torch.testing.assert_close(cls_row.raw, mmcam.CAM(vit, method="gae")(x, [1]).raw)


def test_explain_classification_takes_gae_but_keeps_gradcam_by_default(vit):
    image = (np.random.default_rng(1).random((32, 32, 3)) * 255).astype(np.uint8)
    exp = mmcam.explain_classification(vit, image, topk=2, method="gae")
    assert exp.method == "gae" and exp.layers == ["self-attention x2"] and exp.maps.shape == (2, 32, 32)
    assert mmcam.explain_classification(vit, image).method == "gradcam"  # gae's class maps barely differ (README)


def test_tasks_without_attention_relevance_refuse_gae_by_name(vit):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    image = (np.random.default_rng(2).random((32, 32, 3)) * 255).astype(np.uint8)
    with pytest.raises(MethodError, match="explains captions .* ViLT answers and ViT classes. Use a CAM method"):
        mmcam.explain_detections(vit, image, method="gae")
    with pytest.raises(MethodError, match="Use a CAM method .* for ViTForImageClassification"):
        mmcam.explain_segmentation(vit, image, method="gae")
    # a Segformer's efficient attention (reduced keys) is not one full self-attention: refused by shape
    config = SegformerConfig(
        num_encoder_blocks=2,
        depths=[1, 1],
        sr_ratios=[2, 1],
        hidden_sizes=[8, 16],
        patch_sizes=[3, 3],
        strides=[2, 2],
        num_attention_heads=[1, 1],
        mlp_ratios=[2, 2],
        decoder_hidden_size=16,
        num_labels=3,
    )
    segformer = SegformerForSemanticSegmentation(config).eval()
    with pytest.raises(MethodError, match="not one full self-attention"):
        mmcam.CAM(segformer, method="gae")(torch.rand(1, 3, 32, 32), [lambda out: out.logits[:, 1].sum((1, 2))])


def test_default_rows_follow_the_head_mean_pooling_and_distillation():
    from transformers import BeitConfig, BeitForImageClassification, DeiTConfig, DeiTForImageClassificationWithTeacher

    small = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=3)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    torch.manual_seed(0)
    beit = BeitForImageClassification(BeitConfig(use_mean_pooling=True, **small)).eval()  # the head reads the mean patch token
    r = _rollout(beit, x, 2)
    exp = mmcam.CAM(beit, method="gae")(x, [2])
    np.testing.assert_allclose(exp.raw[0, 0].double().numpy(), np.maximum(r[1:, 1:].sum(0), 0).reshape(4, 4), rtol=1e-4, atol=1e-6)
    deit = DeiTForImageClassificationWithTeacher(DeiTConfig(**small)).eval()  # (CLS + distillation) / 2
    r = _rollout(deit, x, 1)
    exp = mmcam.CAM(deit, method="gae")(x, [1])
    np.testing.assert_allclose(exp.raw[0, 0].double().numpy(), np.maximum(r[:2, 2:].sum(0), 0).reshape(4, 4), rtol=1e-4, atol=1e-6)


def test_windowed_attention_is_refused():
    from transformers import SwinConfig, SwinForImageClassification

    swin = SwinForImageClassification(
        SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4, num_labels=3)
    ).eval()
    with pytest.raises(MethodError, match="windowed attention"):
        mmcam.CAM(swin, method="gae")(torch.rand(1, 3, 32, 32), [0])


def test_errors_say_what_to_pass(vit):
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(InputError, match="leave layers=None"):
        mmcam.CAM(vit, "vit.layernorm", method="gae")
    cnn = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    cnn(x)
    with pytest.raises(MethodError, match="supports Hugging Face transformers models"):
        mmcam.CAM(cnn, method="gae")(x, [0])
    assert "gae" in mmcam.methods.available()


@pytest.fixture(scope="module")
def captioner():
    model, processor = tiny_ved(decoder_layers=2)
    explain_caption(model, processor, IMAGE, caption="a red circle", method="gae")  # transformers adds its own hooks on the first output_attentions call
    return model, processor


def test_caption_words_equal_the_equations_by_hand(captioner):
    model, processor = captioner
    before, implementations = snapshot(model), [c._attn_implementation_internal for c in _configs(model)]
    exp = explain_caption(model, processor, IMAGE, caption="a red circle above a blue square", method="gae")
    assert exp.items == "a red circle above a blue square".split() and exp.maps.shape == (7, 64, 64)
    assert exp.layers == ["encoder self-attention x2", "decoder self-attention x2", "cross-attention x2"]
    assert_same_state(before, snapshot(model))
    assert [c._attn_implementation_internal for c in _configs(model)] == implementations
    # by hand: one eager forward per word, its log-prob's gradients, eqs. 5-10 in numpy
    ids = [1] + exp.meta["token_ids"]
    pixel_values = processor(images=IMAGE)["pixel_values"]
    inputs = {"pixel_values": pixel_values, "decoder_input_ids": torch.tensor([ids[:-1]])}
    target = CaptionTokens(range(7), ids[1:8])
    torch.testing.assert_close(mmcam.CAM(model, method="gae")(inputs, [target]).maps[0], exp.maps)
    # in float64 (ratios of tiny relevance sums amplify float32 rounding in a random model)
    model64 = copy.deepcopy(model).double()
    pixel_values = pixel_values.double()
    direct = mmcam.CAM(model64, method="gae")(dict(inputs, pixel_values=pixel_values), [target])
    ref = copy.deepcopy(model64)
    ref.set_attn_implementation("eager")
    for word in (1, 2, 5, 6):  # red, circle, blue, square
        out = ref(pixel_values=pixel_values, decoder_input_ids=torch.tensor([ids[:-1]]), output_attentions=True)
        score = out.logits.log_softmax(-1)[0, word, ids[word + 1]]
        enc, dec, cross = out.encoder_attentions, out.decoder_attentions, out.cross_attentions
        grads = torch.autograd.grad(score, [*enc, *dec, *cross])
        bar = lambda a, g: _bar(a[0].detach().numpy(), g[0].numpy())  # noqa: E731
        r_ii = np.eye(65)
        for a, g in zip(enc, grads[:2]):
            r_ii = r_ii + bar(a, g) @ r_ii
        r_tt, r_ti = np.eye(len(ids) - 1), np.zeros((len(ids) - 1, 65))
        for a, g, c, gc in zip(dec, grads[2:4], cross, grads[4:]):
            s = bar(a, g)
            r_tt, r_ti = r_tt + s @ r_tt, r_ti + s @ r_ti
            r_ti = r_ti + _norm(r_tt).T @ bar(c, gc) @ _norm(r_ii)
        np.testing.assert_allclose(direct.raw[0, word].numpy(), np.maximum(r_ti[word, 1:], 0).reshape(8, 8), rtol=1e-9, atol=1e-15)


def test_caption_gae_needs_positions_and_rejects_other_targets(captioner):
    model, processor = captioner
    inputs = {"pixel_values": processor(images=IMAGE)["pixel_values"], "decoder_input_ids": torch.tensor([[1, 5, 6]])}
    exp = mmcam.CAM(model, method="gae")(inputs, [CaptionTokens([0, 1, 2], [5, 6, 2], groups=[[0, 1], [2]])])
    assert exp.maps.shape == (1, 2, 64, 64)
    with pytest.raises(TargetError, match="CaptionTokens"):
        mmcam.CAM(model, method="gae")(inputs, [lambda out: out.logits[:, 0, 5]])


def test_vqa_gae_is_independent_of_patch_shuffling_and_leaves_vilt_as_found():
    model, processor = tiny_vilt(["red", "green", "blue", "yes", "no"])
    explain_vqa(model, processor, IMAGE, "is there a red circle ?", method="gae")  # transformers adds its own hooks on the first output_attentions call
    before = snapshot(model)
    torch.manual_seed(1)
    a = explain_vqa(model, processor, IMAGE, "what color is the circle ?", method="gae")
    torch.manual_seed(2)
    b = explain_vqa(model, processor, IMAGE, "what color is the circle ?", method="gae")
    torch.testing.assert_close(a.maps, b.maps, rtol=1e-4, atol=1e-5)
    assert a.maps.shape == (1, 64, 64) and a.maps.std() > 0 and a.layers == ["self-attention x2"]
    assert_same_state(before, snapshot(model))
