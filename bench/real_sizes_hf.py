"""The HF rows of :mod:`bench.real_sizes`: DETR-R50 at 800, RT-DETR-R50 at 640, ViLT-B/32 at
384, BLIP-base captioner at 384 — random-init models built from their configs' default
(published) sizes, processors built from parts (a BERT vocabulary of the scene words padded with filler words to
the model's vocabulary size; nothing is downloaded).

* **DETR** / **RT-DETR**: ``DetectionTask`` (= ``explain_detections``: processor, forward,
  the post-processor's kept queries, one map per kept box) beside the processor + no-grad
  forward + ``post_process_object_detection`` with the same threshold (set just below the
  K-th best query score: a random-init head scores every query alike), and beside
  pytorch-grad-cam's per-box loop (``LayerCAM`` on the same layers, one call per box);
* **ViLT**: ``explain_vqa`` (one answer; default ``gae``, and Grad-CAM) beside processor +
  no-grad forward;
* **BLIP**: ``explain_caption`` (generate, then one teacher-forced explained pass; Grad-CAM)
  beside ``generate()`` of the same tokens.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Row = dict[str, Callable[[], object]]
WORDS = "a the red green blue circle square triangle left right of what color is shape there two bus man street".split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]


def _tokenizer(size: int = 30524):
    """A BERT tokenizer over the scene words, padded with filler words to the model's vocabulary
    size (every id a random-init decoder emits decodes to a word)."""
    from transformers import BertTokenizer

    words = SPECIAL + WORDS
    return BertTokenizer(vocab={w: i for i, w in enumerate(words + [f"w{i}" for i in range(size - len(words))])}, bos_token="[DEC]")


def _detr(kind: str):
    import transformers as tf

    torch.manual_seed(0)
    if kind == "detr":  # DETR-R50: ResNetConfig's defaults are ResNet-50 (bottleneck 3-4-6-3)
        backbone = tf.ResNetConfig(out_features=["stage4"])
        model = tf.DetrForObjectDetection(tf.DetrConfig(use_timm_backbone=False, use_pretrained_backbone=False, backbone_config=backbone))
        processor = tf.DetrImageProcessor()  # shortest edge 800, longest 1333
        head = model.class_labels_classifier
    else:  # RT-DETR-R50: RTDetrConfig's defaults (ResNet-50-vd, hybrid encoder, 300 queries)
        model = tf.RTDetrForObjectDetection(tf.RTDetrConfig(use_pretrained_backbone=False))
        processor = tf.RTDetrImageProcessor()  # 640 x 640
        head = model.model.decoder.class_embed[-1]
    with torch.no_grad():  # random init scores every query alike: spread them so K stand out
        head.weight.mul_(8)
        head.bias.zero_()
    return model.eval(), processor


def detr_row(kind: str, k: int, photo, pgc: bool = True, build: Callable | None = None) -> tuple[Row, str]:
    """``build``: ``() -> (model, processor)`` instead of the real-size ``_detr(kind)`` (tests)."""
    from pytorch_grad_cam import LayerCAM

    from mmcam.adapters.detr import family
    from mmcam.tasks.detection import DetectionTask

    model, processor = build() if build is not None else _detr(kind)
    inputs = processor(images=photo, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits[0]
    sigmoid = family(model) != "softmax"
    scores = logits.sigmoid().flatten() if sigmoid else logits.softmax(-1)[:, :-1].max(-1).values
    conf = float(scores.sort(descending=True).values[k - 1]) * (1 - 1e-4)
    target = [photo.size[::-1]]

    def inference():
        with torch.no_grad():
            x = processor(images=photo, return_tensors="pt")
            return processor.post_process_object_detection(model(**x), threshold=conf, target_sizes=target)

    task = DetectionTask(model, processor=processor, conf=conf, max_boxes=k)
    exp = task(photo)
    row: Row = {"inference": inference, "mmcam": lambda: task(photo)}
    if pgc:
        queries, classes = exp.meta["raw_indices"], exp.meta["class_ids"]
        n_classes = logits.shape[-1]

        class Flat(torch.nn.Module):  # the class logits as one (B, queries * classes) tensor
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, x):
                return self.inner(pixel_values=x).logits.flatten(1)

        flat = Flat(model)
        modules = [model.get_submodule(n) for n in exp.layers]
        pixels = inputs["pixel_values"]

        class Logit:
            def __init__(self, index):
                self.index = index

            def __call__(self, output):
                return output[..., self.index]

        def pgc_loop():
            cam = LayerCAM(model=flat, target_layers=modules, reshape_transform=None)
            # DetrConvEncoder freezes the ResNet's parameters: without an input that requires grad
            # the hooked layer's output is off the graph and pytorch-grad-cam finds no gradient
            # (LayerCAM then fails on np.maximum(None, 0): the K = 1 row's TypeError)
            x = pixels.clone().requires_grad_()
            return [cam(input_tensor=x, targets=[Logit(q * n_classes + c)]) for q, c in zip(queries, classes)]

        row["pytorch-grad-cam loop"] = pgc_loop
    size = tuple(inputs["pixel_values"].shape[-2:])
    return row, f"{len(exp.items)} boxes at {size[0]}x{size[1]}, layers {','.join(exp.layers)}"


def vilt_row(method: str, photo) -> tuple[Row, str]:
    import transformers as tf

    import mmcam

    torch.manual_seed(0)
    model = tf.ViltForQuestionAnswering(tf.ViltConfig(num_labels=3129)).eval()  # ViLT-B/32, VQAv2's 3129 answers
    processor = tf.ViltProcessor(image_processor=tf.ViltImageProcessor(), tokenizer=_tokenizer(30522))  # shortest edge 384
    question = "what color is the bus"

    def inference():
        with torch.no_grad():
            return model(**processor(images=photo, text=question, return_tensors="pt")).logits.argmax(-1)

    explain = lambda: mmcam.explain_vqa(model, processor, photo, question, method=method)  # noqa: E731
    exp = explain()
    size = tuple(processor(images=photo, text=question, return_tensors="pt")["pixel_values"].shape[-2:])
    return {"inference": inference, "mmcam": explain}, f"1 answer at {size[0]}x{size[1]}, {exp.method}"


def blip_row(method: str, photo, words: int = 12) -> tuple[Row, str]:
    import transformers as tf

    import mmcam

    torch.manual_seed(0)
    text = {"bos_token_id": 5, "sep_token_id": 3, "pad_token_id": 0}
    model = tf.BlipForConditionalGeneration(tf.BlipConfig(text_config=text)).eval()  # BLIP-base: ViT-B/16 at 384, BERT-base decoder
    for module in model.modules():  # BLIP's generate() runs its text decoder's generation config
        gc = getattr(module, "generation_config", None)
        if gc is not None:  # greedy, exactly `words` tokens after [DEC], no special tokens
            gc.suppress_tokens, gc.max_length, gc.min_length, gc.num_beams, gc.do_sample = list(range(6)), words + 1, words + 1, 1, False
    processor = tf.BlipProcessor(image_processor=tf.BlipImageProcessor(), tokenizer=_tokenizer())
    pixels = processor(images=photo, return_tensors="pt")["pixel_values"]

    def generate():
        with torch.no_grad():
            return model.generate(pixel_values=pixels)

    explain = lambda: mmcam.explain_caption(model, processor, photo, method=method)  # noqa: E731

    def remeasured():  # before: the per-call DecoderLogits view was a new key, so every call timed both backwards
        from mmcam.engine.core import _MEASURED

        _MEASURED.pop(model, None)
        return explain()

    exp = explain()
    return {
        "inference": generate,
        "mmcam": explain,
        "grad mode re-measured (before)": remeasured,
    }, f"{len(exp.items)} words, {exp.method}, layers {exp.layers[:1]}"
