"""Open-vocabulary detectors (OWL-ViT, OWLv2, Grounding DINO, MM-Grounding DINO): random-init
tiny models, each processor at its real input size and built offline (a character-level CLIP
BPE / a tiny WordPiece vocabulary), on real photos with text queries. The kept boxes equal the
processor's ``post_process_grounded_object_detection``; one map per box for the query it
answers; K at once == one box at a time; text evidence per query word; the model untouched."""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np
import pytest
import torch
from modelstate import assert_same_state, snapshot

import mmcam
from mmcam.adapters.frame import Frame
from mmcam.adapters.ultralytics import eval_mode
from mmcam.errors import InputError
from mmcam.io import load_image
from mmcam.reshape import Tokens
from mmcam.targets import DetectionBoxScore

T = pytest.importorskip("transformers")
ultralytics = pytest.importorskip("ultralytics")
skimage = pytest.importorskip("skimage.data")
ASSETS = Path(ultralytics.__file__).parent / "assets"
TEXT = ["a person", "a bus"]
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "a", "person", "bus", "red", "car"]


def clip_tokenizer(max_length: int = 16):
    """A character-level CLIP BPE (no merges); the special tokens last (OWL reads ``input_ids[0] > 0``)."""
    vocab = {c: i for i, c in enumerate(string.ascii_lowercase)}
    vocab.update({c + "</w>": 26 + i for i, c in enumerate(string.ascii_lowercase)})
    vocab.update({"<|startoftext|>": 52, "<|endoftext|>": 53})
    return T.CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def _owl(v2: bool):
    text = dict(vocab_size=54, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16)
    text.update(bos_token_id=52, eos_token_id=53, pad_token_id=53)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    if v2:  # OWLv2: 960 x 960, patch 16
        config = T.Owlv2Config(text_config=text, vision_config=dict(image_size=960, patch_size=16, **vision), projection_dim=32)
        model, image_processor = T.Owlv2ForObjectDetection(config), T.Owlv2ImageProcessor()
        return model, T.Owlv2Processor(image_processor=image_processor, tokenizer=clip_tokenizer())
    config = T.OwlViTConfig(text_config=text, vision_config=dict(image_size=768, patch_size=32, **vision), projection_dim=32)
    model, image_processor = T.OwlViTForObjectDetection(config), T.OwlViTImageProcessor()  # 768 x 768
    return model, T.OwlViTProcessor(image_processor=image_processor, tokenizer=clip_tokenizer())


def _grounding(mm: bool):
    backbone = T.ResNetConfig(
        num_channels=3, embedding_size=8, hidden_sizes=[8, 16, 32, 32], depths=[1, 1, 1, 1], layer_type="basic", out_features=["stage2", "stage3", "stage4"]
    )
    text = T.BertConfig(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    config_class, model_class = (
        (T.MMGroundingDinoConfig, T.MMGroundingDinoForObjectDetection) if mm else (T.GroundingDinoConfig, T.GroundingDinoForObjectDetection)
    )
    config = config_class(
        backbone_config=backbone, use_timm_backbone=False, use_pretrained_backbone=False, text_config=text, d_model=32, encoder_layers=1, decoder_layers=2,
        encoder_ffn_dim=64, decoder_ffn_dim=64, encoder_attention_heads=2, decoder_attention_heads=2, num_queries=8, num_feature_levels=3,
        encoder_n_points=2, decoder_n_points=2, max_text_len=32,
    )  # fmt: skip
    tokenizer = T.BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)})
    return model_class(config), T.GroundingDinoProcessor(image_processor=T.GroundingDinoImageProcessor(), tokenizer=tokenizer)  # shortest edge 800


def build(name: str):
    torch.manual_seed(0)
    model, processor = {
        "owlvit": lambda: _owl(False),
        "owlv2": lambda: _owl(True),
        "grounding": lambda: _grounding(False),
        "mm-grounding": lambda: _grounding(True),
    }[name]()
    with torch.no_grad():  # zero-initialised box heads predict one box for every candidate
        for param in model.parameters():
            if param.ndim >= 2 and not param.any():
                param.normal_(0, 0.02)
        if "owl" in name:  # boxes that are not all saturated; query logits of spread 2 on the photo
            model.box_head.dense2.weight.mul_(0.01)
            model.box_head.dense2.bias.normal_(0, 0.5)
            head = model.class_head
            for linear in (head.logit_shift, head.logit_scale):
                linear.weight.zero_()
                linear.bias.zero_()  # logits = similarity x (elu(0) + 1)
            similarity = model.eval()(**processor(images=photo(PHOTOS[name]), text=TEXT, return_tensors="pt")).logits
            factor = float(2 / similarity.std())
            head.logit_shift.bias.fill_(-similarity.mean() - 3 / factor)  # logits of mean -3
            head.logit_scale.bias.fill_(np.log(factor) if factor < 1 else factor - 1)  # elu(b) + 1 = factor
    return model.eval(), processor


PHOTOS = {"owlvit": "zidane", "owlv2": "bus", "grounding": "bus", "mm-grounding": "astronaut"}


def photo(name: str) -> np.ndarray:
    if name == "astronaut":
        return skimage.astronaut()
    return np.asarray(load_image(ASSETS / f"{name}.jpg"))


@pytest.fixture(scope="module", params=["owlvit", "owlv2", "grounding", "mm-grounding"])
def detector(request):
    return (request.param, *build(request.param), photo(PHOTOS[request.param]))


def _theirs(name, model, processor, image, threshold):
    inputs = dict(processor(images=image, text=TEXT, return_tensors="pt"))
    with eval_mode(model), torch.no_grad():
        out = model(**inputs)
    size = [image.shape[:2]]
    if "grounding" in name:
        return (
            inputs,
            out,
            processor.post_process_grounded_object_detection(out, inputs["input_ids"], threshold=threshold, text_threshold=0.25, target_sizes=size)[0],
        )
    return inputs, out, processor.post_process_grounded_object_detection(out, threshold=threshold, target_sizes=size, text_labels=[TEXT])[0]


def _threshold(name, model, processor, image, k=2):
    """A lowered threshold keeping the processor's top ``k`` boxes."""
    _, _, everything = _theirs(name, model, processor, image, 0.0)
    top = everything["scores"].sort(descending=True).values
    assert top[k - 1] - top[k] > 1e-4, "near-tied scores"
    return float((top[k - 1] + top[k]) / 2)


def test_kept_boxes_equal_the_processor_with_one_map_per_box(detector):
    name, model, processor, image = detector
    before = snapshot(model)
    conf = _threshold(name, model, processor, image)
    inputs, out, theirs = _theirs(name, model, processor, image, conf)
    exp = mmcam.explain_detections(model, image, processor=processor, text=TEXT, conf=conf)
    assert len(exp.items) == len(theirs["scores"]) == 2 and exp.maps.shape == (2, *image.shape[:2])
    torch.testing.assert_close(torch.tensor(exp.meta["confidences"]), theirs["scores"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.tensor(exp.meta["boxes"]), theirs["boxes"], atol=0.006, rtol=0)  # photo pixels
    assert min(exp.meta["input_size"]) >= 768 and exp.meta["queries"] == TEXT
    index, answered = exp.meta["raw_indices"], exp.meta["class_ids"]
    if "grounding" in name:  # the query whose phrase holds the box's best phrase token; the processor's own text labels
        assert exp.meta["text_labels"] == theirs["text_labels"]
        ids = inputs["input_ids"][0].tolist()
        phrase_of = {1: 0, 2: 0, 4: 1, 5: 1}  # [CLS] a person . a bus . [SEP]
        assert ids == [2, 6, 7, 5, 6, 8, 5, 3]
        tokens = [max(phrase_of, key=lambda t, q=q, c=c: out.logits[0, q, t] if phrase_of[t] == c else -1e9) for q, c in zip(index, answered)]
        torch.testing.assert_close(exp.scores, out.logits[0, index, tokens], rtol=1e-4, atol=1e-5)
        targets = [DetectionBoxScore([q], [t]) for q, t in zip(index, tokens)]
    else:  # the patch's best query, its logit explained
        assert exp.meta["class_ids"] == theirs["labels"].tolist() and exp.meta["labels"] == theirs["text_labels"]
        torch.testing.assert_close(exp.scores, out.logits[0, index, answered], rtol=1e-4, atol=1e-5)
        targets = [DetectionBoxScore([p], [q]) for p, q in zip(index, answered)]
    # K at once == one box at a time
    size = tuple(inputs["pixel_values"].shape[-2:])
    if name == "owlv2":  # padded to a square, then resized
        scale = size[0] / max(image.shape[:2])
        frame = Frame(image.shape[:2], size, (scale, scale), (0.0, 0.0))
    else:
        frame = Frame.resize(image.shape[:2], size)
    patch = model.config.vision_config.patch_size if "owl" in name else None
    reshape = Tokens(prefix=1, grid=(size[0] // patch, size[1] // patch)) if patch else "auto"
    with eval_mode(model):
        for k, target in enumerate(targets):
            alone = mmcam.CAM(model, exp.layers, method="layercam", reshape=reshape)(inputs, [target], input_size=size)
            torch.testing.assert_close(exp.maps[k], frame.maps_to_photo(alone.maps[0, :1])[0], rtol=1e-4, atol=1e-5)
    # text evidence: gradient x input per query word
    evidence = exp.meta["text_evidence"]
    assert len(evidence) == 2
    for k, entry in enumerate(evidence):
        if "grounding" in name:
            assert entry["words"] == ["a", "person", "a", "bus"] and entry["queries"] == [0, 0, 1, 1]
        else:
            assert entry["words"] == TEXT[answered[k]].split() and entry["queries"] == [answered[k]] * 2
        assert all(np.isfinite(entry["values"])) and any(v != 0 for v in entry["values"])
    torch.testing.assert_close(torch.tensor(evidence[0]["values"]), _evidence_by_hand(name, model, inputs, index[0], answered[0]), rtol=1e-3, atol=1e-5)
    assert_same_state(before, snapshot(model))


def _evidence_by_hand(name, model, inputs, index, answered):
    """Box 0's text evidence by autograd on the word embeddings: per word, the summed gradient x input."""
    word = "model.text_backbone.embeddings.word_embeddings" if "grounding" in name else f"{name}.text_model.embeddings.token_embedding"
    held = []
    handle = model.get_submodule(word).register_forward_hook(lambda m, a, o: held.append(o.detach().requires_grad_(True)) or held[-1])
    try:
        with eval_mode(model):
            out = model(**inputs)
    finally:
        handle.remove()
    if "grounding" in name:  # [CLS] a person . a bus . [SEP]: the answered phrase's best token
        logit = out.logits[0, index, [1, 2] if answered == 0 else [4, 5]].max()
        value = (torch.autograd.grad(logit, held[0])[0] * held[0]).sum(-1)[0]
        return torch.stack([value[1], value[2], value[4], value[5]]).detach()
    value = (torch.autograd.grad(out.logits[0, index, answered], held[0])[0] * held[0]).sum(-1)[answered]
    second = len(TEXT[answered].split()[1])  # character tokens: <start> a</w> p e r s o n</w> <end>
    return torch.stack([value[1], value[2 : 2 + second].sum()]).detach()


def test_bad_text_queries():
    model, processor = build("owlvit")
    image = skimage.coffee()
    with pytest.raises(InputError, match="at least one"):
        mmcam.explain_detections(model, image, processor=processor, text=[])
    with pytest.raises(InputError, match="pass text="):
        mmcam.explain_detections(model, image, processor=processor)
    with pytest.raises(InputError, match="at most 16 per query"):
        mmcam.explain_detections(model, image, processor=processor, text=["a very long query naming a person"])
    grounding, gprocessor = build("grounding")
    with pytest.raises(InputError, match="max_text_len=32"):
        mmcam.explain_detections(grounding, image, processor=gprocessor, text=["a person"] * 12)
    with pytest.raises(InputError, match="fixed classes"):
        mmcam.explain_detections(mmcam.zoo.load("detr")[0], image, text=TEXT)


def test_cli_explain_detect_with_text(tmp_path):
    """``mmcam explain --task detect --text ...`` on a saved OWL-ViT directory (loaded offline as a
    zero-shot detector): the boxes of the processor, labelled by the queries; ``mmcam batch`` with
    the same ``--text`` on a folder (two photos in one forward) keeps the same boxes."""
    import json

    from PIL import Image

    from mmcam import cli

    model, processor = build("owlvit")
    model.save_pretrained(tmp_path / "owl")
    processor.save_pretrained(tmp_path / "owl")
    image = photo("zidane")
    Image.fromarray(image).save(tmp_path / "zidane.png")
    conf = _threshold("owlvit", model, processor, image)
    _, _, theirs = _theirs("owlvit", model, processor, image, conf)
    out = tmp_path / "out"
    args = [
        "explain",
        str(tmp_path / "zidane.png"),
        "--task",
        "detect",
        "--model",
        str(tmp_path / "owl"),
        "--text",
        *TEXT,
        "--conf",
        str(conf),
        "--out",
        str(out),
    ]
    assert cli.main(args) in (0, None)
    saved = json.loads((out / "zidane.json").read_text())
    assert saved["labels"] == theirs["text_labels"] and len(saved["items"]) == 2
    torch.testing.assert_close(torch.tensor(saved["boxes"]), theirs["boxes"], atol=0.006, rtol=0)
    assert saved["queries"] == TEXT and len(saved["text_evidence"]) == 2
    batch_out = tmp_path / "batch"
    Image.fromarray(photo("bus")).save(tmp_path / "bus.png")
    (tmp_path / "imgs").mkdir()
    for name in ("zidane.png", "bus.png"):
        (tmp_path / "imgs" / name).write_bytes((tmp_path / name).read_bytes())
    batch = ["batch", str(tmp_path / "imgs"), "--task", "detect", "--model", str(tmp_path / "owl"), "--text", *TEXT]
    assert cli.main([*batch, "--conf", str(conf), "--workers", "0", "--out", str(batch_out)]) == 0  # two photos in one forward
    rows = [r for r in map(json.loads, (batch_out / "index.jsonl").read_text().splitlines()) if Path(r["file"]).name == "zidane.png"]
    assert [r["status"] for r in rows] == ["ok", "ok"] and [r["label"].rsplit(" ", 1)[0] for r in rows] == theirs["text_labels"]
    torch.testing.assert_close(torch.tensor([r["box"] for r in rows]), theirs["boxes"], atol=0.006, rtol=0)
