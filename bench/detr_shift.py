"""Sub-token input shifts for the zoo DETR's box maps (docs/methods.md, issue 16).

On the boxes ``mmcam evaluate --task detect --model zoo:detr`` scores (same fresh scenes, same
kept and matched queries), each method's map averaged over the model input moved by
``round(k p / n)`` px, ``k < n`` per axis (``p`` pixels per cell, ``n`` phases; edges replicated,
:mod:`mmcam.engine.shifts`): every pass explains the same queries and classes (``candidates=``),
each pass's map moved back, the ``n²`` maps averaged and min-max scaled. ``p = 16`` is the
encoder's token (4×4 grid at 64 px); ``@4`` rows use ``p = 4``, the cell of the stride-4 stage
LayerCAM and ODAM read; ``gae-detr|c`` rows resample the token grid with token ``(i, j)`` at input pixel
``(c + 16 i, c + 16 j)`` (``ShiftedDetrRelevance(centre=c)``; plain bilinear upsampling is ``c = 7.5``). Each pass is a full ``explain_detections`` call on the shifted input, so
the rows are what the task returns; the ``gae-detr`` rows are also checked against the registered
``gae-detr-shift`` (``ShiftedDetrRelevance(phases=n)``) on the first case.

Columns: exact pointing, ±4 px pointing, mass (share of the map on the object), ``ρ random``
(Spearman of the map between the trained DETR and the same DETR with every layer re-initialised,
the last step of the cascading randomization; the same shifts on both).

    python -m bench.detr_shift --images 60            # and --seed 1, --shift
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

PHASES = (1, 2, 3, 4)


def _passes(task, prepared, shifts):
    """``{(dy, dx): (K, h, w)}``: the task's maps of the input moved by each shift, moved back
    to the photo's pixels."""
    from mmcam.engine.shifts import shifted, unshifted

    x = prepared.inputs["pixel_values"]
    (H, W), (h, w) = x.shape[-2:], prepared.photo.shape[:2]
    out = {}
    for dy, dx in shifts:
        moved = replace(prepared, inputs={**prepared.inputs, "pixel_values": shifted(x, dy, dx)})
        maps = task.explain([moved])[0].maps
        out[(dy, dx)] = unshifted(maps, round(dy * h / H), round(dx * w / W))
    return out


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra, rb = a.flatten().argsort().argsort().float(), b.flatten().argsort().argsort().float()
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shift", action="store_true", help="the shifted scenes of mmcam evaluate --shift")
    parser.add_argument("--method", default="gae-detr,layercam,odam,layercam@4,odam@4")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from mmcam.engine.combine import normalize
    from mmcam.engine.shifts import shift_grid
    from mmcam.evaluation.cases import _PREPARE, _fit
    from mmcam.evaluation.runner import _samples
    from mmcam.methods import ShiftedDetrRelevance
    from mmcam.metrics import pointing_game
    from mmcam.tasks.detection import DetectionTask
    from mmcam.zoo import load

    model, processor = load("detr")
    model.eval()
    randomized = copy.deepcopy(model)
    torch.manual_seed(0)
    for module in randomized.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    rows: dict[str, list[float]] = {}
    items, checked = 0, False
    with tempfile.TemporaryDirectory() as work:
        for sample in _samples("detect", None, None, args.images, args.seed, Path(work), args.shift)[0]:
            for case in _PREPARE["detect"](model, processor, sample):
                free = dict(zip(case.explain.__code__.co_freevars, (c.cell_contents for c in case.explain.__closure__)))
                image, candidates = free["image"], (free["indices"], free["classes"])
                size = tuple(case.masks.shape[-2:])
                for spec in args.method.split(","):
                    name, _, cell = spec.partition("@")
                    name, _, centre = name.partition("|")
                    method = ShiftedDetrRelevance(1, float(centre)) if centre else name  # gae-detr|c: tokens at pixel c + 16 i
                    patch = (int(cell or 16),) * 2
                    grids = {n: shift_grid(patch, n) for n in PHASES}
                    union = sorted({s for g in grids.values() for s in g})
                    passes = []
                    for m in (model, randomized):
                        task = DetectionTask(m, processor=processor, method=method, candidates=candidates)
                        passes.append(_passes(task, task.prepare(image), union))
                    for n, grid in grids.items():
                        maps = [_fit(normalize(torch.stack([p[s] for s in grid]).mean(0)), size) for p in passes]
                        if name == "gae-detr" and n > 1 and not checked:  # the registered method = this loop
                            registered = ShiftedDetrRelevance(n, float(centre) if centre else None)
                            own = _fit(DetectionTask(model, processor=processor, method=registered, candidates=candidates)(image).maps, size)
                            torch.testing.assert_close(own, maps[0], atol=1e-5, rtol=0)
                            checked = n == PHASES[-1] and bool(centre)
                        row = rows.setdefault(f"{spec} n={n} ({len(grid)} passes)", [0.0] * 4)
                        for k in range(len(case.items)):
                            m, mask = maps[0][k], case.masks[k : k + 1]
                            row[0] += float(pointing_game(m[None], mask))
                            row[1] += float(pointing_game(m[None], mask, tolerance=4))
                            row[2] += float(m[mask[0]].sum() / m.sum().clamp(min=1e-12))
                            row[3] += _spearman(m, maps[1][k])
                items += len(case.items)
    print(f"{items} boxes, seed {args.seed}{' (--shift)' if args.shift else ''}\n\n| maps | pointing | ±4 px | mass | ρ random |\n|---|---|---|---|---|")
    for name, (p, t, mass, rho) in rows.items():
        print(f"| {name} | {p / items:.3f} | {t / items:.3f} | {mass / items:.3f} | {rho / items:.2f} |")


if __name__ == "__main__":
    main()
