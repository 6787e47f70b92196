"""Which gradient map of the zoo DETR points at a box's object (docs/methods.md, issue 16)?

On the boxes ``mmcam evaluate --task detect --model zoo:detr`` scores (same fresh scenes, same
kept and matched queries), each candidate map of box k's class logit ``y = logits[q_k, c_k]``
and of its predicted box ``b = (cx, cy, w, h)`` (``pred_boxes``, the head's own outputs):

* ``layercam@L``: ``Σ_c ReLU(∂y/∂A^L) ⊙ A^L`` (Jiang et al. 2021) at backbone stage L;
* ``odam@L``: ``ReLU(Σ_c ∂y/∂A^L ⊙ A^L)`` (Zhao & Chan, ICLR 2023; = HiResCAM);
* ``odam-box@L``: ``n(odam_y) · Σ_j n(|Σ_c ∂b_j/∂A ⊙ A|)`` — the class map gated by the summed
  box-coordinate maps (n: scaled to max 1). Not a published rule: an ODAM combination tried here;
* ``gxi``: ``|Σ_c x ⊙ ∂y/∂x|`` at the pixels; ``gae-detr``: Chefer et al.'s query relevance.

Each upsampled bilinearly to the input. Columns: exact pointing, ±4 px pointing, mass (share of
the map on the object), and ``ρ random``: Spearman of |map| between the trained DETR and the
same DETR with every layer re-initialised (the last step of the cascading randomization).

    python -m bench.detr_variants --images 60
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

STAGES = {"stem": "model.backbone.model.embedder.embedder", "s0": "model.backbone.model.encoder.stages.0", "s1": "model.backbone.model.encoder.stages.1"}


def _grads(model, x, indices, classes):
    """Per box: ``{stage: (A, ∂y/∂A, [∂b_j/∂A])}`` and the pixels' ``(x, ∂y/∂x)``."""
    acts = {}
    hooks = [
        model.get_submodule(n).register_forward_hook(lambda m, a, o, k=k: acts.__setitem__(k, o[0] if isinstance(o, tuple) else o)) for k, n in STAGES.items()
    ]
    xx = x[None].clone().requires_grad_(True)
    try:
        out = model(pixel_values=xx)
    finally:
        for h in hooks:
            h.remove()
    found = []
    for q, c in zip(indices, classes):
        coordinates = list(out.pred_boxes[0, q])  # the head's own outputs (cx, cy, w, h)
        tensors = [acts[k] for k in STAGES] + [xx]
        y = torch.autograd.grad(out.logits[0, q, c], tensors, retain_graph=True)
        box = [torch.autograd.grad(t, [acts[k] for k in STAGES], retain_graph=True) for t in coordinates]
        entry = {k: (acts[k][0].detach(), y[i][0], [b[i][0] for b in box]) for i, k in enumerate(STAGES)}
        entry["x"] = (xx[0].detach(), y[-1][0])
        found.append(entry)
    return found


def _maps(entry, size, gae):
    up = lambda m: F.interpolate(m[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]  # noqa: E731
    n = lambda m: m / (m.max() + 1e-12)  # noqa: E731
    maps = {"gae-detr": gae}
    for stage in STAGES:
        a, g, box = entry[stage]
        maps[f"layercam@{stage}"] = up((g.clamp(min=0) * a).sum(0))
        maps[f"odam@{stage}"] = up((g * a).sum(0).clamp(min=0))
        maps[f"odam-box@{stage}"] = n(maps[f"odam@{stage}"]) * sum(n(up((b * a).sum(0).abs())) for b in box)
    x, gx = entry["x"]
    maps["gxi"] = (x * gx).sum(0).abs()
    maps["gae-detr x odam@s0"] = n(gae) * n(maps["odam@s0"])
    return maps


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra, rb = a.flatten().argsort().argsort().float(), b.flatten().argsort().argsort().float()
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from mmcam.evaluation.cases import _PREPARE
    from mmcam.evaluation.runner import _samples
    from mmcam.metrics import pointing_game
    from mmcam.zoo import load

    model, processor = load("detr")
    model.eval()
    randomized = copy.deepcopy(model)
    torch.manual_seed(0)
    for module in randomized.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    rows: dict[str, list[float]] = {}
    items = 0
    with tempfile.TemporaryDirectory() as work:
        for sample in _samples("detect", None, None, args.images, args.seed, Path(work))[0]:
            for case in _PREPARE["detect"](model, processor, sample):
                names = case.explain.__code__.co_freevars
                free = dict(zip(names, (c.cell_contents for c in case.explain.__closure__)))
                indices, classes = free["indices"], free["classes"]
                size = tuple(case.masks.shape[-2:])
                gae, gae_random = case.explain(model, "gae-detr"), case.explain(randomized, "gae-detr")
                trained, chance = _grads(model, case.pixels, indices, classes), _grads(randomized, case.pixels, indices, classes)
                for k in range(len(indices)):
                    maps, random_maps = _maps(trained[k], size, gae[k]), _maps(chance[k], size, gae_random[k])
                    mask = case.masks[k : k + 1]
                    for name, m in maps.items():
                        row = rows.setdefault(name, [0.0, 0.0, 0.0, 0.0])
                        row[0] += float(pointing_game(m[None], mask))
                        row[1] += float(pointing_game(m[None], mask, tolerance=4))
                        row[2] += float(m.clamp(min=0)[mask[0]].sum() / m.clamp(min=0).sum().clamp(min=1e-12))
                        row[3] += _spearman(m.abs(), random_maps[name].abs())
                    items += 1
    print(f"{items} boxes\n\n| map | pointing | ±4 px | mass | ρ random |\n|---|---|---|---|---|")
    for name, (p, t, mass, rho) in sorted(rows.items(), key=lambda kv: -kv[1][0]):
        print(f"| {name} | {p / items:.3f} | {t / items:.3f} | {mass / items:.3f} | {rho / items:.2f} |")


if __name__ == "__main__":
    main()
