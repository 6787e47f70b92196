"""Engine benchmark: mmcam vs plain inference vs pytorch-grad-cam vs captum, side by side.

    python -m bench.engine [--rounds 7] [--size 224] [--no-memory]

ResNet-50 (random init; weights do not change the cost) at 224 px, Grad-CAM at ``layer4``:
1 image × 1 target, 8 images × 1 target, 1 image × K=5 and K=20 targets. Every case runs
once per round, rounds interleaved (so background load hits all cases alike), and the
median is reported. Peak memory for batch 8 is measured in fresh subprocesses as the rise
of resident memory during the call (sampled every 0.5 ms).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable

import torch
import torchvision

import mmcam

warnings.filterwarnings("ignore")


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet50().eval()


def _cases(model: torch.nn.Module, size: int) -> dict[str, dict[str, Callable[[], object]]]:
    from captum.attr import LayerGradCam
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    one = torch.randn(1, 3, size, size)
    eight = torch.randn(8, 3, size, size)
    cam = mmcam.CAM(model, "layer4", method="gradcam", grad_mode="auto")
    pgc = GradCAM(model=model, target_layers=[model.layer4])
    captum = LayerGradCam(model, model.layer4)

    def plain(x):
        def run():
            with torch.no_grad():
                model(x)

        return run

    def pgc_loop(x, classes):
        return lambda: [pgc(input_tensor=x, targets=[ClassifierOutputTarget(c)] * len(x)) for c in classes]

    def pgc_repeat(x, classes):  # pytorch-grad-cam's best K-target form: repeat the image K times
        xs = x.repeat(len(classes), 1, 1, 1)
        return lambda: pgc(input_tensor=xs, targets=[ClassifierOutputTarget(c) for c in classes])

    def captum_loop(x, classes):
        return lambda: [captum.attribute(x, target=c) for c in classes]

    k5, k20 = list(range(5)), list(range(20))
    return {
        "1 img x 1 target": {
            "forward (no grad)": plain(one),
            "mmcam": lambda: cam(one, [0]),
            "pytorch-grad-cam": pgc_loop(one, [0]),
            "captum LayerGradCam": captum_loop(one, [0]),
        },
        "8 img x 1 target": {
            "forward (no grad)": plain(eight),
            "mmcam": lambda: cam(eight, [0]),
            "pytorch-grad-cam": pgc_loop(eight, [0]),
            "captum LayerGradCam": captum_loop(eight, [0]),
        },
        "1 img x K=5": {
            "forward (no grad)": plain(one),
            "mmcam": lambda: cam(one, k5),
            "pytorch-grad-cam": pgc_loop(one, k5),
            "pytorch-grad-cam (image repeated K x)": pgc_repeat(one, k5),
            "captum LayerGradCam": captum_loop(one, k5),
        },
        "1 img x K=20": {
            "forward (no grad)": plain(one),
            "mmcam": lambda: cam(one, k20),
            "pytorch-grad-cam": pgc_loop(one, k20),
            "pytorch-grad-cam (image repeated K x)": pgc_repeat(one, k20),
            "captum LayerGradCam": captum_loop(one, k20),
        },
    }


def time_cases(rounds: int, size: int) -> dict[str, dict[str, float]]:
    model = _model()
    cases = _cases(model, size)
    for group in cases.values():  # warm up every path (and mmcam's one-off gradient-mode choice)
        for fn in group.values():
            fn()
            fn()
    samples: dict[str, dict[str, list[float]]] = {g: {n: [] for n in c} for g, c in cases.items()}
    for _ in range(rounds):
        for group, fns in cases.items():
            for name, fn in fns.items():
                start = time.perf_counter()
                fn()
                samples[group][name].append(time.perf_counter() - start)
    return {g: {n: statistics.median(v) for n, v in c.items()} for g, c in samples.items()}


_MEMORY_SNIPPET = """
import ctypes, sys, threading, time, torch, torchvision, warnings
warnings.filterwarnings("ignore")
import mmcam
torch.manual_seed(0)
model = torchvision.models.resnet50().eval()
x = torch.randn(8, 3, {size}, {size})
which = sys.argv[1]
if which == "pgc":
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    pgc = GradCAM(model=model, target_layers=[model.layer4])

def rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096

def run():
    if which == "forward":
        with torch.no_grad():
            model(x)
    elif which == "mmcam":
        mmcam.CAM(model, "layer4")(x, [0])
    elif which == "pgc":
        pgc(input_tensor=x, targets=[ClassifierOutputTarget(0)] * 8)

ctypes.CDLL("libc.so.6").malloc_trim(0)
base, peak, done = rss(), [0], [False]
def sample():
    while not done[0]:
        peak[0] = max(peak[0], rss())
        time.sleep(0.0005)
thread = threading.Thread(target=sample)
thread.start()
run()
done[0] = True
thread.join()
print(max(peak[0], rss()) - base)
"""


def peak_memory_mib(size: int) -> dict[str, float]:
    """Rise of resident memory (MiB) during one batch-8 call, sampled every 0.5 ms, each in a
    fresh process (best of 2)."""
    out = {}
    for which in ("forward", "mmcam", "pgc"):
        runs = []
        for _ in range(2):
            res = subprocess.run([sys.executable, "-c", _MEMORY_SNIPPET.format(size=size), which], capture_output=True, text=True, check=True)
            runs.append(int(res.stdout.strip().splitlines()[-1]) / 2**20)
        out[which] = min(runs)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, resnet50 @ {args.size}px, median of {args.rounds} interleaved rounds")
    times = time_cases(args.rounds, args.size)
    report: dict = {"times_s": times}
    for group, results in times.items():
        fwd, ours = results["forward (no grad)"], results["mmcam"]
        print(f"\n{group}")
        for name, t in results.items():
            extra = ""
            if name == "mmcam":
                extra = f"  = {ours / fwd:.2f}x forward"
            elif name != "forward (no grad)":
                extra = f"  = {t / fwd:.2f}x forward; mmcam is {t / ours:.1f}x faster"
            print(f"  {name:40s} {t * 1000:9.1f} ms{extra}")
    if not args.no_memory:
        mem = peak_memory_mib(args.size)
        report["peak_rss_rise_mib_batch8"] = mem
        print("\npeak memory, batch 8 (rise of resident memory during the call)")
        for name, value in mem.items():
            print(f"  {name:40s} {value:9.1f} MiB  = {value / mem['forward']:.2f}x forward")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)


if __name__ == "__main__":
    main()
