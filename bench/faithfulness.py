"""What a faithful map costs: Grad-CAM (one forward + one backward) beside captum's occlusion
(hundreds of forwards), gradients, SmoothGrad, Integrated Gradients and KernelSHAP, measured
side by side in one run on the zoo classifier, with the Grad-CAM paper's faithfulness measure
(Spearman rank correlation of each map with the occlusion map) and pointing on exact masks.

    python -m bench.faithfulness [--images 10] [--seed 0] [--threads 1]

Forward and backward passes are *counted* (a hook on the model counts images through its
forward; autograd calls are counted by a hook on the input's gradient), not taken from a
formula. The model's class probability of the predicted class is the explained scalar.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import mmcam  # noqa: E402
from mmcam import zoo  # noqa: E402
from mmcam.data import SceneConfig, generate_scenes  # noqa: E402
from mmcam.evaluation import FRESH_SEEDS  # noqa: E402
from mmcam.explain import prepare_image  # noqa: E402
from mmcam.metrics import pointing_game  # noqa: E402
from mmcam.metrics.attribution import ATTRIBUTIONS, attribution_maps  # noqa: E402
from mmcam.metrics.sanity import spearman  # noqa: E402

CAMS = ("gradcam", "gradcam++", "layercam", "scorecam")


class Counter:
    """Images through ``model.forward`` (summed batch sizes) while attached."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.images = 0
        self.handle = model.register_forward_pre_hook(self._count)

    def _count(self, module, args) -> None:
        self.images += int(args[0].shape[0])

    def close(self) -> None:
        self.handle.remove()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the machine is shared: 1 is steadier)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, processor = zoo.load("classifier")
    scenes = generate_scenes(args.images, FRESH_SEEDS + args.seed, SceneConfig())
    # the default layer, found once (with layers=None each CAM call would first probe the model)
    layers = mmcam.CAM(model, None)(prepare_image(scenes[0].image, processor)[0], [0]).layers
    rows: dict[str, dict[str, float]] = {}
    occlusion_maps, other_maps, masks = [], {}, []
    for scene in scenes:
        x, _ = prepare_image(scene.image, processor)
        with torch.no_grad():
            c = int(model(x).argmax(1))
        masks.append(torch.from_numpy(scene.semantic == c + 1))

        def score_fn(xs, c=c):
            return model(xs).softmax(-1)[:, [c]]

        for name in (*CAMS, *ATTRIBUTIONS):
            counter = Counter(model)
            start = time.perf_counter()
            try:
                if name in CAMS:
                    maps = mmcam.CAM(model, layers, method=name)(x, [c]).maps[0]
                else:
                    maps = attribution_maps(name, score_fn, x[0], 1, seed=args.seed)
            finally:
                counter.close()
            row = rows.setdefault(name, {"ms": 0.0, "forwards": 0})
            row["ms"] += (time.perf_counter() - start) * 1000
            row["forwards"] += counter.images
            if name == "occlusion":
                occlusion_maps.append(maps)
            other_maps.setdefault(name, []).append(maps)
    occlusion = torch.cat(occlusion_maps)
    n = len(scenes)
    print(f"zoo classifier, {n} fresh scenes (seed {args.seed}), {args.threads} thread(s), 64 px; per image:\n")
    print("| method | ms / image | forward passes / image | × Grad-CAM time | ρ with occlusion | pointing |")
    print("|---|---|---|---|---|---|")
    base = rows["gradcam"]["ms"]
    for name, row in rows.items():
        maps = torch.cat(other_maps[name])
        rho = float(spearman(maps, occlusion).mean())
        hit = float(pointing_game(maps, torch.stack(masks)).mean())
        print(f"| {name} | {row['ms'] / n:.1f} | {row['forwards'] / n:.0f} | {row['ms'] / base:.1f} | {rho:.3f} | {hit:.2f} |")
    print("\nGrad-CAM's backward pass is one batched vector-Jacobian product; captum's gradient methods add one backward per forward batch.")


if __name__ == "__main__":
    main()
