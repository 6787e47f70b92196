"""Tiny random-init generative VLMs of the families beyond LLaVA and Qwen2-VL (Qwen2.5-VL,
Qwen3-VL, Idefics3 / SmolVLM, PaliGemma, Gemma 3), each with its processor built offline: the
word-level tokenizer of :mod:`vlm_models` (plus the family's special tokens) and the family's
own image processor from kwargs. Generation never stops early (specials suppressed)."""

from __future__ import annotations

import torch
from vlm_models import BOS, EOS, PAD, PATCH, QWEN_CHAT, QWEN_SPECIAL, QWEN_VOCAB, SMALL, WORDS, tokenizer

TEXT = dict(SMALL, num_key_value_heads=2, max_position_embeddings=512, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS)
ROPE = {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0}
QWEN_VISION = dict(
    depth=2,
    hidden_size=32,
    intermediate_size=64,
    num_heads=2,
    patch_size=PATCH,
    spatial_merge_size=2,
    temporal_patch_size=2,
    out_hidden_size=32,
    initializer_range=0.2,
)


def _ready(model, specials: int, new_tokens: int):
    """Greedy, ``new_tokens`` long, specials suppressed: in the model's generation config and in
    its language model's (BLIP-2's generate() hands over to the language model's)."""
    model.eval()
    language = getattr(model, "language_model", None)
    for config in [model.generation_config] + ([language.generation_config] if getattr(language, "generation_config", None) else []):
        config.suppress_tokens = list(range(specials))
        config.max_new_tokens = new_tokens
        config.do_sample = False
    return model


def _qwen_processor(processor_cls, video_cls, max_pixels=64 * 128):
    from transformers import Qwen2VLImageProcessor

    sizes = dict(patch_size=PATCH, merge_size=2, temporal_patch_size=2)
    images = Qwen2VLImageProcessor(min_pixels=16 * 16, max_pixels=max_pixels, **sizes)
    return processor_cls(image_processor=images, tokenizer=tokenizer(QWEN_VOCAB, QWEN_SPECIAL[4:]), video_processor=video_cls(**sizes), chat_template=QWEN_CHAT)


def qwen2_5_vl(new_tokens: int = 3, max_pixels: int = 64 * 128):
    """Qwen2.5-VL: 2 vision blocks (block 0 window attention over 32-px windows, i.e. 2x2 merged
    cells; block 1 full attention), patch 8, 2x2 merge; Qwen2 text 32 x 2 layers."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor, Qwen2VLVideoProcessor

    torch.manual_seed(0)
    vision = dict(QWEN_VISION, window_size=32, fullatt_block_indexes=[1])
    text = dict(TEXT, vocab_size=len(QWEN_VOCAB), rope_parameters=ROPE)
    config = Qwen2_5_VLConfig(vision_config=vision, text_config=text, image_token_id=4, vision_start_token_id=5, vision_end_token_id=6, video_token_id=7)
    model = _ready(Qwen2_5_VLForConditionalGeneration(config), len(QWEN_SPECIAL), new_tokens)
    return model, _qwen_processor(Qwen2_5_VLProcessor, Qwen2VLVideoProcessor, max_pixels)


def qwen3_vl(new_tokens: int = 3):
    """Qwen3-VL: 2 vision blocks (block 0 also feeds a deepstack merger), patch 8, 2x2 merge,
    learned position embeddings (8 x 8, interpolated); Qwen3 text 32 x 2 layers."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor, Qwen3VLVideoProcessor

    torch.manual_seed(0)
    vision = dict(QWEN_VISION, num_position_embeddings=64, deepstack_visual_indexes=[0])
    text = dict(TEXT, vocab_size=len(QWEN_VOCAB), head_dim=16, rope_parameters=dict(ROPE, mrope_interleaved=True))
    config = Qwen3VLConfig(vision_config=vision, text_config=text, image_token_id=4, vision_start_token_id=5, vision_end_token_id=6, video_token_id=7)
    model = _ready(Qwen3VLForConditionalGeneration(config), len(QWEN_SPECIAL), new_tokens)
    return model, _qwen_processor(Qwen3VLProcessor, Qwen3VLVideoProcessor)


IDEFICS_SPECIAL = ["<pad>", "<unk>", "<s>", "</s>", "<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>"]
IDEFICS_VOCAB = IDEFICS_SPECIAL + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)] + WORDS
IDEFICS_CHAT = (
    "{% for m in messages %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endfor %}"
)


def idefics3(new_tokens: int = 3, longest_edge: int = 128, smolvlm: bool = False):
    """Idefics3 (or SmolVLM, the same tower and connector, with its own SmolVLMProcessor and image
    processor): SigLIP-style tower 32 x 2 blocks at 32 px tiles, patch 8 (4 x 4 patches a tile),
    pixel shuffle 2 (2 x 2 tokens a tile); Llama text 32 x 2 layers. The processor resizes the photo's longest edge to ``longest_edge`` and
    splits it into 32-px tiles + the thumbnail (bus.jpg, 810 x 1080: 4 x 3 tiles)."""
    import transformers as hf

    name = "SmolVLM" if smolvlm else "Idefics3"
    Config, Model = getattr(hf, f"{name}Config"), getattr(hf, f"{name}ForConditionalGeneration")
    torch.manual_seed(0)
    vision = dict(SMALL, image_size=32, patch_size=PATCH)
    text = dict(TEXT, model_type="llama", vocab_size=len(IDEFICS_VOCAB))
    config = Config(vision_config=vision, text_config=text, scale_factor=2, image_token_id=IDEFICS_VOCAB.index("<image>"))
    model = _ready(Model(config), len(IDEFICS_VOCAB) - len(WORDS), new_tokens)
    images = getattr(hf, f"{name}ImageProcessor")(size={"longest_edge": longest_edge}, max_image_size={"longest_edge": 32})
    extra = {"video_processor": hf.SmolVLMVideoProcessor()} if smolvlm else {}  # SmolVLMProcessor: needs num2words
    words = tokenizer(IDEFICS_VOCAB, IDEFICS_SPECIAL[4:])
    processor = getattr(hf, f"{name}Processor")(image_processor=images, tokenizer=words, image_seq_len=4, chat_template=IDEFICS_CHAT, **extra)
    return model, processor


SIGLIP = dict(SMALL, model_type="siglip_vision_model", image_size=32, patch_size=PATCH)
GEMMA_SPECIAL = ["<pad>", "<unk>", "<s>", "</s>", "<image>", "<start_of_image>", "<end_of_image>"]
GEMMA_VOCAB = GEMMA_SPECIAL + WORDS


def paligemma(new_tokens: int = 3):
    """PaliGemma: SigLIP tower 32 x 2 blocks at 32 px, patch 8 (a 4 x 4 grid, 16 image tokens);
    Gemma text 32 x 2 layers; the answer is the prefix-LM's causal suffix."""
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration, PaliGemmaProcessor, SiglipImageProcessor

    torch.manual_seed(0)
    text = dict(TEXT, model_type="gemma", vocab_size=len(GEMMA_VOCAB), head_dim=16)
    config = PaliGemmaConfig(vision_config=SIGLIP, text_config=text, image_token_id=GEMMA_VOCAB.index("<image>"), projection_dim=32)
    model = _ready(PaliGemmaForConditionalGeneration(config), len(GEMMA_SPECIAL), new_tokens)
    images = SiglipImageProcessor(size={"height": 32, "width": 32})
    images.image_seq_length = 16
    return model, PaliGemmaProcessor(image_processor=images, tokenizer=tokenizer(GEMMA_VOCAB, ["<image>"]))


def gemma3(new_tokens: int = 3, pan_and_scan: bool = False):
    """Gemma 3: SigLIP tower 32 x 2 blocks at 32 px, patch 8 (4 x 4 patches) average-pooled to
    ``mm_tokens_per_image`` = 4 (2 x 2) image tokens; Gemma 3 text 32 x 2 layers. ``pan_and_scan``:
    a processor that always passes ``do_pan_and_scan=True`` (crops of at least 256 px, the
    processor's defaults; bus.jpg: the original + 2 crops, one above the other)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessor, Gemma3Processor, PreTrainedTokenizerFast

    torch.manual_seed(0)
    text = dict(TEXT, model_type="gemma3_text", vocab_size=len(GEMMA_VOCAB), head_dim=16, sliding_window=64)
    ids = {
        "image_token_index": GEMMA_VOCAB.index("<image>"),
        "boi_token_index": GEMMA_VOCAB.index("<start_of_image>"),
        "eoi_token_index": GEMMA_VOCAB.index("<end_of_image>"),
    }
    config = Gemma3Config(vision_config=SIGLIP, text_config=text, mm_tokens_per_image=4, **ids)
    model = _ready(Gemma3ForConditionalGeneration(config), len(GEMMA_SPECIAL), new_tokens)
    with torch.no_grad():  # initialised to zeros: the image would not reach the text model
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(0, 0.2)
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(GEMMA_VOCAB)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece()
    specials = {"image_token": "<image>", "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>"}
    words = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>", extra_special_tokens=specials
    )
    images = Gemma3ImageProcessor(size={"height": 32, "width": 32}, pan_and_scan_min_crop_size=16)
    processor = Gemma3Processor(image_processor=images, tokenizer=words, image_seq_length=4)
    if pan_and_scan:
        processor.__class__ = type("PanAndScanGemma3Processor", (Gemma3Processor,), {"__call__": _pan_and_scan})
    return model, processor


def _pan_and_scan(self, *args, **kwargs):
    from transformers import Gemma3Processor

    return Gemma3Processor.__call__(self, *args, do_pan_and_scan=True, **kwargs)


def llava_next(new_tokens: int = 3, onevision: bool = False, pinpoints=((96, 96), (64, 96), (32, 32))):
    """LLaVA-NeXT (or LLaVA-OneVision): CLIP tower (SigLIP) 32 x 2 blocks at 32 px tiles, patch 8
    (4 x 4 patches a tile + CLS, dropped; SigLIP: no CLS); Llama (Qwen2) text 32 x 2 layers; any-resolution pinpoints
    up to 96 x 96 (3 x 3 tiles). bus.jpg (810 x 1080) goes to 96 x 96: resized to 96 x 72 and
    padded 12 px left and right, which unpadding cuts."""
    import transformers as hf
    from vlm_models import IMAGE_TOKEN, VOCAB

    name = "LlavaOnevision" if onevision else "LlavaNext"
    torch.manual_seed(0)
    vision = dict(SMALL, model_type="siglip_vision_model" if onevision else "clip_vision_model", image_size=32, patch_size=PATCH)
    text = dict(TEXT, model_type="qwen2" if onevision else "llama", vocab_size=len(VOCAB))
    grid, strategy = [list(p) for p in pinpoints], "full" if onevision else "default"  # SigLIP has no CLS
    config = getattr(hf, f"{name}Config")(
        vision_config=vision,
        text_config=text,
        image_token_id=IMAGE_TOKEN,
        image_grid_pinpoints=grid,
        vision_feature_layer=-1,
        vision_feature_select_strategy=strategy,
    )
    model = _ready(getattr(hf, f"{name}ForConditionalGeneration")(config), 5, new_tokens)
    images = getattr(hf, f"{name}ImageProcessor")(
        size={"height": 32, "width": 32} if onevision else {"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_grid_pinpoints=grid
    )
    if onevision:
        extra = dict(video_processor=hf.LlavaOnevisionVideoProcessor(), num_image_tokens=(32 // PATCH) ** 2)
    else:
        extra = dict(patch_size=PATCH, num_additional_image_tokens=1)
    processor = getattr(hf, f"{name}Processor")(image_processor=images, tokenizer=tokenizer(), vision_feature_select_strategy=strategy, **extra)
    return model, processor


INTERN_SPECIAL = ["<pad>", "<unk>", "<s>", "</s>", "<IMG_CONTEXT>", "<img>", "</img>", "<video>", "<image>"]
INTERN_VOCAB = INTERN_SPECIAL + WORDS


def internvl(new_tokens: int = 3):
    """InternVL: tower 32 x 2 blocks at 32 px tiles, patch 8 (4 x 4 patches + CLS), pixel
    shuffle 0.5 (2 x 2 tokens a tile); Qwen2 text 32 x 2 layers; GotOcr2 tiles between 1 and 12
    (bus.jpg: 3 x 4 tiles) + the thumbnail."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (
        GotOcr2ImageProcessor,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        InternVLVideoProcessor,
        PreTrainedTokenizerFast,
    )

    torch.manual_seed(0)
    vision = dict(SMALL, image_size=32, patch_size=PATCH)
    text = dict(TEXT, model_type="qwen2", vocab_size=len(INTERN_VOCAB))
    config = InternVLConfig(vision_config=vision, text_config=text, image_token_id=INTERN_VOCAB.index("<IMG_CONTEXT>"), downsample_ratio=0.5)
    model = _ready(InternVLForConditionalGeneration(config), len(INTERN_SPECIAL), new_tokens)
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(INTERN_VOCAB)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece()
    specials = {"context_image_token": "<IMG_CONTEXT>", "start_image_token": "<img>", "end_image_token": "</img>", "video_token": "<video>"}
    words = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>", extra_special_tokens=specials
    )
    images = GotOcr2ImageProcessor(size={"height": 32, "width": 32}, crop_to_patches=True, min_patches=1, max_patches=12)
    return model, InternVLProcessor(image_processor=images, tokenizer=words, video_processor=InternVLVideoProcessor(), image_seq_length=4)


def blip2(new_tokens: int = 3, instruct: bool = False):
    """BLIP-2 (or InstructBLIP): tower 32 x 2 blocks at 32 px, patch 8 (4 x 4 patches + CLS), a
    1-layer Q-Former of 4 queries; OPT (Llama) text 32 x 2 layers."""
    import transformers as hf
    from vlm_models import IMAGE_TOKEN, VOCAB

    name = "InstructBlip" if instruct else "Blip2"
    torch.manual_seed(0)
    vision = dict(SMALL, image_size=32, patch_size=PATCH)
    qformer = dict(SMALL, num_hidden_layers=1, encoder_hidden_size=32, vocab_size=len(VOCAB), pad_token_id=PAD)
    if instruct:
        text = dict(TEXT, model_type="llama", vocab_size=len(VOCAB))
    else:
        text = dict(
            model_type="opt",
            hidden_size=32,
            ffn_dim=64,
            num_attention_heads=2,
            num_hidden_layers=2,
            word_embed_proj_dim=32,
            vocab_size=len(VOCAB),
            max_position_embeddings=512,
            pad_token_id=PAD,
            bos_token_id=BOS,
            eos_token_id=EOS,
        )
    config = getattr(hf, f"{name}Config")(vision_config=vision, qformer_config=qformer, text_config=text, num_query_tokens=4, image_token_index=IMAGE_TOKEN)
    model = _ready(getattr(hf, f"{name}ForConditionalGeneration")(config), 5, new_tokens)
    images = hf.BlipImageProcessor(size={"height": 32, "width": 32})
    extra = {"qformer_tokenizer": tokenizer()} if instruct else {}
    return model, getattr(hf, f"{name}Processor")(image_processor=images, tokenizer=tokenizer(), num_query_tokens=4, **extra)
