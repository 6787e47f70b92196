"""Frame: photo -> model input -> photo, against values worked out by hand."""

from __future__ import annotations

import torch

from mmcam.adapters.frame import Frame


def test_letterbox_boxes_and_maps_go_back_to_the_photo():
    # a 100 x 200 photo letterboxed into 128 x 128: scale 0.64, content 64 x 128 at top = 32
    frame = Frame((100, 200), (128, 128), (0.64, 0.64), (32.0, 0.0), "letterbox")
    boxes = torch.tensor([[0.0, 32.0, 128.0, 96.0], [64.0, 40.0, 96.0, 200.0]])
    torch.testing.assert_close(frame.boxes_to_photo(boxes), torch.tensor([[0.0, 0.0, 200.0, 100.0], [100.0, 12.5, 150.0, 100.0]]))
    # a map that is 1 in the padding and rises with x in the content: the padding never reaches the photo
    ramp = torch.zeros(1, 128, 128)
    ramp[0, :32] = ramp[0, 96:] = 1.0
    ramp[0, 32:96] = torch.arange(128.0) / 127
    on_photo = frame.maps_to_photo(ramp)
    assert on_photo.shape == (1, 100, 200)
    # rows are equal (every photo row lies inside the content) and columns rise from 0 to 1
    torch.testing.assert_close(on_photo[0, 0], on_photo[0, -1])
    assert on_photo[0, 0, 0] == 0 and abs(float(on_photo[0, 0, -1]) - 1) < 1e-6
    assert (on_photo[0, 0, 1:] >= on_photo[0, 0, :-1]).all()


def test_centre_crop_is_zero_where_the_model_saw_nothing():
    # 720 x 1280 -> shorter side 256 (256 x 455) -> centre crop 224: offsets top 16, left 116
    frame = Frame.resize_crop((720, 1280), (256, 455), (224, 224), "crop")
    assert frame.offset == (-16.0, -116.0) and frame.input == (224, 224)
    heat = frame.maps_to_photo(torch.rand(2, 7, 7))
    left_edge = int(116 / frame.scale[1])  # the crop starts at photo column 116 / (455 / 1280) = 326
    assert heat[:, :, : left_edge - 2].abs().max() == 0 and heat[:, :, -(left_edge - 2) :].abs().max() == 0
    assert heat[:, :, left_edge + 2 : -left_edge - 2].amin() >= 0 and heat.amax() == 1


def test_a_plain_resize_interpolates_the_whole_grid():
    frame = Frame.resize((30, 40), (15, 20))
    logits = torch.randn(1, 3, 15, 20)
    torch.testing.assert_close(frame.logits_to_photo(logits), torch.nn.functional.interpolate(logits, size=(30, 40), mode="bilinear", align_corners=False))
    assert Frame.resize((8, 8), (8, 8)).is_identity
