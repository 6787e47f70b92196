"""``mmcam.engine.gradients``: batched and looped gradients of K score columns, against
values worked out by hand on a linear map (d (W x)_k / d x = W_k)."""

from __future__ import annotations

import torch

from mmcam.engine.gradients import batched_grads, looped_grads


def _linear_scores():
    w = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, 1.0]])
    x = torch.tensor([[0.2, 0.4, -1.0], [1.0, 1.0, 1.0]], requires_grad=True)
    unused = torch.ones(2, 3, requires_grad=True)
    return x @ w.T, x, unused, w  # scores (B=2, K=2)


def test_batched_and_looped_match_the_hand_values():
    scores, x, _, w = _linear_scores()
    expected = w[:, None, :].expand(2, 2, 3)  # (K, B, 3): row k of W for every image
    (batched,) = batched_grads(scores, [x], retain=True)
    (looped,) = looped_grads(scores, [x])
    torch.testing.assert_close(batched, expected)
    torch.testing.assert_close(looped, expected)


def test_unused_leaves_are_none():
    scores, x, unused, _ = _linear_scores()
    assert batched_grads(scores, [x, unused], retain=True)[1] is None
    assert looped_grads(scores, [x, unused])[1] is None
