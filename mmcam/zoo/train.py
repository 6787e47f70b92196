"""Training recipes for the zoo: ``python -m mmcam.zoo.train NAME [--seed S] [--minutes M]``.

Each recipe (one module per model in :mod:`mmcam.zoo.recipes`) draws fresh scenes from
``mmcam.data`` every step (seeded), trains on CPU, evaluates on scenes from a different
seed, and writes ``weights/NAME.safetensors`` plus ``weights/NAME.json`` (architecture,
preprocessing, labels, seed, metrics, wall time). Training never runs in tests or CI.
"""

from __future__ import annotations

import argparse
import functools
import inspect
from pathlib import Path

import torch

from . import WEIGHTS_DIR
from .recipes import RECIPES

__all__ = ["main", "RECIPES"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=sorted(RECIPES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--minutes", type=float, default=10.0, help="wall-time budget (training stops early at the step cap)")
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None, help="override the recipe's step count (captioner, vqa, detr)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    recipe = RECIPES[args.name]
    if args.steps is not None:
        if "steps" not in inspect.signature(recipe).parameters:
            parser.error(f"--steps: the {args.name} recipe has no step count to override (captioner, vqa and detr do)")
        recipe = functools.partial(recipe, steps=args.steps)
    recipe(args.seed, args.minutes, args.out)


if __name__ == "__main__":
    main()
