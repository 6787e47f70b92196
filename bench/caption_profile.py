"""Where the captioner's explained call spends its time: ``torch.profiler`` around one call.

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD HF_HUB_OFFLINE=1 python -m bench.caption_profile [--rows 10]

The ViT-B/16 + GPT-2 small captioner of :func:`bench.real_sizes.caption_row` (12 words, Grad-CAM),
the gradient mode forced to batched; after a warm-up of each, one profiled call of ``explain_caption``
("mmcam") and one of the previous round's path ("before, batched": GPT-2's ordinary cross-attention
backward, keys projected again, the LM head once per word), each with its wall time and the top
operators by self time.
"""

from __future__ import annotations

import argparse
import os
import time

from torch.profiler import profile

from bench.real_sizes import caption_row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10, help="operators listed per column")
    args = parser.parse_args()
    row, what = caption_row("gradcam", modes=True)
    print(what, "load average", os.getloadavg(), flush=True)
    for column in ("mmcam", "before, batched"):
        row[column]()  # warm-up
        with profile() as prof:
            start = time.perf_counter()
            row[column]()
            seconds = time.perf_counter() - start
        print(f"{column}: {seconds:.2f} s", flush=True)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows), flush=True)
    print("load average after", os.getloadavg())


if __name__ == "__main__":
    main()
