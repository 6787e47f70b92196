"""The zoo generative VLM: a LLaVA (``LlavaForConditionalGeneration``: SigLIP-style vision
tower, two-layer projector, Llama decoder) that answers the scenes' questions and captions
them as text, started from the zoo captioner's ViT encoder."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ...data import SceneConfig, generate_scenes
from .common import BACKGROUNDS, EVAL_SEED, MEAN, STD, fit, images, scene_batch

__all__ = ["train_vlm", "vlm_quality", "vlm_processor", "vlm_words", "init_siglip_from_vit", "CAPTION_TEXT", "IMAGE_TOKEN", "PROCESSOR_DIR"]

#: the placeholder the processor expands into one token per image patch
IMAGE_TOKEN = "<image>"
#: what the caption prompt tokenizes to (mmcam.tasks.caption.CAPTION_PROMPT, lower-cased and split)
CAPTION_TEXT = "describe the image ."
#: the shipped processor's folder (``LlavaProcessor.save_pretrained``), next to the weights
PROCESSOR_DIR = "vlm_processor"
#: the template ``mmcam.tasks.generation.chat_prompt`` applies: the image, then the text
CHAT_TEMPLATE = (
    "{% for m in messages %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endfor %}"
)


def vlm_words() -> list[str]:
    """The decoder's words after the specials: the scenes' vocabulary, then the image
    placeholder and the caption prompt's extra words."""
    from ...data import VOCAB

    return list(VOCAB) + [IMAGE_TOKEN, "describe", "image", "."]


def vlm_processor(words: list[str], size: int = 64, patch: int = 8) -> Any:
    """A ``LlavaProcessor``: a word-level tokenizer (lower-cased, split at spaces and
    punctuation, one token per word; specials as in :mod:`mmcam.zoo.text`), a
    ``SiglipImageProcessor`` resizing to ``size`` and normalising with the zoo's mean/std, and
    one image token per ``patch`` x ``patch`` patch (no CLS)."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import LlavaProcessor, PreTrainedTokenizerFast, SiglipImageProcessor

    from ..text import SPECIAL

    core = Tokenizer(WordLevel({tok: i for i, tok in enumerate(list(SPECIAL) + list(words))}, unk_token="[UNK]"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]", unk_token="[UNK]", extra_special_tokens=[IMAGE_TOKEN]
    )
    image_processor = SiglipImageProcessor(size={"height": size, "width": size}, image_mean=list(MEAN), image_std=list(STD))
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch,
        vision_feature_select_strategy="full",
        num_additional_image_tokens=0,
        chat_template=CHAT_TEMPLATE,
        image_token=IMAGE_TOKEN,
    )


def init_siglip_from_vit(tower: torch.nn.Module, vit: torch.nn.Module) -> int:
    """Start a ``SiglipVisionModel``'s patch embedding, patch positions, blocks and final norm
    from a trained HF ViT encoder of the same width and grid (as LLaVA starts from a trained
    CLIP, Liu et al. 2023, https://arxiv.org/abs/2304.08485 §4). SigLIP has no CLS token, so
    the ViT's patch positions (``position_embeddings[0, 1:]``) are copied and its CLS dropped.
    Returns the number of blocks copied."""
    src = vit.state_dict()
    names = {"layernorm_before": "layer_norm1", "layernorm_after": "layer_norm2", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
    names.update({f"attention.{p}_proj": f"self_attn.{p}_proj" for p in "qkv"})
    names["attention.o_proj"] = "self_attn.out_proj"
    target = tower.state_dict()
    pre = "vision_model." if "vision_model.post_layernorm.weight" in target else ""  # older transformers nest the tower
    state = {
        "vision_model.embeddings.patch_embedding.weight": src["embeddings.patch_embeddings.projection.weight"],
        "vision_model.embeddings.patch_embedding.bias": src["embeddings.patch_embeddings.projection.bias"],
        "vision_model.embeddings.position_embedding.weight": src["embeddings.position_embeddings"][0, 1:],
        "vision_model.post_layernorm.weight": src["layernorm.weight"],
        "vision_model.post_layernorm.bias": src["layernorm.bias"],
    }
    state = {pre + k.removeprefix("vision_model."): v for k, v in state.items()}
    layers = 0
    while f"layers.{layers}.layernorm_before.weight" in src and f"{pre}encoder.layers.{layers}.layer_norm1.weight" in target:
        for old, new in names.items():
            for kind in ("weight", "bias"):
                state[f"{pre}encoder.layers.{layers}.{new}.{kind}"] = src[f"layers.{layers}.{old}.{kind}"]
        layers += 1
    for key, value in state.items():
        if target[key].shape != value.shape:
            raise ValueError(f"{key}: SigLIP {tuple(target[key].shape)} vs ViT {tuple(value.shape)}; the two need the same width and patch grid")
    tower.load_state_dict(state, strict=False)
    return layers


def _rows(scenes: list, tokenizer: Any, eos: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """Teacher-forcing text rows: per scene its caption (prompt :data:`CAPTION_TEXT`) and every
    question, ``prompt + answer + [EOS]`` (the image's tokens come before, see :func:`_loss`),
    right-padded, loss on answer + EOS; ``owners[r]``: row r's scene."""
    seqs, labels, owners = [], [], []
    for i, scene in enumerate(scenes):
        pairs = [(CAPTION_TEXT, scene.caption)] + [(q.question, q.answer) for q in scene.qa]
        for prompt, answer in pairs:
            p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            a = tokenizer(answer, add_special_tokens=False)["input_ids"] + [eos]
            seqs.append(p + a)
            labels.append([-100] * len(p) + a)
            owners.append(i)
    width = max(map(len, seqs))
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    lab = torch.full((len(seqs), width), -100, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for r, (s, y) in enumerate(zip(seqs, labels)):
        ids[r, : len(s)], lab[r, : len(y)], mask[r, : len(s)] = torch.tensor(s), torch.tensor(y), 1
    return ids, lab, mask, owners


def _loss(model: Any, pixel_values: torch.Tensor, ids: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, owners: list[int]) -> torch.Tensor:
    """The loss of ``[image tokens] + row`` for every text row, with each scene's image prefix
    (vision tower, projector and the decoder over the image tokens) run once: the sequence is
    causal and starts with the image, so the prefix's keys/values are the same for every row of
    a scene and are shared through the cache (gradients flow through it). Equals the model's
    own loss on the full sequences (checked in tests/zoo/test_vlm.py)."""
    cfg = model.config
    out = model.model.get_image_features(
        pixel_values=pixel_values, vision_feature_layer=cfg.vision_feature_layer, vision_feature_select_strategy=cfg.vision_feature_select_strategy
    )
    feats = torch.stack(list(out.pooler_output))  # (scenes, grid, D)
    prefix = model.model.language_model(inputs_embeds=feats, use_cache=True)
    cache = prefix.past_key_values
    cache.batch_select_indices(torch.tensor(owners))
    full_mask = torch.cat([mask.new_ones(len(owners), feats.shape[1]), mask], 1)
    return model(input_ids=ids, attention_mask=full_mask, past_key_values=cache, labels=labels).loss


def vlm_quality(model: torch.nn.Module, processor: Any, n: int = 200, seed: int = EVAL_SEED) -> dict[str, Any]:
    """Greedy ``generate()`` through the processor on ``n`` fresh scenes: exact answer per
    question type, exact caption (prompt :data:`mmcam.tasks.caption.CAPTION_PROMPT`) and
    caption word accuracy."""
    from ...tasks.caption import CAPTION_PROMPT
    from ...tasks.generation import chat_prompt

    scenes = generate_scenes(n, seed, SceneConfig())
    correct: dict[str, list[int]] = {}
    exact, words_ok, words = 0, 0, 0
    tok = processor.tokenizer
    tok.padding_side = "left"
    for start in range(0, n, 20):
        chunk = scenes[start : start + 20]
        jobs = [(s, CAPTION_PROMPT, None) for s in chunk] + [(s, q.question, q) for s in chunk for q in s.qa]
        texts = [chat_prompt(processor, prompt) for _, prompt, _ in jobs]
        enc = processor(images=[s.image for s, _, _ in jobs], text=texts, return_tensors="pt", padding=True)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=20)
        for (scene, _, qa), text in zip(jobs, processor.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)):
            got = text.split()
            if qa is None:
                want = scene.caption_tokens
                exact += got == want
                words += len(want)
                words_ok += sum(a == b for a, b in zip(got, want))
            else:
                correct.setdefault(qa.type, []).append(int(got == [qa.answer]))
    per_type = {t: round(sum(v) / len(v), 4) for t, v in sorted(correct.items())}
    total = sum(sum(v) for v in correct.values()) / sum(len(v) for v in correct.values())
    return {
        "accuracy": round(total, 4),
        "per_type": per_type,
        "exact_caption": round(exact / n, 4),
        "word_accuracy": round(words_ok / words, 4),
        "eval_images": n,
    }


def llava_arch(words: list[str], size: int = 64, patch: int = 8) -> dict[str, Any]:
    """The zoo VLM's ``architecture`` section (see :func:`mmcam.zoo.models.build`)."""
    from ..text import SPECIAL

    vocab = len(SPECIAL) + len(words)
    return {
        "type": "hf_llava",
        "vision_config": {
            "model_type": "siglip_vision_model",
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "image_size": size,
            "patch_size": patch,
            "hidden_act": "gelu",
            "layer_norm_eps": 1e-12,
            "vision_use_head": False,
        },
        "text_config": {
            "model_type": "llama",
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "vocab_size": vocab,
            "max_position_embeddings": 128,
            "pad_token_id": 0,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "tie_word_embeddings": False,
        },
        "image_token_id": len(SPECIAL) + words.index(IMAGE_TOKEN),
        "vision_feature_select_strategy": "full",
        "vision_feature_layer": -1,
        "projector_hidden_act": "gelu",
        "suppress_tokens": [0, 1, 3, len(SPECIAL) + words.index(IMAGE_TOKEN)],
        "max_new_tokens": 20,
    }


def train_vlm(seed: int, minutes: float, out: Path, steps: int = 4000, lr: float = 1e-3) -> None:
    """LLaVA-style training in one stage: every question and the caption of 16 fresh scenes per
    step (each image encoded once), cross-entropy on the answer words + EOS, AdamW ``lr``, 200
    warm-up steps, cosine decay to ``steps`` (or to ``minutes``, whichever ends first). The
    vision tower starts from the shipped zoo captioner's ViT encoder
    (:func:`init_siglip_from_vit`), the projector and the Llama decoder from scratch."""
    from .. import config as zoo_config
    from .. import load as zoo_load
    from ..models import build

    torch.manual_seed(seed)
    words = vlm_words()
    cfg: dict[str, Any] = {"architecture": llava_arch(words)}
    model = build(cfg)
    captioner, _ = zoo_load("captioner")
    copied = init_siglip_from_vit(model.model.vision_tower, captioner.encoder)
    processor = vlm_processor(words)
    tok = processor.tokenizer

    def loss(step: int) -> torch.Tensor:
        scenes = scene_batch(step, seed, 16, lambda s: SceneConfig(background=BACKGROUNDS[s % 3]))
        ids, labels, mask, owners = _rows(scenes, tok, tok.eos_token_id)
        return _loss(model, images(scenes), ids, labels, mask, owners)

    start = time.perf_counter()
    taken = fit(model, loss, minutes, steps, lr, "vlm", warmup=200)
    captioner_train = zoo_config("captioner").get("train", {})
    cfg.update(
        preprocessing={"size": 64, "mean": MEAN, "std": STD},
        processor=PROCESSOR_DIR,
        labels=[],
        data={
            "config": "SceneConfig(background=plain|textured|cluttered); the caption and every question of 16 scenes per step",
            "init": f"vision tower: patch embedding, patch positions, blocks 0-{copied - 1} and final norm from the zoo captioner's ViT encoder "
            f"(trained with `{captioner_train.get('command', '?')}`); projector and decoder from scratch",
            "prompts": {"vqa": "<image> QUESTION", "caption": f"<image> {CAPTION_TEXT}"},
        },
        train={
            "seed": seed,
            "steps": taken,
            "minutes": round((time.perf_counter() - start) / 60, 2),
            "command": f"python -m mmcam.zoo.train vlm --seed {seed} --steps {steps} --minutes {minutes}",
        },
        metrics=vlm_quality(model, processor),
    )
    save_vlm(model, processor, cfg, out)


def save_vlm(model: torch.nn.Module, processor: Any, cfg: dict[str, Any], out: Path, name: str = "vlm") -> None:
    """``NAME.safetensors`` in fp16 (loaded back as fp32), ``NAME.json``, the card, and the
    processor's files in ``out/vlm_processor``."""
    import json

    from safetensors.torch import save_file

    from .common import write_config

    out.mkdir(parents=True, exist_ok=True)
    cfg["train"]["threads"] = torch.get_num_threads()
    if cfg["train"]["threads"] != 2:
        cfg["train"]["command"] += f" --threads {cfg['train']['threads']}"
    save_file({k: v.detach().half().contiguous() for k, v in model.state_dict().items()}, str(out / f"{name}.safetensors"))
    processor.save_pretrained(str(out / PROCESSOR_DIR))
    write_config(name, cfg, out)
    print(json.dumps({k: cfg[k] for k in ("metrics", "train") if k in cfg}, indent=2))
