"""Which part of ``gae-tower`` gives its pointing on the zoo VLM: the rollout through the language
model alone (``gae``), through the vision tower too (normalised ``R̄`` as in the method, or the
plain ``R``), one pass or averaged over the four half-patch input shifts — and LayerCAM (the old
default) with the same shifts, so the shifts' share is measured on a CAM too.

    python -m bench.vlm_gae --images 60
    python -m bench.vlm_gae --images 60 --phases 3     # + gae-tower with SHIFT_PHASES = 3 (9 passes)

The items are ``bench.localization``'s (60 textured scenes, seed 31337): the first answer word of
each colour / shape question about one object (``vlm-vqa``) and the colour / shape words of
exactly generated captions (``vlm-caption``); exact pointing (the map's maximum on the object).
"""

from __future__ import annotations

import argparse
import time

import torch

import mmcam
from mmcam import zoo
from mmcam.data import COLORS, SHAPES, SceneConfig, generate_scenes
from mmcam.engine.combine import normalize, upsample
from mmcam.engine.shifts import shifted as _shifted
from mmcam.engine.shifts import unshifted as _unshifted
from mmcam.methods.attention import normalized
from mmcam.metrics import localization_table
from mmcam.targets import CaptionTokens
from mmcam.tasks.caption import CAPTION_PROMPT
from mmcam.tasks.generation import GenerationTask, _teacher_forced, chat_prompt
from mmcam.tasks.generation_gae import GAE_TOWER, gae_maps, lm_relevance

PHASES = 0  # --phases: one more row, gae-tower at that many shifts per axis


def _grid_map(image: torch.Tensor, tokens) -> torch.Tensor:
    return normalize(upsample(tokens.fold(image).clamp(min=0)[None], tokens.input_size))[0]


def _variants(model, task, forced, tokens, target) -> dict[str, torch.Tensor]:
    """Every row's ``(K, H, W)`` maps at the input size for one item."""
    (h, w), (H, W) = tokens.grid, tokens.input_size
    shifts = [(0, 0), (0, W // w // 2), (H // h // 2, 0), (H // h // 2, W // w // 2)]
    rows: dict[str, list[torch.Tensor]] = {}
    cam = mmcam.CAM(model, task.layout.default_layers(model), method="layercam", reshape=task.layout.reshape(tokens))
    for dy, dx in shifts:
        moved = {**forced, "pixel_values": _shifted(forced["pixel_values"], dy, dx)}
        out = lm_relevance(model, moved, target, tower=True)
        image = out.rows[:, tokens.positions]
        extra = out.tower.shape[-1] - image.shape[1]
        padded = torch.cat([image.new_zeros(image.shape[0], extra), image], 1)
        maps = {
            "gae (language model)": _grid_map(image, tokens),
            "gae-tower, plain R": _grid_map((padded[:, None] @ out.tower)[:, 0, extra:], tokens),
            "gae-tower": _grid_map((padded[:, None] @ normalized(out.tower))[:, 0, extra:], tokens),
            "layercam": cam(moved, [target], input_size=tokens.input_size).maps[0],
        }
        for name, m in maps.items():
            if (dy, dx) == (0, 0):
                rows.setdefault(f"{name}, one pass", []).append(m)
            rows.setdefault(f"{name}, 4 half-patch shifts", []).append(_unshifted(m, dy, dx))
    out = {name: normalize(torch.stack(ms).mean(0)) for name, ms in rows.items()}
    if PHASES:
        out[f"gae-tower, {PHASES} phases ({PHASES * PHASES} passes)"] = gae_maps(model, forced, tokens, target, GAE_TOWER, PHASES)[0]
    return out


def _item(model, task, image):
    """``(words, rows)`` of the model's own answer to ``task``'s prompt on ``image``."""
    prepared = task.prepare(image)
    inputs = prepared.inputs
    tokens = task.layout.image_tokens(inputs, prepared.frame)
    start = inputs["input_ids"].shape[1] - 1
    ids = task._answer(inputs, start)
    words = [w.strip() for w in task.tokenizer.convert_ids_to_tokens(ids)]  # the zoo's vocabulary is word-level
    target = CaptionTokens([start + i for i in range(len(ids))], ids)
    rows = _variants(model, task, _teacher_forced(inputs, ids[:-1]), tokens, target)
    return words, {name: prepared.frame.maps_to_photo(m) for name, m in rows.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--seed", type=int, default=31337)
    parser.add_argument("--phases", type=int, default=0, help="also gae-tower with this SHIFT_PHASES (0: no extra row)")
    args = parser.parse_args(argv)
    global PHASES
    PHASES = args.phases
    scenes = generate_scenes(args.images, args.seed, SceneConfig(background="textured"))
    model, processor = zoo.load("vlm")
    caption = GenerationTask(model, processor, chat_prompt(processor, CAPTION_PROMPT), task="caption")
    for kind in ("vlm-vqa", "vlm-caption"):
        start, maps, masks = time.perf_counter(), {}, []
        for s in scenes:
            if kind == "vlm-vqa":
                for q in s.qa:
                    if q.type in ("color", "shape") and len(q.object_ids) == 1:
                        _, rows = _item(model, GenerationTask(model, processor, chat_prompt(processor, q.question), task="vqa"), s.image)
                        for name, m in rows.items():
                            maps.setdefault(name, []).append(m[0])
                        masks.append(torch.from_numpy(s.objects[q.object_ids[0]].mask))
                continue
            words, rows = _item(model, caption, s.image)
            if words != s.caption_tokens:
                continue
            for k, (word, links) in enumerate(zip(s.caption_tokens, s.word_links)):
                if (word in COLORS or word in SHAPES) and links:
                    for name, m in rows.items():
                        maps.setdefault(name, []).append(m[k])
                    masks.append(torch.from_numpy(s.objects[links[0]].mask))
        table = localization_table({k: torch.stack(v) for k, v in maps.items()}, torch.stack(masks), tolerance=4)
        print(f"\n### {kind}: {len(masks)} items, {time.perf_counter() - start:.0f} s\n\n| maps | pointing | ±4 px | mass / chance |\n|---|---|---|---|")
        for name, values in table.items():
            if not name.startswith("baseline:") or name == "baseline:centre":
                print(f"| {name} | {values['pointing']:.3f} | {values['pointing_tol']:.3f} | {values['mass_ratio']:.2f} |")


if __name__ == "__main__":
    main()
