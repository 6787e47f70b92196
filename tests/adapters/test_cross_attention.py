"""GPT-2 cross-attention with the rank-T encoder backward (mmcam.adapters.cross_attention) gives
the ordinary path's numbers: logits bit for bit, encoder gradients and caption maps to float32
round-off (1e-5 of their scale: the same sums in another order), batched and looped, K = 1 and
K > 1, both backward forms (rank-T and, for H T >= D, the ordinary one); the model left as found.
And the caption's LM head taken on the scored rows once (mmcam.adapters.teacher.head_rows)."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import pytest
import torch
from modelstate import assert_same_state, snapshot
from transformers.modeling_outputs import BaseModelOutput
from vl_models import tiny_ved

import mmcam
from mmcam.adapters import cross_attention
from mmcam.adapters.cross_attention import cross_attention_modules, low_rank_cross_attention
from mmcam.adapters.hf_text import decoding_for, processor_inputs, teacher_forced, vision_layers
from mmcam.adapters.teacher import head_rows
from mmcam.engine.gradients import batched_grads, looped_grads
from mmcam.engine.hooks import frozen_parameters
from mmcam.reshape import Auto
from mmcam.targets import CaptionTokens
from mmcam.tasks import explain_caption

IMAGE = (np.random.default_rng(5).random((64, 72, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def captioner():
    model, processor = tiny_ved(decoder_layers=2)
    model(pixel_values=torch.rand(1, 3, 64, 64), decoder_input_ids=torch.tensor([[1]]))  # transformers adds its hooks on call 1
    return model, processor


@pytest.fixture
def counted(monkeypatch):
    calls = []
    apply = cross_attention._CrossKV.apply
    monkeypatch.setattr(cross_attention._CrossKV, "apply", lambda *a: calls.append(a[3] is not None) or apply(*a))  # read generate()'s keys?
    return calls


def scores_and_grads(model, ids, columns, mode, fast, **call):
    """Teacher-forced ``ids``: log-prob scores of ``columns`` (lists of positions summed) and their gradients at the encoder output."""
    torch.manual_seed(1)
    encoded = torch.randn(1, 65, 32)
    with frozen_parameters(model):
        leaf = encoded.clone().requires_grad_()
        with low_rank_cross_attention(model.decoder) if fast else nullcontext():
            out = model(encoder_outputs=BaseModelOutput(last_hidden_state=leaf), decoder_input_ids=ids[:, :-1], **call)
        logp = out.logits.log_softmax(-1)
        scores = torch.stack([sum(logp[0, p, ids[0, p + 1]] for p in col) for col in columns])[None]
        grads = (batched_grads if mode == "batched" else looped_grads)(scores, [leaf])[0]
    return out.logits, grads


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
@pytest.mark.parametrize("mode", ["batched", "loop"])
@pytest.mark.parametrize("length", [6, 20])  # H T = 12 < D = 32: the rank-T form; H T = 40 >= D: the ordinary form
def test_encoder_gradients_equal_the_ordinary_path(captioner, counted, impl, mode, length):
    model = captioner[0]
    config = model.decoder.config
    before_impl = config._attn_implementation
    config._attn_implementation = impl
    try:
        ids = torch.randint(4, 40, (1, length + 1), generator=torch.Generator().manual_seed(length))
        for columns in ([[0], [1, 2], [length - 1]], [[2, 3]]):  # K = 3 words (one of two tokens) and K = 1
            logits, grads = scores_and_grads(model, ids, columns, mode, fast=False, use_cache=False)
            assert not counted
            fast_logits, fast_grads = scores_and_grads(model, ids, columns, mode, fast=True, use_cache=False)
            assert len(counted) == 2  # both decoder layers took the fast form
            counted.clear()
            torch.testing.assert_close(fast_logits, logits, rtol=0, atol=0)
            scale = float(grads.abs().max())
            assert scale > 0
            torch.testing.assert_close(fast_grads, grads, rtol=0, atol=1e-5 * scale)
    finally:
        config._attn_implementation = before_impl


def test_caption_maps_equal_the_ordinary_path_and_the_model_is_untouched(captioner, counted):
    model, processor = captioner
    explain_caption(model, processor, IMAGE, method="gradcam")  # the default layer's probing forward runs once per model
    counted.clear()
    before = snapshot(model)
    for max_length in (None, 2):  # every word (K > 1) and a one-word caption (K = 1)
        exp = explain_caption(model, processor, IMAGE, method="gradcam", max_length=max_length)
        assert counted == [True, True] and (len(exp.items) == 1) == (max_length == 2)  # generate()'s keys and values read
        counted.clear()
        assert_same_state(before, snapshot(model))
        assert not any("forward" in m.__dict__ for m in model.modules())
        prepared = processor_inputs(processor, IMAGE)
        pixels = prepared.inputs["pixel_values"]
        decoding = decoding_for(model)
        forced = teacher_forced(decoding, processor.tokenizer, decoding.generate({"pixel_values": pixels}, **({"max_length": 2} if max_length else {})))
        inputs = {"pixel_values": pixels, "decoder_input_ids": forced.decoder_ids}
        reference = mmcam.CAM(model, vision_layers(model, pixels), method="gradcam", reshape=Auto(model))(inputs, [forced.target])
        assert not counted and exp.items == forced.words
        torch.testing.assert_close(exp.scores, reference.scores[0], rtol=0, atol=0)
        torch.testing.assert_close(exp.maps, prepared.frame.maps_to_photo(reference.maps[0]), rtol=0, atol=1e-5)


def test_fallbacks_take_the_modules_own_forward(captioner, counted):
    model = captioner[0]
    ids = torch.tensor([[1, 5, 7, 9]])
    encoded = BaseModelOutput(last_hidden_state=torch.randn(1, 65, 32))
    with frozen_parameters(model), low_rank_cross_attention(model.decoder) as routed:
        assert routed == 2 == len(cross_attention_modules(model))
        model(encoder_outputs=encoded, decoder_input_ids=ids)  # a key/value cache (use_cache defaults on)
        with torch.no_grad():
            model(encoder_outputs=encoded, decoder_input_ids=ids, use_cache=False)
        seen = []
        c_attn = model.decoder.transformer.h[0].crossattention.c_attn
        handle = c_attn.register_forward_hook(lambda m, a, out: seen.append(out.shape))
        try:
            model(encoder_outputs=encoded, decoder_input_ids=ids, use_cache=False)  # layer 0's c_attn is hooked
        finally:
            handle.remove()
        assert seen and len(counted) == 1  # the hook fired on layer 0; layer 1 took the fast form
    counted.clear()
    with low_rank_cross_attention(model.decoder):  # parameters that require grad: the ordinary path
        out = model(encoder_outputs=encoded, decoder_input_ids=ids, use_cache=False)
    assert not counted
    out.logits.sum().backward()
    assert model.decoder.transformer.h[0].crossattention.c_attn.weight.grad is not None
    model.zero_grad(set_to_none=True)


def test_the_context_restores_every_module_even_on_error(captioner):
    model = captioner[0]
    modules = cross_attention_modules(model)
    own = modules[0].forward
    marker = lambda *a, **k: own(*a, **k)  # noqa: E731 - an instance forward of the user's
    modules[0].forward = marker
    try:
        with pytest.raises(ValueError), low_rank_cross_attention(model):
            assert all("forward" in m.__dict__ for m in modules) and modules[0].forward is not marker
            raise ValueError("inside")
        assert modules[0].__dict__["forward"] is marker and "forward" not in modules[1].__dict__
    finally:
        del modules[0].forward
    assert not any("forward" in m.__dict__ for m in model.modules())


@pytest.mark.parametrize("mode", ["batched", "loop"])
def test_head_rows_equal_the_caption_target(captioner, mode):
    """mmcam.adapters.teacher.head_rows: the word scores of CaptionTokens on a linear LM head's logits."""
    model = captioner[0]
    head = model.decoder.get_output_embeddings()
    torch.manual_seed(2)
    hidden = torch.randn(1, 7, 32, requires_grad=True)
    for groups in ([[0], [1, 2], [3]], [[1, 2]]):  # K = 3 words (one of two tokens) and K = 1
        logits = head(hidden)
        target = CaptionTokens([0, 1, 2, 5], [8, 3, 20, 11], groups)
        reference, fast = target({"logits": logits}), head_rows(target, hidden, head.weight, logits)
        torch.testing.assert_close(fast, reference, rtol=0, atol=0)
        grads = batched_grads if mode == "batched" else looped_grads
        expected, got = grads(reference, [hidden])[0], grads(fast, [hidden])[0]
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5 * float(expected.abs().max()))
        assert not bool(got[:, :, [3, 4, 6]].any())  # rows no word scores get no gradient
