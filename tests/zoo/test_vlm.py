"""The zoo generative VLM (``zoo:vlm``): a LLaVA trained on the scenes, loaded offline, answering
and captioning as text through the LLaVA path; its training loss and vision-tower init."""

from __future__ import annotations

import pytest
import torch

import mmcam
from mmcam import zoo
from mmcam.data import SceneConfig, generate_scenes

SEED = 424_242  # never a training seed (seed * 1_000_003 + step)


@pytest.fixture(scope="module")
def vlm():
    if "vlm" not in zoo.available():
        pytest.skip("zoo:vlm not shipped in this build")
    return zoo.load("vlm")


def test_shared_image_prefix_loss_equals_the_models_own_loss():
    """The recipe encodes each image (and the decoder over its tokens) once per scene; the loss
    is the model's own on the full ``[image tokens] + prompt + answer`` sequences."""
    from mmcam.zoo.models import build
    from mmcam.zoo.recipes.common import images
    from mmcam.zoo.recipes.vlm import _loss, _rows, llava_arch, vlm_processor, vlm_words

    torch.manual_seed(0)
    words = vlm_words()
    arch = llava_arch(words)
    arch["vision_config"]["num_hidden_layers"] = arch["text_config"]["num_hidden_layers"] = 1  # the shipped widths, fewer blocks
    model = build({"architecture": arch})
    tok = vlm_processor(words).tokenizer
    scenes = generate_scenes(2, 5, SceneConfig())
    ids, labels, mask, owners = _rows(scenes, tok, tok.eos_token_id)
    n, grid, image = len(owners), 64, arch["image_token_id"]
    with torch.no_grad():
        shared = _loss(model, images(scenes), ids, labels, mask, owners)
        full = model(
            input_ids=torch.cat([torch.full((n, grid), image), ids], 1),
            pixel_values=images(scenes)[owners],
            attention_mask=torch.cat([torch.ones(n, grid, dtype=torch.long), mask], 1),
            labels=torch.cat([torch.full((n, grid), -100), labels], 1),
        ).loss
    assert abs(float(shared) - float(full)) < 1e-5


def test_loads_as_llava_with_its_processor_and_fp16_weights(vlm):
    from safetensors import safe_open
    from transformers import LlavaForConditionalGeneration, LlavaProcessor

    model, processor = vlm
    assert isinstance(model, LlavaForConditionalGeneration) and isinstance(processor, LlavaProcessor) and not model.training
    with safe_open(str(zoo.WEIGHTS_DIR / "vlm.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}
    assert (zoo.WEIGHTS_DIR / "vlm.safetensors").stat().st_size <= 4 * 2**20
    # the vision tower started from the zoo captioner's ViT (recorded in the config)
    assert "captioner" in zoo.config("vlm")["data"]["init"]


def test_answers_and_captions_fresh_scenes(vlm):
    """20 fresh scenes (a few dozen questions per type): the recorded accuracy holds within 0.2
    and the caption bar within 0.15 (the full measurement: ``python -m mmcam.zoo.quality --models vlm``)."""
    from mmcam.zoo.recipes.vlm import vlm_quality

    model, processor = vlm
    quality = vlm_quality(model, processor, n=20, seed=SEED)
    recorded = zoo.config("vlm")["metrics"]
    assert set(quality["per_type"]) == {"color", "shape", "count", "position", "existence"}
    for kind, acc in quality["per_type"].items():
        assert abs(acc - recorded["per_type"][kind]) <= 0.2, (kind, acc)
    assert quality["exact_caption"] >= recorded["exact_caption"] - 0.15, quality


def test_explain_vqa_and_caption_through_the_llava_path(vlm):
    model, processor = vlm
    scene = generate_scenes(1, SEED + 1, SceneConfig())[0]
    qa = next(q for q in scene.qa if q.type == "color")
    exp = mmcam.explain_vqa(model, processor, scene.image, qa.question)
    assert exp.items == [qa.answer] and exp.maps.shape == (1, 64, 64) and exp.meta["teacher_forced_argmax_matches"]
    assert exp.meta["image_tokens"] == {"first": 0, "count": 64, "prefix": 0, "grid": [8, 8]}
    assert exp.method == "gae-tower" and exp.layers[:2] == ["language-model self-attention x3", "vision-tower self-attention x3"]  # LLaVA's default
    cap = mmcam.explain_caption(model, processor, scene.image, method="tam")
    assert cap.items == scene.caption_tokens and cap.maps.shape == (len(scene.caption_tokens), 64, 64)
