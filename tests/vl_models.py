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


def tiny_ved(decoder_layers: int = 1):
    """A random VisionEncoderDecoder (ViT + GPT-2, 64 px) on the scenes' word vocabulary, as the
    zoo builds it, with the scenes' caption processor."""
    from mmcam.data import VOCAB as WORDS_OF_SCENES
    from mmcam.zoo.models import build
    from mmcam.zoo.text import CaptionProcessor

    torch.manual_seed(0)
    arch = {
        "type": "hf_vision_encoder_decoder",
        "encoder": {"image_size": 64, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
        "decoder": {"vocab_size": 4 + len(WORDS_OF_SCENES), "n_embd": 32, "n_layer": decoder_layers, "n_head": 2, "n_positions": 32},
        "special_ids": {"pad": 0, "bos": 1, "eos": 2},
        "max_length": 7,
    }
    model = build({"architecture": arch}).eval()
    model.generation_config.suppress_tokens = [0, 1, 3]  # a random model would emit [BOS] forever
    return model, CaptionProcessor(list(WORDS_OF_SCENES))


def tiny_vilt(labels: list[str]):
    """A random ViltForQuestionAnswering (64 px, every patch kept) answering ``labels``, with the
    scenes' question processor."""
    from transformers import ViltConfig, ViltForQuestionAnswering

    from mmcam.data import VOCAB as WORDS_OF_SCENES
    from mmcam.zoo.text import VQAProcessor

    torch.manual_seed(0)
    config = ViltConfig(
        vocab_size=4 + len(WORDS_OF_SCENES),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=64,
        patch_size=8,
        max_image_length=-1,
        num_labels=len(labels),
        max_position_embeddings=32,
        id2label=dict(enumerate(labels)),
        label2id={v: i for i, v in enumerate(labels)},
    )
    return ViltForQuestionAnswering(config).eval(), VQAProcessor(list(WORDS_OF_SCENES))
