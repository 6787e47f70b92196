"""Generative VLM benchmark: every word of the answer vs plain ``generate()``.

    python -m bench.vlm [--words 8] [--rounds 2] [--threads N] [--size smolvlm|tiny]

A random-init ``LlavaForConditionalGeneration`` (no downloads) at SmolVLM-256M's sizes: a
SigLIP tower 768 x 12 blocks at 384 px (patch 16: 576 image tokens, all kept) and a Llama
decoder 576 x 30 blocks, 9 heads / 3 KV heads, 49,152-word vocabulary (SmolLM2-135M's shape);
SmolVLM's own pixel shuffle (64 tokens per tile) is not modelled, so this is the harder case:
9x more image tokens in the language model. Each mode runs in its own process, so its peak
resident memory (``ru_maxrss``) is its own; the time is the best of ``--rounds`` calls after
the model is built:

* ``generate``: ``model.generate`` of ``--words`` new tokens (greedy, no early stop);
* ``explain``: :func:`mmcam.explain_generation` with the answer given (one teacher-forced
  forward + one batched backward for all words, Grad-CAM at the default vision block);
* ``explain+generate``: the same call generating the answer first (what a user runs);
* ``logit-lens``: the forward-only method (one no-grad teacher-forced forward).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore")

MODES = ("generate", "explain", "explain+generate", "logit-lens")
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


def build(size: str):
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


def run_mode(mode: str, size: str, words: int, rounds: int) -> dict:
    import mmcam

    model, processor = build(size)
    photo = (np.random.default_rng(0).random((480, 640, 3)) * 255).astype(np.uint8)
    inputs = processor(images=photo, text=PROMPT, return_tensors="pt")
    with torch.no_grad():
        answer_ids = model.generate(**inputs, max_new_tokens=words)[0, inputs["input_ids"].shape[1] :].tolist()
    answer = " ".join(processor.tokenizer.convert_ids_to_tokens(answer_ids))
    calls = {
        "generate": lambda: model.generate(**inputs, max_new_tokens=words),
        "explain": lambda: mmcam.explain_generation(model, processor, photo, PROMPT, answer=answer),
        "explain+generate": lambda: mmcam.explain_generation(model, processor, photo, PROMPT, max_new_tokens=words),
        "logit-lens": lambda: mmcam.explain_generation(model, processor, photo, PROMPT, answer=answer, method="logit-lens"),
    }
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        if mode == "generate":
            with torch.no_grad():
                calls[mode]()
        else:
            exp = calls[mode]()
            assert len(exp.items) == words and exp.maps.shape == (words, 480, 640)
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    params = sum(p.numel() for p in model.parameters())
    return {
        "mode": mode,
        "seconds": min(times),
        "peak_mb": peak / 1024,
        "over_model_mb": (peak - before) / 1024,
        "params_m": params / 1e6,
        "image_tokens": int((inputs["input_ids"] == 4).sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--words", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--size", default="smolvlm", choices=sorted(SIZES))
    parser.add_argument("--mode", default=None, choices=MODES, help="run one mode in this process (used by the driver)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.size, args.words, args.rounds)))
        return
    rows = []
    for mode in MODES:
        command = [sys.executable, "-m", "bench.vlm", "--mode", mode, "--size", args.size, "--words", str(args.words), "--rounds", str(args.rounds)]
        if args.threads:
            command += ["--threads", str(args.threads)]
        rows.append(json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]))
    base = rows[0]["seconds"]
    print(
        f"LLaVA random-init, {rows[0]['params_m']:.0f}M parameters, {rows[0]['image_tokens']} image tokens, {args.words} answer words, torch threads {torch.get_num_threads()}"
    )
    print(f"{'mode':<18}{'seconds':>9}{'x generate':>12}{'peak RSS MB':>13}{'RSS over build MB':>19}")
    for row in rows:
        print(f"{row['mode']:<18}{row['seconds']:>9.2f}{row['seconds'] / base:>12.2f}{row['peak_mb']:>13.0f}{row['over_model_mb']:>19.0f}")


if __name__ == "__main__":
    main()
