"""More HF DETR-family detectors (Deformable DETR, DAB-DETR, YOLOS, D-FINE, RT-DETRv2, LW-DETR,
RF-DETR): random-init tiny models, each image processor at its real input size (built offline
from kwargs), on real photos. The kept boxes equal the processor's own
``post_process_object_detection`` in the photo's pixels; one map per box; the K-at-once maps
equal one-box-at-a-time maps; the model is left as found."""

from __future__ import annotations

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
PHOTOS = {
    "bus": lambda: np.asarray(load_image(ASSETS / "bus.jpg")),  # 1080 x 810
    "zidane": lambda: np.asarray(load_image(ASSETS / "zidane.jpg")),  # 720 x 1280
    "astronaut": skimage.astronaut,  # 512 x 512
    "coffee": skimage.coffee,  # 400 x 600
}
HEADS = dict(d_model=32, num_queries=8, num_labels=3)
DECODER = dict(decoder_layers=2, decoder_ffn_dim=64, decoder_n_points=2)


def resnet(config_class=None, out_features=("stage2", "stage3", "stage4")):
    """A tiny basic ResNet (strides 8 / 16 / 32 from stage2-4); nothing is downloaded."""
    return (config_class or T.ResNetConfig)(
        num_channels=3, embedding_size=8, hidden_sizes=[8, 16, 32, 32], depths=[1, 1, 1, 1], layer_type="basic", out_features=list(out_features)
    )


def _rtdetr_like(config_class, model_class):
    config = config_class(
        backbone_config=resnet(T.RTDetrResNetConfig),
        use_pretrained_backbone=False,
        encoder_hidden_dim=32,
        encoder_in_channels=[16, 32, 32],
        feat_strides=[8, 16, 32],
        decoder_in_channels=[32, 32, 32],
        num_feature_levels=3,
        encoder_layers=1,
        encoder_ffn_dim=64,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        **DECODER,
        **HEADS,
    )
    model = model_class(config)
    return model, model.model.decoder.class_embed[-1]


def build(name: str):
    """``(model, class head, processor, photo)``: the processor as the family's checkpoints ship it."""
    torch.manual_seed(0)
    if name == "deformable":
        config = T.DeformableDetrConfig(
            use_timm_backbone=False, use_pretrained_backbone=False, backbone_config=resnet(), encoder_layers=1, encoder_ffn_dim=64,
            encoder_attention_heads=2, decoder_attention_heads=2, encoder_n_points=2, num_feature_levels=3, **DECODER, **HEADS,
        )  # fmt: skip
        model = T.DeformableDetrForObjectDetection(config)
        return model, model.class_embed[-1], T.DeformableDetrImageProcessor(), "bus"  # shortest edge 800
    if name == "dab":
        config = T.DabDetrConfig(
            use_timm_backbone=False, use_pretrained_backbone=False, backbone_config=resnet(out_features=("stage4",)), hidden_size=32,
            encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
            decoder_ffn_dim=64, num_queries=8, num_labels=3,
        )  # fmt: skip
        model = T.DabDetrForObjectDetection(config)
        return model, model.class_embed, T.ConditionalDetrImageProcessor(), "zidane"  # the DAB-DETR checkpoints' processor
    if name == "yolos":
        config = T.YolosConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_detection_tokens=8, num_labels=3,
            image_size=[800, 1333], use_mid_position_embeddings=False,
        )  # fmt: skip
        model = T.YolosForObjectDetection(config)
        return model, model.class_labels_classifier.layers[-1], T.YolosImageProcessor(), "coffee"
    if name == "dfine":
        return *_rtdetr_like(T.DFineConfig, T.DFineForObjectDetection), T.RTDetrImageProcessor(), "zidane"  # 640 x 640
    if name == "rtdetrv2":
        return *_rtdetr_like(T.RTDetrV2Config, T.RTDetrV2ForObjectDetection), T.RTDetrImageProcessor(), "bus"
    vit = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, out_indices=[1, 2])
    light = dict(decoder_layers=1, decoder_self_attention_heads=2, decoder_cross_attention_heads=2, decoder_ffn_dim=64, group_detr=1, c2f_num_blocks=1, **HEADS)
    if name == "lwdetr":
        config = T.LwDetrConfig(backbone_config=T.LwDetrViTConfig(image_size=640, **vit), projector_scale_factors=[1.0], **light)
        model = T.LwDetrForObjectDetection(config)
        return model, model.class_embed, T.DeformableDetrImageProcessor(size={"height": 640, "width": 640}), "astronaut"
    config = T.RfDetrConfig(backbone_config=T.RfDetrDinov2Config(image_size=560, num_windows=2, **vit), **light)
    model = T.RfDetrForObjectDetection(config)
    return model, model.class_embed, T.RfDetrImageProcessor(size={"height": 560, "width": 560}), "coffee"


def _wake(model, head, processor, photo):
    """Random init leaves zero-initialised projections (box heads, detection tokens, position
    embeddings), so every query predicts the same box and score; give them small random values,
    then centre the class head's logits over the queries on this photo and scale them to a
    spread of 2 (neither tied nor saturated)."""
    with torch.no_grad(), eval_mode(model):
        for param in model.parameters():
            if param.ndim >= 2 and not param.any():
                param.normal_(0, 0.02)
        head.weight.normal_(0, 1.0)
        head.bias.zero_()
        score = getattr(getattr(model, "model", None), "enc_score_head", None)
        if score is not None and hasattr(model.model, "enc_output"):  # RT-DETR-style query selection: anchors
            # outside the image carry zero memory; keep their constant score below the others'
            constant = model.model.enc_output(torch.zeros(1, score.in_features))[0]
            score.bias.copy_(-(score.weight @ constant))
        logits = model(**processor(images=photo, return_tensors="pt")).logits[0]  # (queries, classes)
        scale = 2 / (logits - logits.mean(0)).std()
        head.weight.mul_(scale)
        head.bias.copy_(-logits.mean(0) * scale)
    return model


FAMILIES = ["deformable", "dab", "yolos", "dfine", "rtdetrv2", "lwdetr", "rfdetr"]
LAYERS = {
    "deformable": ["model.input_proj.0", "model.input_proj.1", "model.input_proj.2"],
    "dab": ["model.backbone.conv_encoder.model.encoder.stages.0"],
    "yolos": ["vit.encoder.layer.1.layernorm_before"],
    "dfine": ["model.decoder_input_proj.0", "model.decoder_input_proj.1", "model.decoder_input_proj.2"],
    "rtdetrv2": ["model.decoder_input_proj.0", "model.decoder_input_proj.1", "model.decoder_input_proj.2"],
    "lwdetr": ["model.backbone.projector.scale_layers.0"],
    "rfdetr": ["model.backbone.projector"],
}


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    model, head, processor, photo = build(request.param)
    photo = PHOTOS[photo]()
    return request.param, _wake(model, head, processor, photo), processor, photo


def _threshold(scores: torch.Tensor, k: int = 2) -> float:
    """A lowered threshold that keeps the processor's top ``k`` (between the k-th and k+1-th score)."""
    top = scores.sort(descending=True).values
    assert top[k - 1] - top[k] > 1e-4 and top[k - 2] - top[k - 1] > 1e-6, "near-tied scores: the kept set would depend on rounding"
    return float((top[k - 1] + top[k]) / 2)


def test_kept_boxes_equal_the_processor_and_maps_equal_single_boxes(family):
    name, model, processor, photo = family
    before = snapshot(model)
    inputs = dict(processor(images=photo, return_tensors="pt"))
    with eval_mode(model), torch.no_grad():
        out = model(**inputs)
    everything = processor.post_process_object_detection(out, threshold=0.0, target_sizes=[photo.shape[:2]])[0]
    conf = _threshold(everything["scores"])
    theirs = processor.post_process_object_detection(out, threshold=conf, target_sizes=[photo.shape[:2]])[0]

    exp = mmcam.explain_detections(model, photo, processor=processor, conf=conf)
    assert exp.layers == LAYERS[name]
    assert len(exp.items) == len(theirs["scores"]) == 2 and exp.maps.shape == (2, *photo.shape[:2])
    assert exp.meta["class_ids"] == theirs["labels"].tolist()
    torch.testing.assert_close(torch.tensor(exp.meta["confidences"]), theirs["scores"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.tensor(exp.meta["boxes"]), theirs["boxes"], atol=0.006, rtol=0)  # photo pixels, rounded to 0.01
    assert exp.meta["input_size"] == list(inputs["pixel_values"].shape[-2:]) and min(exp.meta["input_size"]) >= 560  # real input sizes
    # raw_indices are queries: the explained logit is the one the processor's score comes from
    queries, classes = exp.meta["raw_indices"], exp.meta["class_ids"]
    torch.testing.assert_close(exp.scores, out.logits[0, queries, classes], rtol=1e-4, atol=1e-5)
    probs = out.logits[0].softmax(-1) if name == "yolos" else out.logits[0].sigmoid()
    torch.testing.assert_close(probs[queries, classes], theirs["scores"], rtol=1e-5, atol=1e-6)
    assert torch.isfinite(exp.maps).all() and (exp.maps.flatten(1).amax(1) > 0).all()

    # K at once == one box at a time (the same layers, the processor's input, back to the photo)
    size = tuple(inputs["pixel_values"].shape[-2:])
    frame = Frame.resize(photo.shape[:2], size)
    reshape = Tokens(prefix=1, grid=(size[0] // 16, size[1] // 16)) if name == "yolos" else "auto"
    with eval_mode(model):
        for k, (query, cls) in enumerate(zip(queries, classes)):
            alone = mmcam.CAM(model, exp.layers, method="layercam", reshape=reshape)(inputs, [DetectionBoxScore([query], [cls])], input_size=size)
            torch.testing.assert_close(exp.maps[k], frame.maps_to_photo(alone.maps[0, :1])[0], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(exp.scores[k], alone.scores[0, 0], rtol=1e-5, atol=1e-6)
    assert_same_state(before, snapshot(model))


def test_deformable_encoder_tokens_fold_one_level():
    """A Deformable DETR encoder layer's tokens are the levels flattened one after another; the
    default reshape folds the finest level into its grid (read from the forward), equal to
    folding by hand; a decoder layer is refused."""
    model, head, processor, _ = build("deformable")
    photo = PHOTOS["coffee"]()[:, :500]  # 400 x 500: processor input 800 x 1000
    _wake(model, head, processor, photo)
    inputs = dict(processor(images=photo, return_tensors="pt"))
    exp = mmcam.explain_detections(model, photo, processor=processor, conf=0.0, max_boxes=1, layers="model.encoder.layers.0")
    h, w = inputs["pixel_values"].shape[-2] // 8, inputs["pixel_values"].shape[-1] // 8  # level 0: stride 8
    by_hand = lambda t: t[:, : h * w].transpose(1, 2).reshape(t.shape[0], t.shape[2], h, w)  # noqa: E731
    with eval_mode(model):
        target = [DetectionBoxScore(exp.meta["raw_indices"], exp.meta["class_ids"])]
        ref = mmcam.CAM(model, "model.encoder.layers.0", method="layercam", reshape=by_hand)(inputs, target)
    assert ref.raw.shape[-2:] == (h, w)
    torch.testing.assert_close(exp.maps, Frame.resize(photo.shape[:2], (h * 8, w * 8)).maps_to_photo(ref.maps[0]), rtol=1e-4, atol=1e-5)
    with pytest.raises(InputError, match="not spatial"):
        mmcam.explain_detections(model, photo, processor=processor, conf=0.0, max_boxes=1, layers="model.decoder.layers.0")


def test_without_processor_normalises_as_the_family():
    """No processor: the photo at its size (or ``size``), normalised as the family's processor
    does — RT-DETR-style processors rescale only, the others use ImageNet mean / std."""
    from mmcam.adapters.detr import pixel_values

    x = torch.rand(1, 3, 8, 8)
    rtdetrv2, _, _, _ = build("rtdetrv2")
    rfdetr, _, _, _ = build("rfdetr")
    assert torch.equal(pixel_values(rtdetrv2, x), x)
    mean, std = torch.tensor((0.485, 0.456, 0.406))[:, None, None], torch.tensor((0.229, 0.224, 0.225))[:, None, None]
    torch.testing.assert_close(pixel_values(rfdetr, x), (x - mean) / std)
