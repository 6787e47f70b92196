"""Real photos (not square) through each model's own pipeline, at real input sizes: what mmcam
explains is exactly what the model's own predictor / post-processor reports, in the photo's
pixels (random-init models, lowered thresholds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from modelstate import assert_same_state, snapshot

import mmcam
from mmcam.io import load_image

ultralytics = pytest.importorskip("ultralytics")
ASSETS = Path(ultralytics.__file__).parent / "assets"


def _photos() -> dict[str, np.ndarray]:
    skimage = pytest.importorskip("skimage.data")
    rng = np.random.default_rng(0)
    return {
        "bus": np.asarray(load_image(ASSETS / "bus.jpg")),  # 1080 x 810
        "zidane": np.asarray(load_image(ASSETS / "zidane.jpg")),  # 720 x 1280
        "coffee": skimage.coffee(),  # 400 x 600
        "chelsea": skimage.chelsea(),  # 300 x 451
        "tall": (rng.random((700, 97, 3)) * 255).astype(np.uint8),
        "wide": (rng.random((97, 700, 3)) * 255).astype(np.uint8),
    }


PHOTOS = _photos()


def _yolo(cfg: str):
    torch.manual_seed(0)
    model = ultralytics.YOLO(cfg)  # random init from the yaml: no download
    head = model.model.model[-1]
    with torch.no_grad():  # the head's prior bias makes every class tie at init; break the ties
        for branch in head.cv3:
            branch[-1].bias.add_(torch.randn_like(branch[-1].bias) * 2 + 4)
        for branch in getattr(head, "cv4", []):  # segment heads: mask coefficients that give non-empty masks
            branch[-1].bias.add_(torch.randn_like(branch[-1].bias))
    return model


@pytest.mark.parametrize("cfg", ["yolov8n.yaml", "yolo11n.yaml"])
@pytest.mark.parametrize("name", ["bus", "zidane", "tall"])
def test_yolo_boxes_equal_the_predictor_on_real_photos(cfg, name):
    model, photo = _yolo(cfg), PHOTOS[name]
    before = snapshot(model.model)
    theirs = model.predict(photo[..., ::-1].copy(), max_det=5, verbose=False)[0].boxes  # the predictor reads BGR
    exp = mmcam.explain_detections(model, photo, max_boxes=5)
    assert len(exp.items) == len(theirs) == 5
    torch.testing.assert_close(torch.tensor(exp.meta["boxes"]), theirs.xyxy, atol=0.5, rtol=0)  # photo pixels (rounded to 0.01)
    assert exp.meta["class_ids"] == theirs.cls.int().tolist()
    torch.testing.assert_close(torch.tensor(exp.meta["confidences"]), theirs.conf, atol=1e-6, rtol=1e-5)
    assert exp.maps.shape == (5, *photo.shape[:2]) and exp.image.shape == photo.shape
    h, w = photo.shape[:2]
    pipeline = exp.meta["pipeline"]
    assert pipeline["photo_size"] == [h, w] and max(pipeline["input_size"]) == 640 and min(pipeline["input_size"]) % 32 == 0
    assert_same_state(before, snapshot(model.model))


@pytest.mark.parametrize("cfg", ["yolov8n-seg.yaml", "yolo11n-seg.yaml"])
def test_yolo_instance_masks_equal_the_predictor_on_a_real_photo(cfg):
    from ultralytics.utils.ops import scale_masks

    model, photo = _yolo(cfg), PHOTOS["zidane"]
    # predict() fuses Conv + BN into the model in place (AutoBackend): run it first so both see one model
    result = model.predict(photo[..., ::-1].copy(), max_det=6, verbose=False)[0]
    before = snapshot(model.model)
    exp = mmcam.explain_segmentation(model, photo, max_instances=6)
    assert len(exp.items) == len(result.boxes) >= 3
    assert exp.meta["classes"] == result.boxes.cls.int().tolist()
    torch.testing.assert_close(torch.tensor(exp.meta["boxes"]), result.boxes.xyxy, atol=0.5, rtol=0)
    # the predictor's masks are in its letterboxed input; on the photo they are its scale_masks of them
    want = scale_masks(result.masks.data[None].float(), photo.shape[:2])[0] > 0.5
    assert np.array_equal(np.stack(exp.regions), want.numpy())
    assert exp.maps.shape == (len(exp.items), *photo.shape[:2])
    assert_same_state(before, snapshot(model.model))


def test_detr_boxes_equal_the_processor_post_processing_at_800():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    backbone = transformers.ResNetConfig(depths=[1, 1, 1, 1], hidden_sizes=[32, 64, 128, 256], embedding_size=32, out_features=["stage4"])
    config = transformers.DetrConfig(
        use_timm_backbone=False,
        backbone_config=backbone,
        d_model=64,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        num_queries=20,
        num_labels=5,
        use_pretrained_backbone=False,
    )
    model = transformers.DetrForObjectDetection(config).eval()
    processor = transformers.DetrImageProcessor()  # shortest edge 800, longest 1333, as the model card
    photo = PHOTOS["bus"]
    inputs = processor(images=photo, return_tensors="pt")
    assert tuple(inputs["pixel_values"].shape[-2:]) == (1066, 800)
    with torch.no_grad():
        theirs = processor.post_process_object_detection(model(**inputs), threshold=0.15, target_sizes=[photo.shape[:2]])[0]
    exp = mmcam.explain_detections(model, photo, processor=processor, conf=0.15)
    assert len(exp.items) == len(theirs["scores"]) >= 1
    torch.testing.assert_close(torch.tensor(exp.meta["boxes"]), theirs["boxes"], atol=0.5, rtol=0)
    assert exp.meta["class_ids"] == theirs["labels"].tolist()
    torch.testing.assert_close(torch.tensor(exp.meta["confidences"]), theirs["scores"], atol=1e-5, rtol=1e-4)
    assert exp.maps.shape == (len(exp.items), *photo.shape[:2])


def test_torchvision_detector_boxes_equal_the_model_at_800():
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None, box_score_thresh=0.0, num_classes=5).eval()
    photo = PHOTOS["coffee"]
    x = torch.from_numpy(photo.astype(np.float32) / 255).permute(2, 0, 1)
    with torch.no_grad():
        theirs = model([x])[0]
    exp = mmcam.explain_detections(model, photo, max_boxes=3)
    assert len(exp.items) == 3
    torch.testing.assert_close(torch.tensor(exp.meta["boxes"]), theirs["boxes"][:3], atol=0.5, rtol=0)
    assert exp.meta["class_ids"] == theirs["labels"][:3].tolist()
    assert exp.maps.shape == (3, *photo.shape[:2])
    assert exp.meta["pipeline"]["input_size"][0] >= 800  # the model's own resize (min_size 800), padded


def test_segformer_regions_equal_the_processor_post_processing():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.SegformerConfig(num_labels=4, hidden_sizes=[16, 32, 64, 96], decoder_hidden_size=32, depths=[1, 1, 1, 1])
    model = transformers.SegformerForSemanticSegmentation(config).eval()
    processor = transformers.SegformerImageProcessor()  # 512 x 512
    photo = PHOTOS["chelsea"]
    with torch.no_grad():
        out = model(**processor(images=photo, return_tensors="pt"))
    want = processor.post_process_semantic_segmentation(out, target_sizes=[photo.shape[:2]])[0]
    exp = mmcam.explain_segmentation(model, photo, processor=processor, ignore=())
    assert exp.meta["classes"] and exp.maps.shape == (len(exp.items), *photo.shape[:2])
    for c, region in zip(exp.meta["classes"], exp.regions):
        assert np.array_equal(region, (want == c).numpy())


def test_deeplab_regions_equal_the_models_own_upsampling():
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=4).eval()
    photo = PHOTOS["chelsea"]  # shorter side 300 <= 520: fed at its size, the model upsamples to it
    x = (torch.from_numpy(photo.astype(np.float32) / 255).permute(2, 0, 1) - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor(
        [0.229, 0.224, 0.225]
    )[:, None, None]
    with torch.no_grad():
        want = model(x[None])["out"][0].argmax(0)
    exp = mmcam.explain_segmentation(model, photo, ignore=())
    for c, region in zip(exp.meta["classes"], exp.regions):
        assert np.array_equal(region, (want == c).numpy())
    assert exp.maps.shape[1:] == photo.shape[:2]


def test_classifier_maps_on_the_photo_with_the_weights_transforms():
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1  # its transforms and names only: no download
    photo = PHOTOS["zidane"]
    exp = mmcam.explain_classification(model, photo, weights=weights, topk=2)
    with torch.no_grad():
        logits = model(weights.transforms()(torch.from_numpy(photo).permute(2, 0, 1))[None])
    assert exp.meta["classes"] == logits[0].topk(2).indices.tolist()
    assert exp.items[0] == weights.meta["categories"][exp.meta["classes"][0]]
    assert exp.maps.shape == (2, 720, 1280)
    # resize 256 (shorter side) + centre crop 224: the map is zero where the model saw nothing
    assert exp.maps[:, :, :200].abs().max() == 0 and exp.maps[:, :, -200:].abs().max() == 0 and exp.maps.max() > 0
    default = mmcam.explain_classification(model, photo)
    assert default.meta["pipeline"]["input_size"] == [224, 398] and default.maps.shape == (1, 720, 1280)


@pytest.mark.parametrize("name", ["tall", "wide"])
def test_extreme_aspect_ratios_are_letterboxed_not_refused(name):
    model, photo = _yolo("yolov8n.yaml"), PHOTOS[name]
    exp = mmcam.explain_detections(model, photo, max_boxes=2)
    assert exp.maps.shape == (2, *photo.shape[:2])
    boxes = torch.tensor(exp.meta["boxes"])
    assert (boxes[:, [0, 2]] <= photo.shape[1]).all() and (boxes[:, [1, 3]] <= photo.shape[0]).all()
