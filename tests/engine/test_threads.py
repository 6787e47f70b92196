"""Concurrent calls on one model: each correct, the model untouched after (one lock per model)."""

from __future__ import annotations

import threading

import torch
from modelstate import assert_same_state, snapshot
from torch import nn

import mmcam
from mmcam.engine.guard import model_lock


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        return self.fc(self.block(self.stem(x)).mean((2, 3)))


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = SmallCNN().train()  # train-mode BatchNorm: a racing call would change its statistics
    model.stem.eval()
    model.stem[0].weight.requires_grad_(False)  # a user-frozen parameter
    model.fc.register_forward_hook(lambda m, i, o: None)  # the user's own hook
    return model


def _run_threads(work, n_threads: int = 2) -> list[BaseException]:
    errors: list[BaseException] = []
    start = threading.Barrier(n_threads)

    def body(index: int) -> None:
        start.wait()
        try:
            work(index)
        except BaseException as error:  # noqa: BLE001 - reported by the test
            errors.append(error)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_two_threads_fifty_calls_each_match_sequential_calls():
    model = _model()
    inputs = [torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    targets = [[0, 3], [1], [2, 4], [3]]
    methods = ["gradcam", "layercam"]
    expected = {(m, i): mmcam.CAM(model, "block", method=m, grad_mode="loop")(inputs[i], targets[i]) for m in methods for i in range(4)}
    before = snapshot(model)
    results: dict[int, list] = {0: [], 1: []}

    def work(thread: int) -> None:
        cams = {m: mmcam.CAM(model, "block", method=m, grad_mode="loop") for m in methods}  # per thread
        shared_default = mmcam.CAM(model, None)  # default layer chosen by probing, racing the other thread
        for call in range(50):
            i = (call + thread) % 4
            m = methods[(call // 4 + thread) % 2]
            results[thread].append((m, i, cams[m](inputs[i], targets[i])))
            if call % 10 == 0:
                assert shared_default(inputs[i], targets[i]).layers == ["block"]

    errors = _run_threads(work)
    assert not errors, errors
    assert len(results[0]) == len(results[1]) == 50
    for thread in (0, 1):
        for m, i, exp in results[thread]:
            torch.testing.assert_close(exp.raw, expected[(m, i)].raw)
            torch.testing.assert_close(exp.scores, expected[(m, i)].scores)
    assert_same_state(before, snapshot(model))


def test_one_cam_shared_by_threads_and_guided_backprop():
    model = _model()
    x = torch.rand(1, 3, 16, 16)
    cam = mmcam.CAM(model, "block")
    guided = mmcam.GuidedBackprop(model)
    reference_cam, reference_guided = cam(x, [1]).raw, guided(x, [1]).pixels
    before = snapshot(model)

    def work(thread: int) -> None:
        for _ in range(20):
            if thread == 0:
                torch.testing.assert_close(cam(x, [1]).raw, reference_cam)
            else:
                torch.testing.assert_close(guided(x, [1]).pixels, reference_guided)

    errors = _run_threads(work)
    assert not errors, errors
    assert_same_state(before, snapshot(model))


def test_lock_is_per_model_reentrant_and_dropped_with_the_model():
    import gc
    import weakref

    a, b = SmallCNN(), SmallCNN()
    assert model_lock(a) is model_lock(a) and model_lock(a) is not model_lock(b)
    with model_lock(a):
        with model_lock(a):  # re-entrant: GuidedGradCAM runs a CAM inside the same lock
            pass
    ref = weakref.ref(a)
    del a
    gc.collect()
    assert ref() is None  # the lock table holds models weakly


def test_untouched_restores_what_task_code_changes_and_locks():
    """``untouched`` is for task code that runs the model outside CAM (a prediction forward
    of a train-mode model, an eval-mode toggle, a failure midway)."""
    from mmcam.engine.guard import untouched

    model = _model()
    before = snapshot(model)
    try:
        with untouched(model):
            with torch.no_grad():
                model(torch.rand(2, 3, 16, 16))  # train-mode BatchNorm updates its statistics
            model.eval()
            model.fc.weight.requires_grad_(False)
            raise KeyError("midway")
    except KeyError:
        pass
    assert_same_state(before, snapshot(model))
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with untouched(model):
            held.set()
            release.wait(5)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(5)
    assert not model_lock(model).acquire(timeout=0.05)  # another thread's call waits
    release.set()
    thread.join()
    assert model_lock(model).acquire(timeout=1)
    model_lock(model).release()
