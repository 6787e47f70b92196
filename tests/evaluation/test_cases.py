"""Per-task evaluation cases on the zoo models: ground truth linked from the COCO file read
through pycocotools, score functions consistent with the explained scalars, maps in [0, 1]."""

from __future__ import annotations

import pytest
import torch

from mmcam import zoo
from mmcam.data import SceneConfig, generate_grids, generate_scenes, load_coco, write_coco
from mmcam.evaluation.cases import prepare


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    scenes = generate_scenes(4, 10**9 + 11, SceneConfig())
    return load_coco(write_coco(scenes, tmp_path_factory.mktemp("coco")))


def _check(case):
    k, (h, w) = len(case.items), case.pixels.shape[-2:]
    assert case.masks.shape == case.others.shape == (k, h, w) and case.masks.dtype == torch.bool
    assert case.masks.flatten(1).any(1).all()
    assert not (case.masks & case.others).any()  # the explained object is never counted among the others
    with torch.no_grad():
        p = case.probabilities(case.pixels[None].expand(2, -1, -1, -1))
    assert p.shape == (2, k) and ((0 <= p) & (p <= 1)).all()
    maps = case.explain_model(case)
    assert maps.shape == (k, h, w) and maps.min() >= 0 and maps.max() <= 1 + 1e-6
    return p[0]


def _cases(task, model, processor, samples):
    cases = []
    for sample in samples:
        for c in prepare(task, model, processor, sample):
            # what the interventions need: the photo encodes to the same input, every object's
            # mask in annotation order, and the referred objects' union is the item's mask
            assert torch.equal(c.encode(sample.load_image()), c.pixels)
            assert c.objects.shape == (len(sample.masks), *c.pixels.shape[-2:])
            assert all(torch.equal(c.objects[r].any(0), m) for r, m in zip(c.referred, c.masks))
            cases.append(c)
    assert cases, f"no {task} case with ground truth in the sample"
    for c in cases:
        c.explain_model = lambda case, m=model: case.explain(m, "gradcam")
    return cases


def test_classify_links_the_predicted_class(samples):
    model, processor = zoo.load("classifier")
    for case, _sample in zip(_cases("classify", model, processor, samples), samples):
        p = _check(case)
        with torch.no_grad():
            probs = model(case.pixels[None]).softmax(-1)[0]
        assert p.item() == pytest.approx(probs.max().item(), rel=1e-5)  # the explained class is the predicted one


def test_detect_links_each_box_to_its_instance(samples):
    model, _ = zoo.load("yolo")
    for case in _cases("detect", model, None, samples):
        p = _check(case)
        assert (p > 0.25).all()  # kept boxes: their class probability is above the default conf


def test_segment_links_the_region_class(samples):
    model, processor = zoo.load("segmenter")
    for case in _cases("segment", model, processor, samples):
        _check(case)


def test_caption_links_words_to_objects(samples):
    model, processor = zoo.load("captioner")
    cases = _cases("caption", model, processor, samples)
    for case in cases:
        p = _check(case)
        assert (p > 0.5).all()  # exactly generated captions: each linked word is the greedy choice


def test_action_links_the_decisive_cells():
    model, _ = zoo.load("qnet")
    states = generate_grids(3, 10**9 + 5)
    for state in states:
        (case,) = prepare("action", model, None, state)
        case.explain_model = lambda c: c.explain(model, "gradcam")
        _check(case)
        assert torch.equal(case.masks[0], torch.from_numpy(state.decisive_mask()))
        assert case.masks[0][torch.from_numpy(state.obs[0] > 0)].all()  # the agent is decisive
