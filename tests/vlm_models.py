"""Tiny random-init generative VLMs (LLaVA) with processors built offline from parts:
a word-level tokenizer (``tokenizers`` WordLevel + ``PreTrainedTokenizerFast``), the family's
image processor from kwargs and a one-line chat template."""

from __future__ import annotations

import numpy as np
import torch

WORDS = "what color is the circle ? red green blue a square triangle left right describe image there ##s".split()
SPECIAL = ["<pad>", "<unk>", "<s>", "</s>", "<image>"]
VOCAB = SPECIAL + WORDS
PAD, UNK, BOS, EOS, IMAGE_TOKEN = range(5)
SIZE, PATCH = 32, 8
PHOTO = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)  # not square
CHAT = "{% for m in messages %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endfor %}"
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, initializer_range=0.2)


QWEN_SPECIAL = ["<pad>", "<unk>", "<s>", "</s>", "<|image_pad|>", "<|vision_start|>", "<|vision_end|>", "<|video_pad|>"]
QWEN_VOCAB = QWEN_SPECIAL + WORDS
QWEN_CHAT = CHAT.replace("<image> ", "<|vision_start|> <|image_pad|> <|vision_end|> ")


def tokenizer(vocab=VOCAB, specials=("<image>",)):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece()  # "circle ##s" reads "circles"
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>", extra_special_tokens=list(specials)
    )


def llava(strategy: str = "default", feature_layer: int = -2, chat: bool = False, new_tokens: int = 4):
    """``(model, processor)``: CLIP tower 32 x 2 layers (32 px, patch 8: a 4x4 grid + CLS),
    Llama 32 x 2 layers; generation never stops early (specials suppressed)."""
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    torch.manual_seed(0)
    vision = dict(SMALL, model_type="clip_vision_model", image_size=SIZE, patch_size=PATCH)
    text = dict(
        SMALL,
        model_type="llama",
        num_key_value_heads=2,
        vocab_size=len(VOCAB),
        max_position_embeddings=128,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
    )
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=IMAGE_TOKEN, vision_feature_select_strategy=strategy, vision_feature_layer=feature_layer
    )
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.suppress_tokens = [PAD, UNK, BOS, EOS, IMAGE_TOKEN]
    model.generation_config.max_new_tokens = new_tokens
    model.generation_config.do_sample = False
    images = CLIPImageProcessor(size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE})
    processor = LlavaProcessor(
        image_processor=images,
        tokenizer=tokenizer(),
        patch_size=PATCH,
        vision_feature_select_strategy=strategy,
        num_additional_image_tokens=1,
        chat_template=CHAT if chat else None,
    )
    return model, processor


def qwen2_vl(new_tokens: int = 4):
    """``(model, processor)``: Qwen2-VL with a 2-block vision tower (embed 32, patch 8, 2x2
    merge) and a 32 x 2-layer text model (M-RoPE sections 2/3/3); the processor resizes photos
    to multiples of 16 px between 16x16 and 64x128 pixels (dynamic resolution)."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    torch.manual_seed(0)
    vision = dict(
        depth=2, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2, patch_size=PATCH, spatial_merge_size=2, temporal_patch_size=2, initializer_range=0.2
    )
    rope = {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0}
    text = dict(
        SMALL,
        num_key_value_heads=2,
        vocab_size=len(QWEN_VOCAB),
        max_position_embeddings=256,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
        rope_parameters=rope,
    )
    config = Qwen2VLConfig(vision_config=vision, text_config=text, image_token_id=4, vision_start_token_id=5, vision_end_token_id=6, video_token_id=7)
    model = Qwen2VLForConditionalGeneration(config).eval()
    model.generation_config.suppress_tokens = list(range(len(QWEN_SPECIAL)))
    model.generation_config.max_new_tokens = new_tokens
    model.generation_config.do_sample = False
    sizes = dict(patch_size=PATCH, merge_size=2, temporal_patch_size=2)
    images = Qwen2VLImageProcessor(min_pixels=16 * 16, max_pixels=64 * 128, **sizes)
    processor = Qwen2VLProcessor(
        image_processor=images, tokenizer=tokenizer(QWEN_VOCAB, QWEN_SPECIAL[4:]), video_processor=Qwen2VLVideoProcessor(**sizes), chat_template=QWEN_CHAT
    )
    return model, processor
