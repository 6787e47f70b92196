"""Tiny random-init encoder-decoder VLMs, processors built offline: Florence-2 (DaViT + BART)
and BLIP-2 / InstructBLIP with a T5 language model. Word-level tokenizers (:mod:`vlm_models`),
the family's image processor from kwargs; greedy generation of ``new_tokens`` words (specials
suppressed)."""

from __future__ import annotations

import torch
from vlm_families import SMALL, _ready
from vlm_models import EOS, IMAGE_TOKEN, PAD, PATCH, VOCAB, WORDS, tokenizer

# BART's order: <s> 0, <pad> 1, </s> 2 (the decoder start), <unk> 3
FLORENCE_SPECIAL = ["<s>", "<pad>", "</s>", "<unk>", "<image>"]
FLORENCE_VOCAB = FLORENCE_SPECIAL + WORDS
#: DaViT, 2 stages: a 7x7 / stride-4 convolution then a 3x3 / stride-2 one (64 px -> 16 x 16 -> 8 x 8)
DAVIT = dict(
    depths=[1, 1],
    patch_size=[7, 3],
    patch_stride=[4, 2],
    patch_padding=[3, 1],
    patch_prenorm=[False, True],
    embed_dim=[16, 32],
    num_heads=[2, 2],
    num_groups=[2, 2],
    window_size=4,
    projection_dim=32,
    drop_path_rate=0.0,
    initializer_range=0.2,
)


def florence2(new_tokens: int = 3, size: int = 64, forced_bos: bool = True):
    """Florence-2: the DaViT above at ``size`` px (64: an 8 x 8 grid, 1 + 64 image tokens), a BART
    32 x 1 + 1 layers; generation starts the decoder at ``</s>`` and (``forced_bos``) forces
    ``<s>`` first, as Florence-2's checkpoints do."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import CLIPImageProcessor, Florence2Config, Florence2ForConditionalGeneration, Florence2Processor, PreTrainedTokenizerFast

    torch.manual_seed(0)
    text = dict(
        model_type="bart",
        vocab_size=len(FLORENCE_VOCAB),
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=256,
        init_std=0.2,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
    )
    config = Florence2Config(vision_config=DAVIT, text_config=text, image_token_id=FLORENCE_VOCAB.index("<image>"))
    model = Florence2ForConditionalGeneration(config).eval()
    model.generation_config.forced_eos_token_id = None  # BART's default; it would clash with the suppressed </s>
    model.generation_config.forced_bos_token_id = 0 if forced_bos else None
    _ready(model, 0, new_tokens + forced_bos).generation_config.suppress_tokens = [1, 2, 3, 4]
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(FLORENCE_VOCAB)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece()
    words = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>", extra_special_tokens={"image_token": "<image>"}
    )
    images = CLIPImageProcessor(size={"height": size, "width": size}, do_center_crop=False)
    grid = size // 8
    images.image_seq_length = 1 + grid * grid  # the mean token + the last stage's cells
    return model, Florence2Processor(image_processor=images, tokenizer=words)


def blip2_t5(new_tokens: int = 3, instruct: bool = False):
    """BLIP-2 (or InstructBLIP) with Flan-T5: tower 32 x 2 blocks at 32 px, patch 8 (4 x 4
    patches + CLS), a 1-layer Q-Former of 4 queries; T5 32 x 1 + 1 layers (decoder start: pad)."""
    import transformers as hf

    name = "InstructBlip" if instruct else "Blip2"
    torch.manual_seed(0)
    vision = dict(SMALL, image_size=32, patch_size=PATCH)
    qformer = dict(SMALL, num_hidden_layers=1, encoder_hidden_size=32, vocab_size=len(VOCAB), pad_token_id=PAD)
    text = dict(
        model_type="t5",
        vocab_size=len(VOCAB),
        d_model=32,
        d_kv=16,
        d_ff=64,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=2,
        initializer_factor=1.0,
        pad_token_id=PAD,
        eos_token_id=EOS,
        decoder_start_token_id=PAD,
    )
    config = getattr(hf, f"{name}Config")(vision_config=vision, qformer_config=qformer, text_config=text, num_query_tokens=4, image_token_index=IMAGE_TOKEN)
    model = _ready(getattr(hf, f"{name}ForConditionalGeneration")(config), 5, new_tokens)
    images = hf.BlipImageProcessor(size={"height": 32, "width": 32})
    extra = {"qformer_tokenizer": tokenizer()} if instruct else {}
    return model, getattr(hf, f"{name}Processor")(image_processor=images, tokenizer=tokenizer(), num_query_tokens=4, **extra)
