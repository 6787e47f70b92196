"""Small models as users hold them and the bad or unusual image files of the catalogue
(``tests/test_catalogue.py``), written on demand into a temporary directory."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn


class SmallCNN(nn.Module):
    def __init__(self, in_channels: int = 3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        return self.fc(self.block(self.stem(x)).mean((2, 3)))


class SharedReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.act = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3), nn.ReLU()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.act(self.b(self.act(self.a(x)))).mean((2, 3)))


class Buggy(SmallCNN):
    def forward(self, x):
        return super().forward(x)[:, :, None] @ torch.ones(3, 3)  # a bug in the user's model


def user_model(kind: str = "plain") -> nn.Module:
    """A small CNN the way users hold it: mixed training flags, a frozen parameter, a stale
    ``.grad``, the user's own hooks."""
    torch.manual_seed(0)
    model = SmallCNN().train()
    model.stem.eval()
    model.stem[0].weight.requires_grad_(False)
    model.fc.weight.grad = torch.full_like(model.fc.weight, 0.5)
    model.block.register_forward_hook(lambda m, i, o: None)
    if kind == "eval":
        model.eval()
    return model


X = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def tiny_vit() -> nn.Module:
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(image_size=16, patch_size=8, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, num_labels=3)
    model = ViTForImageClassification(config).train()  # train mode: dropout flags must come back
    model.classifier.reset_parameters()  # torchvision/HF heads may start at zero
    return model


def png_declaring(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def write_file(tmp: Path, name: str) -> Path:
    """The catalogue's files, written on demand into ``tmp``."""
    path = tmp / name
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (12, 20, 3), np.uint8)
    good = io.BytesIO()
    Image.fromarray(rgb).save(good, "PNG")
    if name == "truncated.png":
        path.write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    elif name == "random.jpg":
        path.write_bytes(rng.integers(0, 255, 400, np.uint8).tobytes())
    elif name == "empty.png":
        path.write_bytes(b"")
    elif name == "text.png":
        path.write_text("hello, not a picture\n")
    elif name == "bomb.png":
        path.write_bytes(png_declaring(20000, 20000))
    elif name == "huge.png":
        path.write_bytes(png_declaring(8200, 8200))
    elif name == "odd.tif":
        Image.fromarray(np.linspace(-3, 7, 64, dtype=np.float32).reshape(8, 8)).save(path)
    elif name == "nan.tif":
        arr = np.zeros((8, 8), np.float32)
        arr[2, 2] = np.nan
        Image.fromarray(arr).save(path)
    elif name == "rotated.jpg":
        exif = Image.Exif()
        exif[0x0112] = 6
        Image.fromarray(rgb).save(path, exif=exif)
    elif name == "gray16.png":
        Image.fromarray((np.arange(12 * 20).reshape(12, 20) * 200).astype(np.uint16)).save(path)
    elif name == "unit.tif":
        Image.fromarray(np.linspace(0, 1, 240, dtype=np.float32).reshape(12, 20)).save(path)
    elif name == "palette.png":
        Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(path, transparency=0)
    elif name == "la.png":
        Image.fromarray(rgb).convert("LA").save(path)
    elif name == "rgba.png":
        Image.fromarray(np.dstack([rgb, rng.integers(0, 255, (12, 20), np.uint8)])).save(path)
    elif name == "cmyk.jpg":
        Image.fromarray(rgb).convert("CMYK").save(path)
    elif name == "bilevel.png":
        Image.fromarray(rgb).convert("1").save(path)
    elif name == "dir":
        path.mkdir()
    return path


def half(dtype):
    def build():
        return user_model("eval").to(dtype)

    return build


def channels_last():
    return user_model("eval").to(memory_format=torch.channels_last)


def data_parallel():
    return nn.DataParallel(user_model("eval"))


def all_frozen():
    model = user_model("eval")
    model.requires_grad_(False)
    return model


def with_every_hook():
    model = user_model("eval")
    model.stem.register_forward_pre_hook(lambda m, a: None)
    model.block.register_forward_hook(lambda m, a, out: out * 1.0)  # a hook that replaces the output
    model.block.register_full_backward_hook(lambda m, gi, go: None)
    model.fc.register_full_backward_pre_hook(lambda m, go: None)
    model.register_forward_hook(lambda m, a, kw, out: None, with_kwargs=True)
    return model


def tiny_segformer() -> nn.Module:
    """A train-mode Segformer: its decode head's BatchNorm updates statistics on any forward."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    torch.manual_seed(0)
    config = SegformerConfig(
        num_channels=3,
        num_encoder_blocks=2,
        depths=[1, 1],
        sr_ratios=[2, 1],
        hidden_sizes=[8, 16],
        patch_sizes=[7, 3],
        strides=[4, 2],
        num_attention_heads=[1, 2],
        mlp_ratios=[2, 2],
        decoder_hidden_size=16,
        num_labels=3,
    )
    return SegformerForSemanticSegmentation(config).train()
