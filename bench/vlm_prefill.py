"""The one-prefill path of generative VLMs (``mmcam.adapters.vlm.shared_prefill``) against the
teacher-forced one, by answer length, interleaved in one process:

    python -m bench.vlm_prefill [--size zoo|idefics3|tiny] [--task caption|vqa] [--lengths 1,2,3,4,6,8] [--rounds 7] [--method layercam]

For each answer length ``T`` (``max_new_tokens=T``; ``zoo`` stops at its own EOS where that comes
first) the same model runs, round after round in turn: ``generate()`` (no-grad), the task call as
it is (``default``: the decode steps' logits for ``T <= GRAPH_STEPS``, else teacher-forced after
dropping the steps' graph), ``two-prefills`` (the path before: ``generate()`` under no-grad, then
the teacher-forced forward) and ``all-steps`` (every length on the decode steps' logits). One
process, so the engine's gradient strategy (timed once per model) is the same for all; the
process CPU time (one torch thread) is the column compared, wall-clock beside it. Prints the
median and spread (min-max) per mode and its ratio to ``generate()``'s median, and the load.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore")
MODES = ("generate", "default", "two-prefills", "all-steps")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="zoo", choices=("zoo", "idefics3", "tiny"))
    parser.add_argument("--task", default="caption", choices=("caption", "vqa"))
    parser.add_argument("--lengths", default="1,2,3,4,6,8")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--method", default="layercam")
    parser.add_argument("--longest-edge", type=int, default=512)
    args = parser.parse_args()
    torch.set_num_threads(1)
    import mmcam.tasks.generation as generation
    from bench.vlm import build
    from mmcam.adapters.vlm import layout_for
    from mmcam.io import load_image

    model, processor, photo, prompt = build(args.size, args.longest_edge, args.task if args.size == "zoo" else "generation")
    inputs = layout_for(model).prepare(processor, load_image(photo), prompt).inputs
    graph_steps, greedy = generation.GRAPH_STEPS, generation.plain_greedy

    def explain(length: int, mode: str) -> list[int]:
        generation.GRAPH_STEPS = 10**6 if mode == "all-steps" else graph_steps
        generation.plain_greedy = (lambda model, kwargs: False) if mode == "two-prefills" else greedy
        try:
            task = generation.GenerationTask(model, processor, prompt, method=args.method, max_new_tokens=length, task=args.task)
            return task(photo).meta["token_ids"]
        finally:
            generation.GRAPH_STEPS, generation.plain_greedy = graph_steps, greedy

    print(f"load average before: {os.getloadavg()}; --size {args.size} --task {args.task} --method {args.method}, one torch thread", flush=True)
    print(f"{'T':>3}{'words':>6}  " + "".join(f"{m + ' CPU ms (spread)':>30}" for m in MODES) + f"{'wall x generate':>34}{'load':>6}")
    for length in (int(t) for t in args.lengths.split(",")):
        if args.size != "zoo":
            model.generation_config.min_new_tokens = length
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=length)[0, inputs["input_ids"].shape[1] :].tolist()
        answer = generation.GenerationTask(model, processor, prompt)._cut(out)
        calls = {
            "generate": lambda length=length: model.generate(**inputs, max_new_tokens=length),
            **{m: (lambda m=m, length=length: explain(length, m)) for m in MODES[1:]},
        }
        for mode in MODES[1:]:  # untimed: the gradient strategy, transformers' first-call work
            assert calls[mode]() == answer, mode
        cpu: dict[str, list[float]] = {m: [] for m in MODES}
        wall: dict[str, list[float]] = {m: [] for m in MODES}
        for _ in range(args.rounds):
            for mode in MODES:
                start, start_cpu = time.perf_counter(), time.process_time()
                if mode == "generate":
                    with torch.no_grad():
                        calls[mode]()
                else:
                    calls[mode]()
                wall[mode].append(time.perf_counter() - start)
                cpu[mode].append(time.process_time() - start_cpu)
        base, base_wall = float(np.median(cpu["generate"])), float(np.median(wall["generate"]))
        cells = "".join(
            f"{f'{np.median(cpu[m]) * 1e3:.1f} ({min(cpu[m]) * 1e3:.0f}-{max(cpu[m]) * 1e3:.0f}) {np.median(cpu[m]) / base:.2f}x':>30}" for m in MODES
        )
        walls = " / ".join(f"{np.median(wall[m]) / base_wall:.2f}" for m in MODES[1:])
        print(f"{length:>3}{len(answer):>6}  {cells}{walls:>34}{os.getloadavg()[0]:>6.1f}", flush=True)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
