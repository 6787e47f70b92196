"""Model cards, written from each zoo model's JSON config: ``python -m mmcam.zoo.cards``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import WEIGHTS_DIR

CARDS_DIR = Path(__file__).parent / "cards"

_ARCH = {
    "small_resnet": "torchvision `ResNet` (BasicBlock) with widths {widths}, blocks {layers}, stage strides {strides}, 3x3 stride-2 stem, no max-pool",
    "qnet": "DQN-style Q-network: 3 conv layers ({width} channels, padding 1) + MLP head, {num_actions} actions on a {grid}x{grid} grid",
    "hf_vit": "HF `ViTForImageClassification` ({config[hidden_size]} hidden, {config[num_hidden_layers]} layers, patch {config[patch_size]}, {config[image_size]} px)",
    "ultralytics_yolo": "ultralytics {model} from `{yaml}` ({nc} classes, {imgsz} px), weights stored as {dtype}",
    "hf_vision_encoder_decoder": "HF `VisionEncoderDecoderModel`: ViT encoder ({encoder[hidden_size]} hidden, {encoder[num_hidden_layers]} layers, patch {encoder[patch_size]}) + GPT-2 decoder ({decoder[n_embd]} dims, {decoder[n_layer]} layers, cross-attention), word-level vocabulary built from `mmcam.data.VOCAB`, greedy `generate()`",
    "hf_vilt_vqa": "HF `ViltForQuestionAnswering` ({config[hidden_size]} hidden, {config[num_hidden_layers]} layers, patch {config[patch_size]}, all patches), word-level vocabulary, {config[num_labels]} answers",
    "hf_detr": "HF `DetrForObjectDetection` (d_model {config[d_model]}, {config[encoder_layers]}+{config[decoder_layers]} encoder/decoder layers, {config[num_queries]} queries) on a basic HF `ResNetBackbone` (widths {backbone[hidden_sizes]}, output `{backbone[out_features][0]}`: a 4x4 map at 64 px), trained from scratch with ordinary BatchNorm; processor: HF `DetrImageProcessor`",
    "hf_llava": "HF `LlavaForConditionalGeneration`: SigLIP vision tower ({vision_config[hidden_size]} hidden, {vision_config[num_hidden_layers]} layers, patch {vision_config[patch_size]}, {vision_config[image_size]} px: 64 image tokens, no CLS), GELU projector, Llama decoder ({text_config[hidden_size]} hidden, {text_config[num_hidden_layers]} layers, {text_config[vocab_size]}-word word-level vocabulary), greedy `generate()`; weights stored as fp16; processor: `LlavaProcessor` (word-level tokenizer, `SiglipImageProcessor`) saved in `weights/vlm_processor`",
    "hf_segformer": "HF `SegformerForSemanticSegmentation` (hidden sizes {config[hidden_sizes]}, depths {config[depths]}, decoder {config[decoder_hidden_size]})",
}


def card_text(name: str, cfg: dict[str, Any]) -> str:
    arch = cfg["architecture"]
    desc = _ARCH.get(arch["type"], arch["type"]).format(**arch, model=arch.get("yaml", "").removesuffix(".yaml").replace("yolo", "YOLO"))
    if "max_channels" in arch:
        desc += f"; the scale's max_channels {arch['max_channels']} (ultralytics': 1024)"
    if "kpt_shape" in arch:
        desc += f"; keypoints {arch['kpt_shape'][0]} per object (x, y, visibility)"
    train = cfg.get("train", {})
    lines = [
        f"# zoo model `{name}`",
        "",
        f"- **Architecture**: {desc}.",
        f"- **Labels**: {', '.join(cfg.get('labels', []))}",
        f"- **Data**: `mmcam.data` — {cfg.get('data', {}).get('config', '')}; "
        + (
            f"a fixed set of {cfg['data']['train_images']} generated training images."
            if "train_images" in cfg.get("data", {})
            else f"fresh scenes every step ({json.dumps({k: v for k, v in cfg.get('data', {}).items() if k != 'config'})})."
        ),
        f"- **Preprocessing**: {json.dumps(cfg.get('preprocessing'))}",
        f"- **Training**: seed {train.get('seed')}, {train.get('steps')} steps, {train.get('minutes')} min on a 2-core CPU"
        + (f" ({train['threads']} torch thread{'s' if train['threads'] > 1 else ''})" if train.get("threads") else "")
        + "; "
        f"reproduce with `{train.get('command')}`." + (f" {train['note']}" if train.get("note") else ""),
        f"- **Quality** (scenes from an unseen seed): {json.dumps(cfg.get('metrics'))}",
        *(
            [
                f"- **Reliance** (`python -m mmcam.zoo.reliance`: share of correct predictions that change when the referred object / a distractor "
                f"is deleted by exact re-rendering): referred {cfg['reliance']['referred_change']:.1%}, distractor {cfg['reliance']['distractor_change']:.1%} "
                f"({cfg['reliance']['cases']} cases; {cfg['reliance']['definition']})"
            ]
            if cfg.get("reliance")
            else []
        ),
        "- **Limits**: trained only on synthetic scenes (flat-coloured shapes, 64 px); it says nothing about natural images.",
        "",
    ]
    return "\n".join(lines)


def write_card(name: str, cfg: dict[str, Any]) -> Path:
    CARDS_DIR.mkdir(exist_ok=True)
    path = CARDS_DIR / f"{name}.md"
    path.write_text(card_text(name, cfg))
    return path


if __name__ == "__main__":
    for cfg_path in sorted(WEIGHTS_DIR.glob("*.json")):
        print(write_card(cfg_path.stem, json.loads(cfg_path.read_text())))
