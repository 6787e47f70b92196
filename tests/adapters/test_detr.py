"""HF DETR family: one map per kept query from one forward, kept exactly as the post-processor keeps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from modelstate import assert_same_state, snapshot

import mmcam
from mmcam.adapters.ultralytics import eval_mode
from mmcam.errors import InputError, TargetError
from mmcam.targets import DetectionBoxScore
from mmcam.tasks import explain_detections

transformers = pytest.importorskip("transformers")

IMAGE = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
TINY = dict(
    d_model=32,
    encoder_layers=1,
    decoder_layers=1,
    encoder_attention_heads=2,
    decoder_attention_heads=2,
    encoder_ffn_dim=64,
    decoder_ffn_dim=64,
    num_queries=12,
    num_labels=3,
)


def resnet(config_class=None, out_features=("stage3",)):
    """A tiny basic ResNet (stage3 is stride 16: a 4x4 map at 64 px); nothing is downloaded."""
    config_class = config_class or transformers.ResNetConfig
    return config_class(
        num_channels=3,
        embedding_size=16,
        hidden_sizes=[16, 32, 64, 128],
        depths=[1, 1, 1, 1],
        layer_type="basic",
        out_features=list(out_features),
    )


def _spread_classes(model, head):
    """Random init gives nearly equal class scores (and a focal-loss prior bias of about -4.6 on
    sigmoid heads); widen the head and centre its bias so a few queries stand out."""
    with torch.no_grad():
        head.weight.mul_(8)
        head.bias.zero_()
    return model


def build(family: str):
    torch.manual_seed(0)
    if family == "detr":
        config = transformers.DetrConfig(use_timm_backbone=False, use_pretrained_backbone=False, backbone_config=resnet(), **TINY)
        model = transformers.DetrForObjectDetection(config)
        return _spread_classes(model, model.class_labels_classifier)
    if family == "conditional":
        config = transformers.ConditionalDetrConfig(use_timm_backbone=False, use_pretrained_backbone=False, backbone_config=resnet(), **TINY)
        model = transformers.ConditionalDetrForObjectDetection(config)
        return _spread_classes(model, model.class_labels_classifier)
    config = transformers.RTDetrConfig(
        backbone_config=resnet(transformers.RTDetrResNetConfig, ("stage2", "stage3", "stage4")),
        use_pretrained_backbone=False,
        encoder_hidden_dim=32,
        encoder_in_channels=[32, 64, 128],
        feat_strides=[8, 16, 32],
        decoder_in_channels=[32, 32, 32],
        num_feature_levels=3,
        **TINY,
    )
    model = transformers.RTDetrForObjectDetection(config)
    return _spread_classes(model, model.model.decoder.class_embed[-1])


PROCESSORS = {
    "detr": lambda: transformers.DetrImageProcessor(size={"height": 64, "width": 64}),
    "conditional": lambda: transformers.ConditionalDetrImageProcessor(size={"height": 64, "width": 64}),
    "rtdetr": lambda: transformers.RTDetrImageProcessor(size={"height": 64, "width": 64}),
}
THRESHOLD = {"detr": 0.3, "conditional": 0.3, "rtdetr": 0.3}


@pytest.fixture(scope="module", params=["detr", "conditional", "rtdetr"])
def family(request):
    return request.param, build(request.param), PROCESSORS[request.param]()


def test_kept_queries_equal_the_post_processor(family):
    name, model, processor = family
    before = snapshot(model)
    exp = explain_detections(model, IMAGE, processor=processor, conf=THRESHOLD[name])
    k = len(exp.items)
    assert k >= 2 and exp.maps.shape == (k, 64, 64)
    assert torch.isfinite(exp.maps).all() and (exp.maps.flatten(1).std(1) > 0).all()
    # the real image processor on the same inputs and outputs
    inputs = processor(images=IMAGE, return_tensors="pt")
    with eval_mode(model), torch.no_grad():
        out = model(**inputs)
    theirs = processor.post_process_object_detection(out, threshold=THRESHOLD[name], target_sizes=[(64, 64)])[0]
    torch.testing.assert_close(torch.tensor(exp.meta["confidences"]), theirs["scores"], rtol=1e-4, atol=1e-6)
    assert exp.meta["class_ids"] == theirs["labels"].tolist()
    torch.testing.assert_close(torch.tensor(exp.meta["boxes"]), theirs["boxes"].clamp(0, 64), atol=0.01, rtol=0)
    # the explained logit is the one the probability comes from, at query raw_indices[k]
    logits = out.logits[0, exp.meta["raw_indices"], exp.meta["class_ids"]]
    torch.testing.assert_close(exp.scores, logits, rtol=1e-4, atol=1e-5)
    probs = out.logits[0].softmax(-1) if name == "detr" else out.logits[0].sigmoid()
    torch.testing.assert_close(probs[exp.meta["raw_indices"], exp.meta["class_ids"]], theirs["scores"], rtol=1e-4, atol=1e-6)
    assert_same_state(before, snapshot(model))


def test_box_maps_equal_single_box_runs(family):
    name, model, processor = family
    exp = explain_detections(model, IMAGE, processor=processor, conf=THRESHOLD[name], max_boxes=3)
    inputs = dict(processor(images=IMAGE, return_tensors="pt"))
    with eval_mode(model):
        for k, (query, cls) in enumerate(zip(exp.meta["raw_indices"], exp.meta["class_ids"])):
            alone = mmcam.CAM(model, exp.layers, method="layercam")(inputs, [DetectionBoxScore([query], [cls])])
            torch.testing.assert_close(exp.maps[k], alone.maps[0, 0], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(exp.scores[k], alone.scores[0, 0], rtol=1e-5, atol=1e-6)


def test_default_layers_by_structure(family):
    name, model, processor = family
    exp = explain_detections(model, IMAGE, processor=processor, conf=THRESHOLD[name], max_boxes=1)
    if name == "rtdetr":  # the three projections of the encoder's levels into the decoder, fused
        assert exp.layers == ["model.decoder_input_proj.0", "model.decoder_input_proj.1", "model.decoder_input_proj.2"]
    else:  # the last stride-4 map: the backbone's first stage
        assert exp.layers == ["model.backbone.model.encoder.stages.0"]


def test_without_processor_and_gradcam(family):
    name, model, _ = family
    exp = explain_detections(model, IMAGE, conf=THRESHOLD[name], method="gradcam", max_boxes=2)
    assert exp.maps.shape[0] == len(exp.meta["boxes"]) >= 1 and exp.method == "gradcam"


def test_empty_and_out_of_range(family):
    name, model, processor = family
    before = snapshot(model)
    exp = explain_detections(model, IMAGE, processor=processor, conf=0.999)
    assert exp.items == [] and exp.maps.shape == (0, 64, 64) and "nothing to explain" in exp.meta["note"]
    with pytest.raises(TargetError, match="out of range"):
        explain_detections(model, IMAGE, processor=processor, candidates=([99], [0]))
    assert_same_state(before, snapshot(model))


def test_candidates_explain_given_queries(family):
    name, model, processor = family
    exp = explain_detections(model, IMAGE, processor=processor, conf=THRESHOLD[name], max_boxes=2)
    again = explain_detections(model, IMAGE, processor=processor, candidates=(exp.meta["raw_indices"], exp.meta["class_ids"]))
    torch.testing.assert_close(again.maps, exp.maps)
    assert again.meta["confidences"] == pytest.approx(exp.meta["confidences"])


def test_unsupported_model_names_the_families():
    import torchvision

    with pytest.raises(InputError, match="DetrForObjectDetection.*Faster R-CNN.*mmcam.CAM"):
        explain_detections(torchvision.models.resnet18(), IMAGE)


def test_encoder_tokens_fold_into_the_feature_grid():
    """A non-square image: DETR's encoder tokens fold into the backbone's 4x6 grid (from the
    forward, not a constant), equal to folding them by hand; decoder layers are refused."""
    model = build("detr")
    wide = (np.random.default_rng(2).random((64, 96, 3)) * 255).astype(np.uint8)
    exp = explain_detections(model, wide, conf=0.3, layers="model.encoder.layers.0", max_boxes=2)
    assert exp.maps.shape == (2, 64, 96) and torch.isfinite(exp.maps).all()
    from mmcam.adapters.detr import pixel_values

    x = pixel_values(model, torch.from_numpy(wide.astype(np.float32) / 255).permute(2, 0, 1)[None])
    by_hand = lambda t: t.transpose(1, 2).reshape(t.shape[0], t.shape[2], 4, 6)  # noqa: E731
    with eval_mode(model):
        targets = [DetectionBoxScore(exp.meta["raw_indices"], exp.meta["class_ids"])]
        ref = mmcam.CAM(model, "model.encoder.layers.0", method="layercam", reshape=by_hand)({"pixel_values": x}, targets)
    assert ref.raw.shape[-2:] == (4, 6)
    torch.testing.assert_close(exp.maps, ref.maps[0], rtol=1e-4, atol=1e-5)
    with pytest.raises(InputError, match="not spatial"):
        explain_detections(model, wide, conf=0.3, layers="model.decoder.layers.0")


def test_layer_and_grid_probe_runs_once_per_layout():
    """Explaining twice runs the probing forward once: the second call is the explaining
    forward alone (the default layer and the encoder grid come from the per-layout cache)."""
    from mmcam import zoo

    model, processor = zoo.load("detr")
    image = (np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)
    forwards = []
    handle = model.register_forward_pre_hook(lambda module, args: forwards.append(1))
    try:
        explain_detections(model, image, processor=processor, conf=0.0)
        first = len(forwards)
        explain_detections(model, image, processor=processor, conf=0.0)
    finally:
        handle.remove()
    assert len(forwards) - first == 1 and first >= 2


def test_box_term_on_kept_queries(family):
    name, model, processor = family
    plain = explain_detections(model, IMAGE, processor=processor, conf=THRESHOLD[name], max_boxes=2)
    boxed = explain_detections(model, IMAGE, processor=processor, conf=THRESHOLD[name], max_boxes=2, box_weight=0.5)
    assert boxed.meta["raw_indices"] == plain.meta["raw_indices"]
    torch.testing.assert_close(boxed.scores, plain.scores + 0.5)  # pred_boxes IoU 1 with themselves
    torch.testing.assert_close(boxed.maps, plain.maps)
