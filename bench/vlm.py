"""Generative VLM benchmark: every word of the answer vs plain ``generate()``.

    python -m bench.vlm [--size smolvlm|idefics3|zoo|tiny] [--words 8] [--rounds 2] [--threads N] [--longest-edge 1024] [--repeat N] [--method M]

Random-init models (no downloads), each mode in its own process so its peak resident memory
(``ru_maxrss``) is its own; the time is the median of ``--rounds`` calls after the model is built (and their spread),
wall-clock and the process's CPU time (``time.process_time``: with ``--threads 1`` the work done,
much less moved by other processes on a loaded machine than the wall-clock):

* ``idefics3``: a random-init ``Idefics3ForConditionalGeneration`` of **SmolVLM-256M's shape**:
  SigLIP tower 768 x 12 blocks at 512-px tiles (patch 16), pixel shuffle 4 (64 tokens a tile),
  Llama decoder 576 x 30 blocks, 9 heads / 3 KV heads, 49,280-word vocabulary; the
  ``Idefics3Processor`` built offline (word-level tokenizer, ``Idefics3ImageProcessor`` from
  kwargs; SmolVLM's own processor needs ``num2words``) splits the photo's longest edge
  ``--longest-edge`` (SmolVLM: 2048; default 1024 here, for time) into 512-px tiles + the thumbnail;
* ``smolvlm``: a ``LlavaForConditionalGeneration`` stand-in at the same tower / decoder sizes at
  384 px (576 image tokens, no pixel shuffle: more image tokens in the LM);
* ``zoo``: ``zoo:vlm`` captioning a scene (its trained answer, cut at EOS).

Modes: ``generate`` (``model.generate`` of ``--words`` new tokens on the processor's inputs);
``explain`` (:func:`mmcam.explain_generation` with the answer given: one teacher-forced forward +
one batched backward, LayerCAM at the default vision block); ``explain+generate`` (the call a
user makes: generate, then explain); ``logit-lens`` (forward-only); ``explain-all-logits``
(``explain`` as before this round: the LM head on every position, no ``logits_to_keep``);
``explain+generate-two-pass`` (the task call as before the shared tower: ``generate()`` and the
explained forward each run the vision tower, ``mmcam.adapters.vlm.shared_tower`` off in that
process); ``explain+generate-two-prefills`` (the task call as before the shared prefill: one
tower pass, but ``generate()`` under no-grad and then the teacher-forced forward,
``mmcam.adapters.vlm.shared_prefill`` off in that process); ``explain+generate-all-steps`` (every
answer scored on the decode steps' logits, ``GRAPH_STEPS`` lifted: the break-even); ``logit-lens+generate`` (forward-only,
the answer generated). Each row gives the median of the rounds and their spread (min-max); ``--repeat N``
runs the list of modes N times, interleaved, and prints every run and each mode's median.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore")

MODES = (
    "generate",
    "explain",
    "explain+generate",
    "logit-lens",
    "explain-all-logits",
    "explain+generate-two-pass",
    "explain+generate-two-prefills",
    "explain+generate-all-steps",
    "logit-lens+generate",
)
SIZES = {
    "smolvlm": dict(
        vision=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, image_size=384, patch_size=16),
        text=dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, intermediate_size=1536, vocab_size=49152),
    ),
    "tiny": dict(
        vision=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=64, patch_size=8),
        text=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, intermediate_size=64, vocab_size=512),
    ),
}
PROMPT = "<image> w1 w2 w3 w4 w5 w6 w7 w8"


def _llava(size: str):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast, SiglipImageProcessor

    shape = SIZES[size]
    words = ["<pad>", "<unk>", "<s>", "</s>", "<image>"] + [f"w{i}" for i in range(shape["text"]["vocab_size"] - 5)]
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>", extra_special_tokens=["<image>"]
    )
    side = shape["vision"]["image_size"]
    processor = LlavaProcessor(
        image_processor=SiglipImageProcessor(size={"height": side, "width": side}),
        tokenizer=tokenizer,
        patch_size=shape["vision"]["patch_size"],
        vision_feature_select_strategy="full",
        num_additional_image_tokens=0,
    )
    torch.manual_seed(0)
    config = LlavaConfig(
        vision_config=dict(shape["vision"], model_type="siglip_vision_model"),
        text_config=dict(shape["text"], model_type="llama", max_position_embeddings=2048, pad_token_id=0, bos_token_id=2, eos_token_id=3),
        image_token_id=4,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.do_sample = False
    model.generation_config.suppress_tokens = [0, 1, 2, 3, 4]
    return model, processor


IDEFICS_SPECIAL = ["<pad>", "<unk>", "<s>", "</s>", "<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>"]
IDEFICS_CHAT = (
    "{% for m in messages %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endfor %}"
)


def _idefics3(longest_edge: int):
    """SmolVLM-256M's shape as an ``Idefics3ForConditionalGeneration`` (see the module docstring)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessor, Idefics3Processor, PreTrainedTokenizerFast

    vocab_size = 49280
    specials = IDEFICS_SPECIAL + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    words = specials + [f"w{i}" for i in range(vocab_size - len(specials))]
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>", extra_special_tokens=specials[4:]
    )
    torch.manual_seed(0)
    vision = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, image_size=512, patch_size=16)
    text = dict(
        model_type="llama", hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, intermediate_size=1536,
        vocab_size=vocab_size, max_position_embeddings=8192, pad_token_id=0, bos_token_id=2, eos_token_id=3,
    )  # fmt: skip
    config = Idefics3Config(vision_config=vision, text_config=text, scale_factor=4, image_token_id=words.index("<image>"))
    model = Idefics3ForConditionalGeneration(config).eval()
    model.generation_config.do_sample = False
    model.generation_config.suppress_tokens = list(range(len(specials)))
    images = Idefics3ImageProcessor(size={"longest_edge": longest_edge}, max_image_size={"longest_edge": 512})
    processor = Idefics3Processor(image_processor=images, tokenizer=tokenizer, image_seq_len=64, chat_template=IDEFICS_CHAT)
    return model, processor


def build(size: str, longest_edge: int = 1024, task: str = "generation"):
    """``(model, processor, photo, prompt)`` of one ``--size`` (``zoo``, ``task="vqa"``: the scene's first question)."""
    photo = (np.random.default_rng(0).random((480, 640, 3)) * 255).astype(np.uint8)
    if size == "zoo":
        import mmcam
        from mmcam.data.scenes import generate_scene
        from mmcam.tasks.caption import CAPTION_PROMPT
        from mmcam.tasks.generation import chat_prompt

        model, processor = mmcam.zoo.load("vlm")
        scene = generate_scene(5)
        return model, processor, scene.image, chat_prompt(processor, scene.qa[0].question if task == "vqa" else CAPTION_PROMPT)
    if size == "idefics3":
        return (*_idefics3(longest_edge), photo, PROMPT)
    return (*_llava(size), photo, PROMPT)


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))


def run_mode(
    mode: str, size: str, words: int, rounds: int, longest_edge: int = 1024, warmup: int = 0, method: str | None = None, task: str = "generation"
) -> dict:
    from mmcam.adapters.vlm import layout_for
    from mmcam.engine.core import _MEASURED
    from mmcam.io import load_image
    from mmcam.tasks.generation import GenerationTask

    model, processor, photo, prompt = build(size, longest_edge, task)
    inputs = layout_for(model).prepare(processor, load_image(photo), prompt).inputs  # what the task feeds generate()
    limit = {} if size == "zoo" else {"max_new_tokens": words, "min_new_tokens": words}
    with torch.no_grad():
        answer_ids = model.generate(**inputs, **limit)[0, inputs["input_ids"].shape[1] :].tolist()
    stops = {model.generation_config.eos_token_id, model.generation_config.pad_token_id}
    answer_ids = answer_ids[: next((i for i, t in enumerate(answer_ids) if t in stops), len(answer_ids))]
    answer = processor.tokenizer.decode(answer_ids)
    if size != "zoo":
        model.generation_config.min_new_tokens = words
    new = {} if size == "zoo" else {"max_new_tokens": words}
    how = {"method": method} if method else {}  # None: the task's default (gae-tower on zoo:vlm, LayerCAM on Idefics3)

    def explain(photo, prompt, answer=None, max_new_tokens=None, **kwargs):  # the task call (--task: gae-tower's passes)
        return GenerationTask(model, processor, prompt, answer, max_new_tokens=max_new_tokens, task=task, **kwargs)(photo)

    calls = {
        "generate": lambda: model.generate(**inputs, **limit),
        "explain": lambda: explain(photo, prompt, answer=answer, **how),
        "explain+generate": lambda: explain(photo, prompt, **new, **how),
        "logit-lens": lambda: explain(photo, prompt, answer=answer, method="logit-lens"),
        "explain-all-logits": lambda: explain(photo, prompt, answer=answer, **how),
        "explain+generate-two-pass": lambda: explain(photo, prompt, **new, **how),
        "explain+generate-two-prefills": lambda: explain(photo, prompt, **new, **how),
        "explain+generate-all-steps": lambda: explain(photo, prompt, **new, **how),
        "logit-lens+generate": lambda: explain(photo, prompt, method="logit-lens", **new),
    }
    if mode == "explain-all-logits":  # before: the LM head on every position (this process only)
        import mmcam.tasks.generation as generation

        generation.kept_logits = lambda *args, **kwargs: {}
    if mode == "explain+generate-two-pass":  # before: generate() and the explained forward each run the tower
        import mmcam.tasks.generation as generation

        generation.supports_features = lambda model: False
    if mode == "explain+generate-two-prefills":  # before: generate() under no-grad, then the teacher-forced forward
        import mmcam.tasks.generation as generation

        generation.plain_greedy = lambda model, kwargs: False
    if mode == "explain+generate-all-steps":  # every answer on the decode steps' logits, however long
        import mmcam.tasks.generation as generation

        generation.GRAPH_STEPS = 10**6
    for _ in range(warmup):  # untimed: grad_mode="auto" times both backwards on a model's first multi-word call
        with torch.no_grad() if mode == "generate" else contextlib.nullcontext():
            calls[mode]()
    if warmup:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the high-water mark to the current RSS
    before = _rss_kb("VmRSS") if warmup else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times, cpu = [], []
    for _ in range(rounds):
        start, start_cpu = time.perf_counter(), time.process_time()
        if mode == "generate":
            with torch.no_grad():
                calls[mode]()
        else:
            exp = calls[mode]()
            assert exp.meta["token_ids"] == answer_ids and exp.maps.shape == (len(answer_ids), *np.asarray(photo).shape[:2]), exp.meta["token_ids"]
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    peak = _rss_kb("VmHWM") if warmup else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    params = sum(p.numel() for p in model.parameters())
    return {
        "mode": mode,
        "seconds": float(np.median(times)),
        "cpu_seconds": float(np.median(cpu)),
        "spread": [min(times), max(times)],
        "cpu_spread": [min(cpu), max(cpu)],
        "peak_mb": peak / 1024,
        "over_model_mb": (peak - before) / 1024,
        "params_m": params / 1e6,
        "image_tokens": int((inputs["input_ids"] == model.config.image_token_id).sum()),
        "sequence": int(inputs["input_ids"].shape[1]),
        "words": len(answer_ids),
        "grad_mode": _MEASURED.get(model, "-"),  # the engine's gradient strategy, timed on this process's first multi-word call
        "load": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--words", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--size", default="smolvlm", choices=sorted(SIZES) + ["idefics3", "zoo"])
    parser.add_argument("--longest-edge", type=int, default=1024, help="idefics3: the processor's longest edge (SmolVLM: 2048)")
    parser.add_argument(
        "--warmup", type=int, default=0, help="untimed calls first (1: the grad-mode measurement and caches excluded; memory: VmHWM over RSS after them)"
    )
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated modes")
    parser.add_argument("--method", default=None, help="the explain modes' method (default: the task's)")
    parser.add_argument(
        "--task", default="generation", choices=("generation", "caption", "vqa"), help="the GenerationTask's task (zoo: vqa asks the scene's question)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="run the list of modes this many times, interleaved")
    parser.add_argument("--mode", default=None, choices=MODES, help="run one mode in this process (used by the driver)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.size, args.words, args.rounds, args.longest_edge, args.warmup, args.method, args.task)))
        return
    print(f"load average before: {os.getloadavg()}", flush=True)
    rows = []
    modes = args.modes.split(",")
    for repeat in range(args.repeat):
        for mode in modes:
            command = [sys.executable, "-m", "bench.vlm", "--mode", mode, "--size", args.size, "--words", str(args.words), "--rounds", str(args.rounds)]
            command += ["--longest-edge", str(args.longest_edge), "--warmup", str(args.warmup)] + (["--threads", str(args.threads)] if args.threads else [])
            command += (["--method", args.method] if args.method else []) + ["--task", args.task]
            row = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
            rows.append({**row, "repeat": repeat})
            spread = "{:.3f}-{:.3f}".format(*row["spread"]), "{:.3f}-{:.3f}".format(*row["cpu_spread"])
            print(
                f"  repeat {repeat} {mode}: median {row['seconds']:.3f} s ({spread[0]}), CPU {row['cpu_seconds']:.3f} s ({spread[1]}), load {row['load']:.1f}",
                flush=True,
            )
    first = rows[0]
    print(
        f"--size {args.size}: {first['params_m']:.0f}M parameters, {first['image_tokens']} image tokens of {first['sequence']}, "
        f"{first['words']} answer words, torch threads {torch.get_num_threads()}"
    )
    print(
        f"{'mode':<31}{'repeat':>7}{'seconds':>9}{'(spread)':>15}{'x ' + modes[0]:>14}{'CPU s':>9}{'(spread)':>15}{'x':>7}{'peak RSS MB':>13}{'RSS over build MB':>19}{'load':>7}{'grad':>9}"
    )
    for row in rows:
        base = next(r for r in rows if r["repeat"] == row["repeat"] and r["mode"] == modes[0])
        print(
            f"{row['mode']:<31}{row['repeat']:>7}{row['seconds']:>9.3f}{'{:.3f}-{:.3f}'.format(*row['spread']):>15}{row['seconds'] / base['seconds']:>14.2f}"
            f"{row['cpu_seconds']:>9.3f}{'{:.3f}-{:.3f}'.format(*row['cpu_spread']):>15}{row['cpu_seconds'] / base['cpu_seconds']:>7.2f}{row['peak_mb']:>13.0f}"
            f"{row['over_model_mb']:>19.0f}{row['load']:>7.1f}{row.get('grad_mode', '-'):>9}"
        )
    if args.repeat > 1:
        for key in ("seconds", "cpu_seconds"):
            median = {m: float(np.median([r[key] for r in rows if r["mode"] == m])) for m in modes}
            print(f"median {key} over repeats: " + ", ".join(f"{m} {median[m]:.3f} ({median[m] / median[modes[0]]:.2f}x)" for m in modes))
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
