"""AttnLRP against an explicit relevance-form implementation of the paper's rules on a tiny
one-layer ViT (ε-rule linears, identity rule on LayerNorm and GELU, uniform rule on both
matrix products, Prop. 3.1 on the softmax), conservation, K targets at once, model untouched."""

from __future__ import annotations

import pytest
import torch
from modelstate import assert_same_state, snapshot

import mmcam
from mmcam.engine.inputs import Inputs
from mmcam.engine.targets import TargetSet
from mmcam.errors import MethodError
from mmcam.methods.attnlrp import token_relevance
from mmcam.targets import ClassLogit

transformers = pytest.importorskip("transformers")
HEADS = 2


def tiny_vit(biases: bool = True):
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=16, patch_size=8, hidden_size=8, num_hidden_layers=1, num_attention_heads=HEADS, intermediate_size=16, num_labels=3, initializer_range=0.5
    )
    model = transformers.ViTForImageClassification(config).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.LayerNorm)) and module.bias is not None:
                module.bias.normal_(0, 0.5) if biases else module.bias.zero_()
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
    return model


def _explicit(model, x, label):
    """Relevance of every encoder input token, by the rules in relevance form, step by step;
    also the relevance the biases and the softmax keep (conservation's bookkeeping)."""
    vit, layer = model.vit, model.vit.layers[0]
    att, mlp = layer.attention, layer.mlp
    kept = {"bias": 0.0, "softmax": 0.0}
    with torch.no_grad():
        h0 = vit.embeddings(x)  # (1, N, d)

        def linear(module, inp, out, r_out):
            s = r_out / out
            if module.bias is not None:
                kept["bias"] += float((module.bias * s).sum())
            return inp * (s @ module.weight)

        def layer_norm(module, inp, out, r_out):
            sigma = (inp.var(-1, unbiased=False, keepdim=True) + module.eps).sqrt()
            s = r_out / out
            kept["bias"] += float((module.bias * s).sum())
            ws = module.weight * s
            return inp * (ws - ws.mean(-1, keepdim=True)) / sigma

        ln1 = layer.layernorm_before(h0)
        q, k, v = att.q_proj(ln1), att.k_proj(ln1), att.v_proj(ln1)
        split = lambda t: t.view(1, -1, HEADS, t.shape[-1] // HEADS).transpose(1, 2)  # noqa: E731
        qh, kh, vh = split(q), split(k), split(v)
        s = qh @ kh.transpose(-1, -2) * att.scaling
        a = s.softmax(-1)
        c = a @ vh
        c_flat = c.transpose(1, 2).reshape(1, -1, q.shape[-1])
        o = att.o_proj(c_flat)
        h1 = o + h0
        ln2 = layer.layernorm_after(h1)
        f1 = mlp.fc1(ln2)
        g = mlp.activation_fn(f1)
        f2 = mlp.fc2(g)
        h2 = f2 + h1
        hl = vit.layernorm(h2)
        logits = model.classifier(hl[:, 0])
        # backwards
        r_logits = torch.zeros_like(logits)
        r_logits[0, label] = logits[0, label]
        r_hl = torch.zeros_like(hl)
        r_hl[:, 0] = linear(model.classifier, hl[:, 0], logits, r_logits)
        r_h2 = layer_norm(vit.layernorm, h2, hl, r_hl)
        r_f2, r_h1 = f2 * r_h2 / h2, h1 * r_h2 / h2
        r_g = linear(mlp.fc2, g, f2, r_f2)
        r_f1 = r_g  # identity rule
        r_ln2 = linear(mlp.fc1, ln2, f1, r_f1)
        r_h1 = r_h1 + layer_norm(layer.layernorm_after, h1, ln2, r_ln2)
        r_o, r_h0 = o * r_h1 / h1, h0 * r_h1 / h1
        r_c = linear(att.o_proj, c_flat, o, r_o).view(1, -1, HEADS, q.shape[-1] // HEADS).transpose(1, 2)
        ratio = r_c / c  # (1, H, N, dh)
        r_a = 0.5 * torch.einsum("bhij,bhjd,bhid->bhij", a, vh, ratio)
        r_v = 0.5 * torch.einsum("bhij,bhjd,bhid->bhjd", a, vh, ratio)
        r_s = s * (r_a - a * r_a.sum(-1, keepdim=True))
        kept["softmax"] += float(r_a.sum() - r_s.sum())
        ratio_s = r_s / s
        r_q = 0.5 * torch.einsum("bhie,bhje,bhij->bhie", qh, kh, ratio_s) * att.scaling
        r_k = 0.5 * torch.einsum("bhie,bhje,bhij->bhje", qh, kh, ratio_s) * att.scaling
        merge = lambda t: t.transpose(1, 2).reshape(1, -1, q.shape[-1])  # noqa: E731
        r_ln1 = linear(att.q_proj, ln1, q, merge(r_q)) + linear(att.k_proj, ln1, k, merge(r_k)) + linear(att.v_proj, ln1, v, merge(r_v))
        r_h0 = r_h0 + layer_norm(layer.layernorm_before, h0, ln1, r_ln1)
    return r_h0.sum(-1)[0], float(logits[0, label]), kept


@pytest.mark.parametrize("biases", [True, False])
def test_rules_equal_the_explicit_relevance_and_conserve(biases):
    model = tiny_vit(biases)
    x = torch.rand(1, 3, 16, 16)
    before = snapshot(model)
    relevance, scores, _ = token_relevance(model, Inputs(x), TargetSet([ClassLogit(0), ClassLogit(2)], 1))
    assert_same_state(before, snapshot(model))
    for k, label in enumerate((0, 2)):
        expected, score, kept = _explicit(model, x, label)
        torch.testing.assert_close(relevance[k, 0], expected, rtol=1e-3, atol=1e-5)
        assert abs(scores[0, k] - score) < 1e-5
        # conservation: the tokens' relevance plus what the biases and the softmax keep is the score
        assert abs(float(expected.sum()) + kept["bias"] + kept["softmax"] - score) < 1e-4 * max(1.0, abs(score))
        assert abs(float(relevance[k, 0].sum()) + kept["bias"] + kept["softmax"] - score) < 1e-3 * max(1.0, abs(score))
        if not biases:
            assert kept["bias"] == 0 and abs(kept["softmax"]) > 1e-6  # only the softmax keeps relevance


def test_maps_through_the_task_and_refusals():
    model = tiny_vit()
    image = (torch.rand(16, 16, 3) * 255).to(torch.uint8).numpy()
    exp = mmcam.explain_classification(model, image, method="attnlrp", target=[0, 1])
    assert exp.maps.shape == (2, 16, 16) and torch.isfinite(exp.maps).all() and exp.method == "attnlrp"
    one = mmcam.explain_classification(model, image, method="attnlrp", target=1)
    torch.testing.assert_close(one.maps[0], exp.maps[1], rtol=1e-4, atol=1e-5)
    with pytest.raises(MethodError, match="attnlrp"):
        mmcam.CAM(torch.nn.Conv2d(3, 2, 3), method="attnlrp")(torch.zeros(1, 3, 8, 8), [0])


def test_vilt_answers_through_explain_vqa():
    from vl_models import IMAGE, tiny_vilt

    from mmcam.methods.attnlrp import lrp_rules

    model, processor = tiny_vilt(["red", "green", "blue", "yes", "no"])
    handles = lrp_rules(model)  # every layer's query, key and value projections, LayerNorms and activations
    for handle in handles:
        handle.remove()
    assert len(handles) >= 6 * model.config.num_hidden_layers  # q/k/v + two LayerNorms + one GELU per layer
    mmcam.explain_vqa(model, processor, IMAGE, "what color is the circle ?", method="attnlrp")
    before = snapshot(model)
    exp = mmcam.explain_vqa(model, processor, IMAGE, "what color is the circle ?", method="attnlrp")
    assert_same_state(before, snapshot(model))
    assert exp.maps.shape == (1, *IMAGE.shape[:2]) and exp.maps.std() > 0 and exp.method == "attnlrp"


def _zero_biases(model):
    with torch.no_grad():
        for module in model.modules():
            bias = getattr(module, "bias", None)
            if isinstance(bias, torch.nn.Parameter):
                bias.zero_()


def _captioner_conservation(model, pixels, ids, target):
    """``(Σ encoder-token relevance, Σ decoder-token relevance, Σ softmax-kept, score)`` under the
    rules, with the relevance each softmax keeps (Prop. 3.1) computed from its probabilities
    ``A`` and their rule gradient ``g``: ``S = log A + c`` row-wise, ``R_A = ½ A ⊙ g`` (the other
    half is the value's), ``R_S = ½ S ⊙ A ⊙ (g − Σ_j A g)``."""
    from mmcam.engine.attention import eager_attention
    from mmcam.methods.attnlrp import lrp_rules

    with eager_attention(model), torch.enable_grad():
        handles = lrp_rules(model)
        try:
            out = model(pixel_values=pixels, decoder_input_ids=ids, output_hidden_states=True, output_attentions=True)
        finally:
            for handle in handles:
                handle.remove()
        score = target(out)[0, 0]
        attns = [*out.encoder_attentions, *out.decoder_attentions, *out.cross_attentions]
        enc, dec = out.encoder_hidden_states[0], out.decoder_hidden_states[0]
        grads = torch.autograd.grad(score, [enc, dec, *attns])
    kept = 0.0
    for a, g in zip([a.detach() for a in attns], grads[2:]):
        log_a = torch.where(a > 0, a.clamp(min=1e-30).log(), torch.zeros_like(a))
        r_s = log_a * a * (g - (a * g).sum(-1, keepdim=True))
        kept += 0.5 * float((a * g).sum() - r_s.sum())
    return float((enc.detach() * grads[0]).sum()), float((dec.detach() * grads[1]).sum()), kept, float(score.detach())


def test_captioner_rules_conserve_the_word_logit(monkeypatch):
    """A ViT + GPT-2 captioner (GPT-2 fuses query|key|value in ``c_attn``, key|value beside
    ``q_attn`` in cross-attention): with biases zero, image-token + text-token relevance + what
    the softmaxes keep = the word's logit; without the fused slices' factors it is not."""
    from vl_models import tiny_ved

    import mmcam.methods.attnlrp as attnlrp
    from mmcam.targets.text import CaptionTokens

    model, _ = tiny_ved(decoder_layers=2)
    _zero_biases(model)
    pixels, ids = torch.rand(1, 3, 64, 64) * 2 - 1, torch.tensor([[1, 5, 7, 9]])
    target = CaptionTokens([2], [11], log_prob=False)
    before = snapshot(model)
    relevance, scores, _ = token_relevance(model, Inputs({"pixel_values": pixels, "decoder_input_ids": ids}), TargetSet([target], 1))
    assert_same_state(before, snapshot(model))
    enc, dec, kept, score = _captioner_conservation(model, pixels, ids, target)
    assert abs(float(scores[0, 0]) - score) < 1e-5 and relevance.shape == (1, 1, 65)
    assert abs(float(relevance.sum()) - enc) < 1e-4 * max(1.0, abs(enc))
    assert abs(enc) > 1e-3 * abs(score)  # the image takes a real share
    assert abs(enc + dec + kept - score) < 1e-3 * abs(score), (enc, dec, kept, score)
    rule = attnlrp._fused_factors
    monkeypatch.setattr(attnlrp, "_fused_factors", lambda *a: tuple(1.0 for _ in rule(*a)))
    enc, dec, kept, score = _captioner_conservation(model, pixels, ids, target)
    assert abs(enc + dec + kept - score) > 3e-2 * abs(score)  # the rule matters


def test_captioner_maps_through_explain_caption():
    from vl_models import tiny_ved

    model, processor = tiny_ved()
    image = (torch.rand(64, 64, 3) * 255).to(torch.uint8).numpy()
    before = snapshot(model)
    exp = mmcam.explain_caption(model, processor, image, "a red circle", method="attnlrp")
    assert_same_state(before, snapshot(model))
    assert exp.maps.shape == (3, 64, 64) and torch.isfinite(exp.maps).all() and exp.maps.flatten(1).std(1).min() > 0 and exp.method == "attnlrp"
