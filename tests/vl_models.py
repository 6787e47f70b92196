"""Tiny random-init BLIP / GIT / CLIP models with processors built from parts (no hub files)."""
from __future__ import annotations

import numpy as np
import torch

WORDS = "a the red green blue circle square triangle left right of what color is shape there two".split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
VOCAB = SPECIAL + WORDS + ["cir", "##cle", "##s"]  # "circles" -> circle + ##s when "circles" is not a word
PAD, UNK, CLS, SEP, MASK, DEC = range(6)
SIZE = 32
IMAGE = (np.random.default_rng(0).random((48, 48, 3)) * 255).astype(np.uint8)
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, initializer_range=0.2)  # healthy gradients at random init
VISION = dict(SMALL, image_size=SIZE, patch_size=8)


def tokenizer():
    from transformers import BertTokenizer

    return BertTokenizer(vocab={w: i for i, w in enumerate(VOCAB)}, bos_token="[DEC]")  # BLIP's tokenizer too


def clip_image_processor():
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE})


def _no_specials(model) -> None:
    """A random model would emit [PAD]/[MASK] forever: suppress them in every generation config."""
    for m in model.modules():
        gc = getattr(m, "generation_config", None)
        if gc is not None:
            gc.suppress_tokens = [PAD, UNK, CLS, SEP, MASK, DEC]  # no early stop: max_length words
            gc.max_length = 8


def blip(kind: str = "caption"):
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipForQuestionAnswering, BlipImageProcessor, BlipProcessor

    torch.manual_seed(0)
    text = dict(SMALL, vocab_size=len(VOCAB), max_position_embeddings=32, bos_token_id=DEC, sep_token_id=SEP, pad_token_id=PAD, encoder_hidden_size=32)
    config = BlipConfig(text_config=text, vision_config=VISION, projection_dim=16)
    model = (BlipForConditionalGeneration if kind == "caption" else BlipForQuestionAnswering)(config).eval()
    _no_specials(model)
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": SIZE, "width": SIZE}), tokenizer=tokenizer())
    return model, processor


def git():
    from transformers import GitConfig, GitForCausalLM, GitProcessor

    torch.manual_seed(0)
    config = GitConfig(vision_config=VISION, vocab_size=len(VOCAB), max_position_embeddings=32, bos_token_id=CLS, eos_token_id=SEP, pad_token_id=PAD, **SMALL)
    model = GitForCausalLM(config).eval()
    _no_specials(model)
    return model, GitProcessor(image_processor=clip_image_processor(), tokenizer=tokenizer())


def clip():
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor

    torch.manual_seed(0)
    text = dict(SMALL, vocab_size=len(VOCAB), max_position_embeddings=32, bos_token_id=CLS, eos_token_id=SEP, pad_token_id=PAD)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=VISION, projection_dim=16)).eval()
    return model, CLIPProcessor(image_processor=clip_image_processor(), tokenizer=tokenizer())
