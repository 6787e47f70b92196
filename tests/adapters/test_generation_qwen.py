"""Qwen2-VL: dynamic resolution (a non-square photo gives a non-square grid of 2x2-merged
patches), the merge-window token order, one map per answer word on the photo."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from modelstate import assert_same_state, snapshot
from PIL import Image
from vlm_models import PHOTO, QWEN_VOCAB, qwen2_vl

import mmcam
from mmcam.adapters.vlm import MergedPatches, layout_for
from mmcam.engine.combine import normalize, upsample
from mmcam.errors import InputError
from mmcam.targets import CaptionTokens
from mmcam.tasks import explain_generation, explain_vqa

PROMPT = "<|vision_start|> <|image_pad|> <|vision_end|> what color is the circle ?"


@pytest.fixture(scope="module")
def tiny():
    return qwen2_vl()


def test_merged_patches_undo_the_window_order():
    """4x4 patches, 2x2 windows: the blocks hold window (0,0)'s patches 0,1,4,5 first, the
    merger one token per window, row-major."""
    order = [0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15]  # patch index of each block token
    blocks = torch.tensor(order, dtype=torch.float32)[:, None]
    grid = MergedPatches((4, 4), 2)(blocks, None)
    assert grid.shape == (1, 1, 4, 4) and grid.flatten().tolist() == list(range(16))
    merged = MergedPatches((4, 4), 2)(torch.arange(4.0)[:, None], None)
    assert merged.flatten().tolist() == [0, 1, 2, 3] and merged.shape == (1, 1, 2, 2)


def test_non_square_photo_one_map_per_word_and_tokens_equal_generate(tiny):
    model, processor = tiny
    before = snapshot(model)
    exp = explain_vqa(model, processor, PHOTO, "what color is the circle ?")  # 48 x 64 photo
    assert_same_state(before, snapshot(model))
    inputs = processor(images=Image.fromarray(PHOTO), text=PROMPT, return_tensors="pt")
    assert inputs["image_grid_thw"].tolist() == [[1, 6, 8]]  # 48 x 64 px kept: 6 x 8 patches
    with torch.no_grad():
        generated = model.generate(**inputs)[0, inputs["input_ids"].shape[1] :].tolist()
    assert exp.meta["token_ids"] == generated and exp.meta["teacher_forced_argmax_matches"]
    assert exp.tokens == [QWEN_VOCAB[t] for t in generated] and exp.meta["prompt"] == PROMPT
    assert " ".join(exp.items) == " ".join(exp.tokens).replace(" ##", "")  # sub-words merged
    assert exp.meta["image_tokens"]["grid"] == [3, 4] and exp.meta["image_tokens"]["count"] == 12
    assert exp.maps.shape == (len(exp.items), 48, 64) and exp.layers == ["model.visual.blocks.1"]
    wide = explain_generation(model, processor, np.zeros((40, 120, 3), np.uint8) + PHOTO[:40, :1], PROMPT)
    assert wide.maps.shape == (len(wide.items), 40, 120) and wide.meta["image_tokens"]["grid"][1] > 2 * wide.meta["image_tokens"]["grid"][0]


def test_k_words_at_once_equal_one_at_a_time(tiny):
    model, processor = tiny
    exp = explain_generation(model, processor, PHOTO, PROMPT, answer="red circle blue", layers="model.visual.merger")
    layout = layout_for(model)
    prepared = layout.prepare(processor, Image.fromarray(PHOTO), PROMPT)
    tokens = layout.image_tokens(prepared.inputs)
    answer = [QWEN_VOCAB.index(w) for w in ("red", "circle", "blue")]
    t = prepared.inputs["input_ids"].shape[1]
    ids = torch.cat([prepared.inputs["input_ids"], torch.tensor([answer[:-1]])], 1)
    forced = {
        **prepared.inputs,
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "mm_token_type_ids": torch.cat([prepared.inputs["mm_token_type_ids"], torch.zeros(1, 2, dtype=torch.long)], 1),
    }
    cam = mmcam.CAM(model, "model.visual.merger", method=exp.method, reshape=layout.reshape(tokens))
    positions = [t - 1, t, t + 1]
    together = cam(forced, [CaptionTokens(positions, answer)], input_size=tokens.input_size)
    assert together.raw.shape == (1, 3, 3, 4)
    for k in range(3):
        alone = cam(forced, [CaptionTokens(positions, answer, [[k]])], input_size=tokens.input_size)
        torch.testing.assert_close(alone.raw[0, 0], together.raw[0, k])
    torch.testing.assert_close(prepared.frame.maps_to_photo(together.maps[0]), exp.maps)


def test_bright_patch_lands_in_its_merged_cell_and_back_on_the_photo(tiny):
    """The processor's own flattened patches (the blocks' order), each patch's mean brightness
    through the layout: the bright square in the photo's lower right is the lower-right merged
    cell, and back on the photo the peak is there."""
    model, processor = tiny
    photo = np.full((48, 64, 3), 10, np.uint8)
    photo[34:46, 50:62] = 255
    layout = layout_for(model)
    prepared = layout.prepare(processor, Image.fromarray(photo), PROMPT)
    tokens = layout.image_tokens(prepared.inputs)
    brightness = prepared.inputs["pixel_values"].mean(1, keepdim=True)  # (N patches, 1), block order
    patches = layout.reshape(tokens)(brightness, None)[0, 0]  # (6, 8)
    assert divmod(int(patches.argmax()), 8)[0] >= 4 and divmod(int(patches.argmax()), 8)[1] >= 6
    merged = brightness.view(-1, 4, 1).mean(1)  # one token per 2x2 window, as the merger groups them
    cells = layout.reshape(tokens)(merged, None)[0, 0]
    assert cells.shape == (3, 4) and divmod(int(cells.argmax()), 4) == (2, 3)
    on_photo = prepared.frame.maps_to_photo(upsample(normalize(cells)[None, None], tokens.input_size)[0])[0]
    y, x = divmod(int(on_photo.argmax()), 64)
    assert y >= 32 and x >= 48


def test_bad_input(tiny):
    model, processor = tiny
    with pytest.raises(InputError, match="no image placeholder"):
        explain_generation(model, processor, PHOTO, "what color ?")
    with pytest.raises(InputError, match="2 image placeholders"):
        explain_generation(model, processor, PHOTO, PROMPT + " <|image_pad|>")
