"""Reading images as the user's viewer shows them, with errors that say what went wrong.

:func:`load_image` returns an 8-bit RGB PIL image from a file, a PIL image, an array or a
tensor, by these rules:

* **orientation**: the EXIF orientation tag is applied (``ImageOps.exif_transpose``), so a
  phone photo is explained upright, as a viewer shows it;
* **range**: 16-bit images (``I;16``, ``I;16B``, ``uint16`` arrays) are scaled by 65535;
  32-bit integer images (``I``, how PIL opens some 16-bit files) by 65535 when their values
  fit in 0–65535, else by their own min–max; float images and arrays (``F``, float TIFF)
  are read as [0, 1] when they lie in it and as [0, 255] when they lie in that, and refused
  otherwise (e.g. a normalised tensor) — PIL's plain ``convert("RGB")`` would saturate a
  16-bit image to white;
* **transparency**: palette, ``LA``, ``PA`` and ``RGBA`` images are composited over white;
  ``CMYK``, ``YCbCr``, ``1``, ``L`` go through PIL's conversion;
* **limits**: an image with more than :data:`MAX_PIXELS` pixels is refused before it is
  decoded (a PNG header declaring 20000×20000 costs nothing to read and 1.2 GB to decode), as
  are PIL's decompression bombs; NaN/Inf values, corrupt and truncated files raise one
  :class:`~mmcam.errors.InputError` saying what to pass;
* **no side effects**: files are opened with PIL's own ``Image.open``, also after ultralytics
  has replaced it (on import, ultralytics patches ``Image.open`` to ``pip install pi-heif``
  the first time a file is not identified: a corrupt photo must not install packages).
"""

from __future__ import annotations

import struct
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError

__all__ = ["IMAGE_SUFFIXES", "MAX_PIXELS", "list_images", "load_image", "to_rgb", "unique_stems"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}

#: images with more pixels than this are refused (a 64-megapixel photo, 8192×8192, passes);
#: pass ``max_pixels=`` to :func:`load_image` to allow more
MAX_PIXELS = 8192 * 8192

# what PIL raises on files it cannot decode
_READ_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, ImportError, EOFError, struct.error, IndexError)


def load_image(image: Any, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """An 8-bit RGB PIL image as a viewer shows it (see the module docstring), from a path,
    a PIL image, an array ``(H, W)`` / ``(H, W, 1|3|4)`` or a tensor ``(C, H, W)`` /
    ``(1, C, H, W)``."""
    if isinstance(image, (str, Path)):
        return _read_file(Path(image), max_pixels)
    if isinstance(image, Image.Image):
        _check_size(image.size, max_pixels, "the image")
        return to_rgb(ImageOps.exif_transpose(image))
    if isinstance(image, torch.Tensor):
        tensor = image.detach().cpu()
        if tensor.ndim == 4 and tensor.shape[0] == 1:
            tensor = tensor[0]
        if tensor.ndim == 2:
            tensor = tensor[None]
        if tensor.ndim != 3 or tensor.shape[0] not in (1, 3, 4):
            raise InputError(
                f"an image tensor must be (C, H, W) or (1, C, H, W) with C = 1, 3 or 4, got shape {tuple(image.shape)}; pass one image, e.g. batch[0]"
            )
        if tensor.dtype == torch.bfloat16 or tensor.dtype == torch.float16:
            tensor = tensor.float()
        return _from_array(tensor.permute(1, 2, 0).numpy(), max_pixels, "image tensor")
    if isinstance(image, np.ndarray):
        if image.ndim == 3 and image.shape[0] in (1, 3, 4) and image.shape[-1] not in (1, 3, 4):
            raise InputError(f"the image array has shape {image.shape}, channels first; pass it channels last (H, W, C): np.transpose(array, (1, 2, 0))")
        return _from_array(image, max_pixels, "image array")
    raise InputError(f"cannot use {type(image).__name__} as an image; pass a file path, a PIL image, an array (H, W, 3) or a tensor (3, H, W)")


def _pil_open(path: Path) -> Image.Image:
    """PIL's own opener: the one ultralytics kept when it replaced ``Image.open`` (whose
    replacement runs ``check_requirements("pi-heif")``, an auto-install, on unidentified files)."""
    patches = sys.modules.get("ultralytics.utils.patches")
    opener = getattr(patches, "_image_open", None) if patches is not None and Image.open is getattr(patches, "image_open", None) else None
    return (opener or Image.open)(path)


def _read_file(path: Path, max_pixels: int) -> Image.Image:
    if not path.exists():
        raise InputError(f"image file {str(path)!r} does not exist; pass an existing image path")
    if path.is_dir():
        raise InputError(f"{str(path)!r} is a directory; pass an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with _pil_open(path) as img:
                _check_size(img.size, max_pixels, f"image {str(path)!r}")
                img.load()
                return to_rgb(ImageOps.exif_transpose(img))
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise InputError(
            f"image {str(path)!r} is refused as a possible decompression bomb ({error}); pass a "
            f"smaller image (at most {max_pixels} pixels, mmcam.io.MAX_PIXELS)"
        ) from error
    except _READ_ERRORS as error:
        # ImportError: importing ultralytics patches Image.open to try an optional HEIF
        # decoder on files PIL cannot read
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InputError(f"cannot read image {str(path)!r} (corrupt, truncated or not an image: {reason}); pass a readable PNG/JPEG/TIFF file") from error


def _check_size(size: tuple[int, int], max_pixels: int, what: str) -> None:
    w, h = size
    if w * h > max_pixels:
        raise InputError(
            f"{what} is {w}x{h} = {w * h} pixels, more than the limit of {max_pixels} "
            "(mmcam.io.MAX_PIXELS); pass a smaller image or load_image(..., max_pixels=N)"
        )
    if w == 0 or h == 0:
        raise InputError(f"{what} is empty ({w}x{h}); pass an image with pixels")


def to_rgb(img: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of ``img`` by its real range (16-bit, 32-bit and float modes scaled,
    transparency composited over white); orientation is not changed here."""
    mode = img.mode
    if mode == "RGB":
        return img.copy()
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _from_array(np.asarray(img), None, f"{mode} image", pil_mode=mode)
    if mode in ("P", "PA", "LA", "La", "RGBA", "RGBa"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as error:
        raise InputError(f"cannot convert an image of mode {mode!r} to RGB ({error}); pass an RGB or grayscale image") from error


def _from_array(arr: np.ndarray, max_pixels: int | None, what: str, pil_mode: str | None = None) -> Image.Image:
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise InputError(f"an {what} must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got shape {arr.shape}; pass one grayscale, RGB or RGBA image")
    if max_pixels is not None:
        _check_size((arr.shape[1], arr.shape[0]), max_pixels, f"the {what}")
    if arr.size == 0:
        raise InputError(f"the {what} is empty (shape {arr.shape}); pass an image with pixels")
    arr = _to_uint8(arr, what, pil_mode)
    if arr.ndim == 3 and arr.shape[-1] == 4:
        return to_rgb(Image.fromarray(arr, "RGBA"))
    return Image.fromarray(arr).convert("RGB")


def _to_uint8(arr: np.ndarray, what: str, pil_mode: str | None) -> np.ndarray:
    """8-bit values of an array by its dtype's (or, for floats, its detected) range."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if arr.dtype == np.uint16 or arr.dtype == np.dtype(">u2"):
        return _scaled(arr.astype(np.float32), 65535.0)
    if np.issubdtype(arr.dtype, np.integer):
        low, high = int(arr.min()), int(arr.max())
        if pil_mode == "I":  # how PIL opens some 16-bit files: 16-bit data in a 32-bit container
            if low >= 0 and high <= 65535:
                return _scaled(arr.astype(np.float32), 65535.0)
            return _scaled((arr - low).astype(np.float64), float(max(high - low, 1)))
        if low >= 0 and high <= 255:
            return arr.astype(np.uint8)
        if low >= 0 and high <= 65535:
            return _scaled(arr.astype(np.float32), 65535.0)
        raise InputError(f"the {what} holds integers in [{low}, {high}]; pass uint8 (0–255), uint16 (0–65535) or floats in [0, 1]")
    if np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
        finite = np.isfinite(arr)
        if not finite.all():
            bad = int(arr.size - finite.sum())
            raise InputError(f"the {what} has {bad} NaN/Inf values; pass finite values (e.g. np.nan_to_num(array)) in [0, 1] or [0, 255]")
        low, high = float(arr.min()), float(arr.max())
        tolerance = 1e-3
        if low >= -tolerance and high <= 1 + tolerance:
            return _scaled(arr, 1.0)
        if low >= -tolerance and high <= 255 + tolerance:
            return _scaled(arr, 255.0)
        raise InputError(
            f"the {what} holds floats in [{low:.4g}, {high:.4g}], neither [0, 1] nor [0, 255] (a "
            "normalised tensor?); pass an unnormalised image in [0, 1], e.g. "
            "(x - x.min()) / (x.max() - x.min())"
        )
    raise InputError(f"the {what} has dtype {arr.dtype}; pass uint8, uint16 or float values")


def _scaled(arr: np.ndarray, full: float) -> np.ndarray:
    return np.clip(np.round(arr * (255.0 / full)), 0, 255).astype(np.uint8)


def list_images(path: str | Path) -> list[Path]:
    """Image files in a directory (sorted), or the single file given."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{str(path)!r} does not exist; pass an image file or a directory of images")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in {str(path)!r}")
    return files


def unique_stems(paths: Iterable[str | Path]) -> dict[Path, str]:
    """An output name per input file, unique across ``paths``: the file's stem when no other
    file shares it, else stem and suffix (``cat.png`` → ``cat-png``, ``cat.jpg`` → ``cat-jpg``),
    and a counter when even those collide (same name in different folders)."""
    paths = [Path(p) for p in paths]
    counts: dict[str, int] = {}
    for p in paths:
        counts[p.stem] = counts.get(p.stem, 0) + 1
    out: dict[Path, str] = {}
    taken: set[str] = set()
    for p in paths:
        name = p.stem if counts[p.stem] == 1 else f"{p.stem}-{p.suffix.lstrip('.').lower() or 'file'}"
        base, n = name, 1
        while name in taken:
            n += 1
            name = f"{base}-{n}"
        taken.add(name)
        out[p] = name
    return out
