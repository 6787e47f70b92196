"""Generative VLMs: TAM's interference removal and contrastive word targets, hand-checked on
small tensors and on a tiny random-init LLaVA (no downloads)."""

from __future__ import annotations

import pytest
import torch
from modelstate import assert_same_state, snapshot
from PIL import Image
from vlm_models import PHOTO, VOCAB, llava

from mmcam.engine.combine import normalize, upsample
from mmcam.errors import MethodError, TargetError
from mmcam.targets import CaptionTokens
from mmcam.tasks import explain_generation
from mmcam.tasks.generation import ContrastiveTokens, GenerationTask, remove_interference, token_activation_maps

PROMPT = "<image> what color is the circle ?"


@pytest.fixture(scope="module")
def tiny():
    return llava()


def test_interference_removal_by_hand():
    # A = [4, 2, 0, 1]; context maps [2,0,0,0] and [0,0,0,2], equal weights -> I = [1, 0, 0, 1];
    # s = <A, I> / <I, I> = (4 + 1) / 2 = 2.5; relu(A - 2.5 I) = [1.5, 2, 0, 0]
    out = remove_interference(torch.tensor([4.0, 2, 0, 1]), torch.tensor([[2.0, 0, 0, 0], [0, 0, 0, 2]]), torch.tensor([3.0, 3.0]))
    assert out.tolist() == [1.5, 2.0, 0.0, 0.0]
    # no context (or zero weights): the token's own map, clipped at 0
    assert remove_interference(torch.tensor([1.0, -2]), torch.zeros(0, 2), torch.zeros(0)).tolist() == [1.0, 0.0]
    assert remove_interference(torch.tensor([1.0, 3]), torch.ones(1, 2), torch.zeros(1)).tolist() == [1.0, 3.0]


def test_token_activation_maps_by_hand():
    # input ids [img, img, w5, w6], image id 1, vocab 8; the answer token 7 is predicted at position 3
    logits = torch.zeros(4, 8)
    logits[:2, 5] = torch.tensor([2.0, 0.0])  # word 5's map over the two image tokens
    logits[:2, 6] = torch.tensor([0.0, 4.0])  # word 6's map
    logits[:2, 7] = torch.tensor([3.0, 1.0])  # the answer's own map A
    logits[2, 7] = 1.0  # word 6 (input position 3) votes for 7 where it is predicted: position 2
    # word 5 (input position 2) is predicted at position 1, where logit(7) = 1 too
    target = CaptionTokens([3], [7])
    got = token_activation_maps(logits, [0, 1], [1, 1, 5, 6], target, image_token_id=1)
    # weights [1, 1] -> I = 0.5 [2, 0] + 0.5 [0, 4] = [1, 2]; s = (3 + 2) / 5 = 1; relu([2, -1]) = [2, 0]
    assert got.tolist() == [[2.0, 0.0]]
    # a context word with the target's own id is left out: only word 6, I = [0, 4], s = 4 / 16,
    # relu([3 - 0, 1 - 1]) = [3, 0]
    assert token_activation_maps(logits, [0, 1], [1, 1, 7, 6], target, image_token_id=1).tolist() == [[3.0, 0.0]]


def test_contrastive_score_by_hand():
    logits = torch.tensor([[[2.0, 5.0, 1.0, 9.0], [0.0, 0.0, 3.0, 1.0]]])  # (1, 2 positions, 4 tokens)
    target = ContrastiveTokens([0, 1], [0, 2], [[0], [1]], suppress=[3])
    # position 0: token 0 against the best allowed other (token 1, 5; token 3 is suppressed): 2 - 5
    # position 1: token 2 against token 0 (0; token 3 is suppressed): 3 - 0; the log-softmax normaliser cancels
    assert torch.allclose(target(logits), torch.tensor([[-3.0, 3.0]]))
    assert target.competitors(logits[0]) == [1, 0]
    free = ContrastiveTokens([0, 1], [0, 2], [[0], [1]])
    assert torch.allclose(free(logits), torch.tensor([[-7.0, 2.0]])) and free.competitors(logits[0]) == [3, 3]
    merged = ContrastiveTokens([0, 1], [0, 2], [[0, 1]])
    assert torch.allclose(merged(logits), torch.tensor([[-5.0]]))  # a word's tokens summed


def test_tam_and_contrastive_through_explain_generation(tiny):
    model, processor = tiny
    before = snapshot(model)
    tam = explain_generation(model, processor, PHOTO, PROMPT, method="tam")
    con = explain_generation(model, processor, PHOTO, PROMPT, target="contrastive")
    lens_con = explain_generation(model, processor, PHOTO, PROMPT, method="logit-lens", target="contrastive")
    assert_same_state(before, snapshot(model))
    assert tam.method == "tam" and tam.maps.shape == (4, *PHOTO.shape[:2]) and tam.items == con.items
    # recompute from the model's own logits: TAM maps and the contrastive scores
    inputs = dict(processor(images=Image.fromarray(PHOTO), text=PROMPT, return_tensors="pt"))
    answer = tam.meta["token_ids"]
    ids = torch.cat([inputs["input_ids"], torch.tensor([answer[:-1]])], 1)
    with torch.no_grad():
        logits = model(**{**inputs, "input_ids": ids, "attention_mask": torch.ones_like(ids)}).logits[0]
    start, image = inputs["input_ids"].shape[1] - 1, (ids[0] == 4).nonzero().flatten().tolist()
    target = CaptionTokens([start + i for i in range(len(answer))], answer)
    per = token_activation_maps(logits, image, ids[0].tolist(), target, 4)
    want = normalize(upsample(normalize(per.view(1, -1, 4, 4)), (32, 32)))[0]
    frame = GenerationTask(model, processor, PROMPT).prepare(PHOTO).frame  # the processor's resize + crop, undone
    assert torch.allclose(torch.as_tensor(tam.maps), torch.as_tensor(frame.maps_to_photo(want)), atol=1e-5)
    suppress = model.generation_config.suppress_tokens
    lp = logits.log_softmax(-1)
    for k, t in enumerate(answer):
        row = lp[start + k].clone()
        row[[t, *suppress]] = -float("inf")
        assert abs(float(con.scores[k]) - float(lp[start + k, t] - row.max())) < 1e-4
        assert con.meta["competitors"][k] == [VOCAB[int(row.argmax())]]
        assert abs(float(lens_con.scores[k]) - float(con.scores[k])) < 1e-4
    assert con.meta["target"] == "contrastive" and "word_contrastive_scores" in con.meta
    assert (con.scores > 0).all()  # greedy answers beat every allowed competitor


def test_bad_target_and_method_combinations(tiny):
    model, processor = tiny
    with pytest.raises(TargetError, match="log-prob, contrastive"):
        explain_generation(model, processor, PHOTO, PROMPT, target="margin")
    with pytest.raises(MethodError, match="log-prob"):
        explain_generation(model, processor, PHOTO, PROMPT, method="tam", target="contrastive")
