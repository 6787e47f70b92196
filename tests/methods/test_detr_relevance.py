"""gae-detr: Chefer et al.'s encoder-decoder rules for DETR queries, against hand-worked and
naive references, K boxes at once equal to one at a time, the model left as found."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from detr_models import TINY, tiny_detr, tiny_resnet
from modelstate import assert_same_state, snapshot

import mmcam
from mmcam.engine.guard import transient_capture_hooks
from mmcam.errors import MethodError
from mmcam.methods.detr_relevance import query_relevance
from mmcam.targets import DetectionBoxScore
from mmcam.tasks import explain_detections

transformers = pytest.importorskip("transformers")

IMAGE = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def detr():
    return tiny_detr()


def test_rules_on_hand_worked_matrices():
    """One head, two image tokens, two queries, one encoder and one decoder layer, by hand:
    Ā_e = [[1,0],[0,0]] → R^{ii} = R̄^{ii} = [[2,0],[0,1]]; Ā_q = [[0,1],[0,0]] → R^{qq} =
    R̄^{qq} = [[1,1],[0,1]], R^{qi} stays 0; Ā_c = [[.6,.4],[0,.8]] →
    R^{qi} = (R̄^{qq})ᵀ Ā_c R̄^{ii} = [[1,0],[1,1]] [[.6,.4],[0,.8]] [[2,0],[0,1]] = [[1.2,.4],[1.2,1.2]]."""
    t = lambda rows: torch.tensor(rows, dtype=torch.float64)[None, None]  # noqa: E731  (B=1, H=1, ., .)
    enc, enc_grad = t([[0.5, 0.5], [0.25, 0.75]]), t([[2.0, 0.0], [0.0, -1.0]])[None]
    dec, dec_grad = t([[0.5, 0.5], [0.5, 0.5]]), t([[0.0, 2.0], [0.0, 0.0]])[None]
    cross, cross_grad = t([[0.6, 0.4], [0.2, 0.8]]), t([[1.0, 1.0], [-1.0, 1.0]])[None]
    for query, expected in ((0, [1.2, 0.4]), (1, [1.2, 1.2])):
        got = query_relevance([enc], [enc_grad], [dec], [dec_grad], [cross], [cross_grad], torch.tensor([[query]]))
        torch.testing.assert_close(got[0, 0], torch.tensor(expected, dtype=torch.float64))


def _naive(model, inputs, query, label):
    """The rules written out one box at a time with explicit per-head, per-row loops."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(True)
    saved = [(m.config, m.config._attn_implementation_internal) for m in model.modules() if hasattr(m, "config")]
    model.set_attn_implementation("eager")
    try:
        with transient_capture_hooks(model):  # transformers hooks a model on its first output_attentions call
            out = model(**inputs, output_attentions=True)
        maps = list(out.encoder_attentions) + list(out.decoder_attentions) + list(out.cross_attentions)
        grads = torch.autograd.grad(out.logits[0, query, label], maps)
    finally:
        for config, value in saved:
            config._attn_implementation_internal = value
        for p, flag in flags:
            p.requires_grad_(flag)

    def bar(a, g):  # E_h[(∇A ⊙ A)⁺], head by head
        heads = a.shape[1]
        return sum((g[0, h] * a[0, h]).clamp(min=0) for h in range(heads)) / heads

    def norm(r):
        out = r.clone()
        for i in range(r.shape[0]):
            row = r[i] - torch.eye(r.shape[0])[i]
            out[i] = (row / row.sum() if row.sum() > 0 else torch.zeros_like(row)) + torch.eye(r.shape[0])[i]
        return out

    n_enc, n_dec = len(out.encoder_attentions), len(out.decoder_attentions)
    maps, grads = [m.detach() for m in maps], list(grads)
    n, q = maps[0].shape[-1], maps[n_enc].shape[-1]
    r_ii, r_qq, r_qi = torch.eye(n), torch.eye(q), torch.zeros(q, n)
    for layer in range(n_enc):
        r_ii = r_ii + bar(maps[layer], grads[layer]) @ r_ii
    for layer in range(n_dec):
        a = bar(maps[n_enc + layer], grads[n_enc + layer])
        r_qq, r_qi = r_qq + a @ r_qq, r_qi + a @ r_qi
        c = bar(maps[n_enc + n_dec + layer], grads[n_enc + n_dec + layer])
        r_qi = r_qi + norm(r_qq).T @ c @ norm(r_ii)
    return r_qi[query]


def test_queries_equal_the_naive_rules_and_k_at_once(detr):
    model, processor = detr
    before = snapshot(model)
    exp = explain_detections(model, IMAGE, processor=processor, conf=0.3, method="gae-detr")
    assert_same_state(before, snapshot(model))
    implementation = model.config._attn_implementation
    queries, classes = exp.meta["raw_indices"], exp.meta["class_ids"]
    assert len(queries) >= 2 and exp.maps.shape == (len(queries), 64, 64) and exp.method == "gae-detr"
    assert torch.isfinite(exp.maps).all() and (exp.maps.flatten(1).std(1) > 0).all()
    inputs = processor(images=IMAGE, return_tensors="pt")
    raw = mmcam.CAM(model, method="gae-detr", reshape=model_reshape(model, inputs))(inputs, DetectionBoxScore(queries, classes)).raw[0]  # (K, 4, 4)
    for k, (query, label) in enumerate(zip(queries, classes)):
        torch.testing.assert_close(raw[k].flatten(), _naive(model, inputs, query, label).clamp(min=0), rtol=1e-4, atol=1e-6)
        one = explain_detections(model, IMAGE, processor=processor, method="gae", candidates=([query], [label]))
        torch.testing.assert_close(one.maps[0], exp.maps[k], rtol=1e-4, atol=1e-5)
    assert_same_state(before, snapshot(model))
    assert model.config._attn_implementation == implementation


def model_reshape(model, inputs):
    from mmcam.adapters.detr import EncoderGrid, layers_and_grid

    return EncoderGrid(layers_and_grid(model, inputs)[1])


def test_refused_where_there_is_no_query_cross_attention(detr):
    torch.manual_seed(0)
    config = transformers.RTDetrConfig(
        backbone_config=tiny_resnet(transformers.RTDetrResNetConfig, ("stage2", "stage3", "stage4")),
        use_pretrained_backbone=False,
        encoder_hidden_dim=32,
        encoder_in_channels=[32, 64, 128],
        feat_strides=[8, 16, 32],
        decoder_in_channels=[32, 32, 32],
        num_feature_levels=3,
        **TINY,
    )
    with pytest.raises(MethodError, match="DetrForObjectDetection"):
        explain_detections(transformers.RTDetrForObjectDetection(config), IMAGE, method="gae-detr")
    with pytest.raises(MethodError, match="gae-detr"):
        mmcam.CAM(torch.nn.Conv2d(3, 2, 3), method="gae-detr")(torch.zeros(1, 3, 8, 8), [0])
