"""How far DETR box maps are limited by the encoder's token grid (docs/methods.md).

On the cases ``mmcam evaluate --task detect --model zoo:detr`` scores (same scenes, same
kept and matched boxes), for each method: the exact pointing game on the photo, and the
pointing game *at the encoder's token grid* — the map averaged over each token's cell, and a
hit when the best cell holds any pixel of the box's object mask. A method right at token
level but wrong at pixel level is limited by the grid, not by where it puts its relevance.

    python bench/detr_tokens.py --images 60 --method layercam,gae-detr
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", default="layercam,gae-detr")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from mmcam.adapters.detr import layers_and_grid
    from mmcam.evaluation.cases import _PREPARE
    from mmcam.evaluation.runner import _samples
    from mmcam.metrics import pointing_game
    from mmcam.zoo import load

    model, processor = load("detr")
    methods = args.method.split(",")
    hits = {m: [0, 0] for m in methods}
    items = 0
    with tempfile.TemporaryDirectory() as work:
        for sample in _samples("detect", None, None, args.images, args.seed, Path(work))[0]:
            for case in _PREPARE["detect"](model, processor, sample):
                h, w = case.masks.shape[-2:]
                grid = layers_and_grid(model, {"pixel_values": case.pixels[None]})[1]
                cell = (h // grid[0], w // grid[1])
                items += len(case.items)
                for method in methods:
                    maps = case.explain(model, method)  # (K, H, W)
                    hits[method][0] += float(pointing_game(maps, case.masks).sum())
                    pooled = F.avg_pool2d(maps[:, None], cell)[:, 0].flatten(1)  # (K, cells)
                    covered = F.max_pool2d(case.masks[:, None].float(), cell)[:, 0].flatten(1)
                    hits[method][1] += float(covered.gather(1, pooled.argmax(1, keepdim=True)).sum())
    print(f"{items} boxes, token grid {grid[0]}x{grid[1]} ({cell[0]}x{cell[1]} px cells)")
    print("| maps | pointing (pixels) | pointing (token cells) |\n|---|---|---|")
    for method, (pixel, token) in hits.items():
        print(f"| {method} | {pixel / items:.3f} | {token / items:.3f} |")


if __name__ == "__main__":
    main()
