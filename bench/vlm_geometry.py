"""Image-token layouts at the real checkpoints' image geometry: each family's published vision
and processor sizes (tile / patch / merge / pixel-shuffle / pinpoints / pooling), narrow random
weights (width 32, one or two blocks), bus.jpg (810 x 1080). For each: the processor's image
tokens, the layout's grid and frame, one explained word's map at the photo's size, and whether
the teacher-forced forward reproduces ``generate()``'s tokens.

    python -m bench.vlm_geometry            # prints one row per family
    python -m bench.vlm_geometry florence2  # the named builders' rows only
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import transformers as hf
from PIL import Image

from mmcam.adapters.vlm import decoder_prefix, layout_for
from mmcam.tasks import explain_generation

BUS = Path(hf.__file__).parents[1] / "ultralytics" / "assets" / "bus.jpg"
WORDS = "what color is the bus ? red yellow blue".split()
NARROW = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
TEXT = dict(NARROW, num_key_value_heads=2, max_position_embeddings=8192, pad_token_id=0, bos_token_id=2, eos_token_id=3)


def words(specials: list[str], named: dict[str, str] | None = None):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = ["<pad>", "<unk>", "<s>", "</s>"] + specials + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)] + WORDS
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    extra = named if named else specials
    out = hf.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>", extra_special_tokens=extra)
    return out, vocab


def qwen2_5_vl():
    tok, vocab = words(["<|image_pad|>", "<|vision_start|>", "<|vision_end|>", "<|video_pad|>"])
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32, patch_size=14, window_size=112, fullatt_block_indexes=[1])
    text = dict(TEXT, vocab_size=len(vocab), rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e4})
    ids = {
        k: vocab.index(v)
        for k, v in dict(
            image_token_id="<|image_pad|>", vision_start_token_id="<|vision_start|>", vision_end_token_id="<|vision_end|>", video_token_id="<|video_pad|>"
        ).items()
    }
    model = hf.Qwen2_5_VLForConditionalGeneration(hf.Qwen2_5_VLConfig(vision_config=vision, text_config=text, **ids))
    images = hf.Qwen2VLImageProcessor(min_pixels=3136, max_pixels=12845056, patch_size=14, merge_size=2)  # Qwen2.5-VL-3B-Instruct's
    processor = hf.Qwen2_5_VLProcessor(image_processor=images, tokenizer=tok, video_processor=hf.Qwen2VLVideoProcessor())
    return model, processor, "<|vision_start|> <|image_pad|> <|vision_end|> what color is the bus ?"


def smolvlm():
    tok, vocab = words(["<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>"])
    vision = dict(NARROW, image_size=512, patch_size=16)  # SmolVLM-256M-Instruct's tower geometry
    config = hf.SmolVLMConfig(
        vision_config=vision, text_config=dict(TEXT, model_type="llama", vocab_size=len(vocab)), scale_factor=4, image_token_id=vocab.index("<image>")
    )
    images = hf.SmolVLMImageProcessor(size={"longest_edge": 2048}, max_image_size={"longest_edge": 512})
    processor = hf.SmolVLMProcessor(image_processor=images, tokenizer=tok, video_processor=hf.SmolVLMVideoProcessor(), image_seq_len=64)  # needs num2words
    return hf.SmolVLMForConditionalGeneration(config), processor, "<image> what color is the bus ?"


def llava_next():
    tok, vocab = words(["<image>"])
    pinpoints = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]  # llava-v1.6's
    vision = dict(NARROW, model_type="clip_vision_model", image_size=336, patch_size=14)
    config = hf.LlavaNextConfig(
        vision_config=vision,
        text_config=dict(TEXT, model_type="llama", vocab_size=len(vocab)),
        image_token_id=4,
        image_grid_pinpoints=pinpoints,
        vision_feature_layer=-1,
    )
    images = hf.LlavaNextImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}, image_grid_pinpoints=pinpoints)
    processor = hf.LlavaNextProcessor(
        image_processor=images, tokenizer=tok, patch_size=14, vision_feature_select_strategy="default", num_additional_image_tokens=1
    )
    return hf.LlavaNextForConditionalGeneration(config), processor, "<image> what color is the bus ?"


def internvl():
    named = {"context_image_token": "<IMG_CONTEXT>", "start_image_token": "<img>", "end_image_token": "</img>", "video_token": "<video>"}
    tok, vocab = words(list(named.values()), named)
    config = hf.InternVLConfig(
        vision_config=dict(NARROW, image_size=448, patch_size=14), text_config=dict(TEXT, model_type="qwen2", vocab_size=len(vocab)), image_token_id=4
    )
    images = hf.GotOcr2ImageProcessor(size={"height": 448, "width": 448}, crop_to_patches=True, min_patches=1, max_patches=12)  # InternVL3's
    processor = hf.InternVLProcessor(image_processor=images, tokenizer=tok, video_processor=hf.InternVLVideoProcessor(), image_seq_length=256)
    return hf.InternVLForConditionalGeneration(config), processor, "<IMG_CONTEXT> what color is the bus ?"


def gemma3():
    named = {"image_token": "<image_soft_token>", "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>"}
    tok, vocab = words(list(named.values()), named)
    text = dict(TEXT, model_type="gemma3_text", vocab_size=len(vocab), head_dim=16, sliding_window=512)
    ids = dict(image_token_index=4, boi_token_index=5, eoi_token_index=6)
    config = hf.Gemma3Config(
        vision_config=dict(NARROW, model_type="siglip_vision_model", image_size=896, patch_size=14), text_config=text, mm_tokens_per_image=256, **ids
    )
    model = hf.Gemma3ForConditionalGeneration(config)
    with torch.no_grad():
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(0, 0.2)
    processor = hf.Gemma3Processor(image_processor=hf.Gemma3ImageProcessor(size={"height": 896, "width": 896}), tokenizer=tok, image_seq_length=256)
    return model, processor, "<start_of_image> what color is the bus ?"


def florence2():
    """Florence-2-base's DaViT geometry (kernels 7/3/3/3, strides 4/2/2/2, 12-px windows) and
    processor (768 x 768, 577 image tokens), one block a stage; a BART decoder started at ``</s>``
    with ``<s>`` forced first, as the checkpoints generate."""
    tok, vocab = words(["<image>"], {"image_token": "<image>"})
    vision = dict(depths=[1, 1, 1, 1], embed_dim=[16, 32, 32, 32], num_heads=[2, 2, 2, 2], num_groups=[2, 2, 2, 2], projection_dim=32, drop_path_rate=0.0)
    text = dict(model_type="bart", vocab_size=len(vocab), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2)
    text.update(encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=1024, pad_token_id=0, bos_token_id=2, eos_token_id=3, decoder_start_token_id=3)
    model = hf.Florence2ForConditionalGeneration(hf.Florence2Config(vision_config=vision, text_config=text, image_token_id=4))
    model.generation_config.forced_bos_token_id, model.generation_config.forced_eos_token_id = 2, None
    images = hf.CLIPImageProcessor(size={"height": 768, "width": 768}, do_center_crop=False, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    images.image_seq_length = 577  # Florence-2-base's preprocessor config
    return model, hf.Florence2Processor(image_processor=images, tokenizer=tok), "<image> what color is the bus ?"


def blip2_flan_t5():
    """BLIP-2 Flan-T5's geometry: a 224-px tower at patch 14 (16 x 16 patches + CLS), 32 query
    tokens; narrow Q-Former and T5."""
    tok, vocab = words(["<image>"])
    qformer = dict(NARROW, encoder_hidden_size=32, vocab_size=len(vocab), pad_token_id=0)
    text = dict(
        model_type="t5",
        vocab_size=len(vocab),
        d_model=32,
        d_kv=16,
        d_ff=64,
        num_layers=1,
        num_heads=2,
        pad_token_id=0,
        eos_token_id=3,
        decoder_start_token_id=0,
    )
    config = hf.Blip2Config(
        vision_config=dict(NARROW, image_size=224, patch_size=14), qformer_config=qformer, text_config=text, num_query_tokens=32, image_token_index=4
    )
    model = hf.Blip2ForConditionalGeneration(config)
    images = hf.BlipImageProcessor(size={"height": 224, "width": 224})
    return model, hf.Blip2Processor(image_processor=images, tokenizer=tok, num_query_tokens=32), "<image> what color is the bus ?"


def main(names: list[str]) -> None:
    torch.set_num_threads(1)
    photo = Image.open(BUS).convert("RGB")
    print("| family | processor | image tokens | grid | layer | map | tokens = generate() | s |")
    print("|---|---|---:|---|---|---|---|---:|")
    for build in (qwen2_5_vl, smolvlm, llava_next, internvl, gemma3, florence2, blip2_flan_t5):
        if names and build.__name__ not in names:
            continue
        torch.manual_seed(0)
        model, processor, prompt = build()
        model.eval()
        vocab = model.config.get_text_config().vocab_size
        forced = {model.generation_config.forced_bos_token_id}
        language = getattr(getattr(model, "language_model", None), "generation_config", None)  # BLIP-2 generates through it
        for config in [model.generation_config] + ([language] if language is not None else []):
            config.suppress_tokens = [t for t in range(vocab - len(WORDS)) if t not in forced]  # the random model says words only
            config.max_new_tokens, config.do_sample = 2, False
        start = time.perf_counter()
        exp = explain_generation(model, processor, photo, prompt)
        seconds = time.perf_counter() - start
        prepared = layout_for(model).prepare(processor, photo, prompt)
        with torch.no_grad():
            skip = len(decoder_prefix(model) or []) or prepared.inputs["input_ids"].shape[1]  # an encoder-decoder: the decoder's start
            generated = model.generate(**prepared.inputs)[0, skip:].tolist()
        same = exp.meta["token_ids"] == generated[: len(exp.meta["token_ids"])] and exp.meta["teacher_forced_argmax_matches"]
        info = exp.meta["image_tokens"]
        print(
            f"| {exp.meta['family']} | {exp.meta['pipeline']['name']} | {info['count']} | {info['grid'][0]}x{info['grid'][1]} | "
            f"{exp.layers[0]} | {tuple(exp.maps.shape)} | {same} | {seconds:.1f} |"
        )


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
