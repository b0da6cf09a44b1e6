"""Image files (PNG, JPEG, BMP) decoded to 28 x 28 8-bit grayscale, the way MNIST looks.

Conversions, chosen so that an image saved from MNIST reads back bit for bit:

- ``L`` (8-bit gray) is taken as it is; ``1`` (bilevel) becomes 0/255.
- 16-bit gray (``I;16``/``I``) is scaled to 8 bits (``round(v / 257)``), never clipped.
- RGB, CMYK, palette: ITU-R 601-2 luma (Pillow's ``convert("L")``).
- Transparency (RGBA, LA, palette with a transparent colour) is composited over black, MNIST's
  background: a transparent pixel is background, a half-transparent one half as bright.
- JPEG EXIF orientation is applied, so a photo reads the way it is shown.

Files are decoded completely (PNG chunk checksums verified first), so a truncated or corrupted file
fails here rather than decoding into garbage. Before any of that, the size in the header decides:
an image over ``MAX_SOURCE_PIXELS`` is refused, and so is one that is not 28 x 28 unless resizing
is asked for, so a small file declaring a huge picture costs nothing. Resized images are stretched
(aspect ratio not kept) with Lanczos filtering, which averages over the whole footprint when
shrinking. An image over ``REDUCE_ABOVE_PIXELS`` is first shrunk by whole factors to about
``REDUCED_SIDE`` (a JPEG while it is decoded, others by box averaging right after), so its
conversions work on a small copy rather than several full-size ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import numpy as np
from PIL import ExifTags, Image, ImageOps

from aeq.core.catalog import IMAGE_SIDE
from aeq.core.errors import InputError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp"})
IMAGE_FORMATS = ("PNG", "JPEG", "BMP")
RESIZE_FILTER = Image.Resampling.LANCZOS
# Far beyond any digit scan; refuses decompression bombs before their pixels are allocated.
MAX_SOURCE_PIXELS = 8192 * 8192
# Resized images above this size are shrunk by whole factors first (about 16 MB of RGBA here).
REDUCE_ABOVE_PIXELS = 2048 * 2048
# The side that first shrink aims for: 16x the final side, so the Lanczos step that follows
# stays within a level or two of resizing the full image (measured: 8x was 5 levels off).
REDUCED_SIDE = 16 * IMAGE_SIDE
# EXIF orientations that turn the picture a quarter (width and height swap).
_QUARTER_TURNS = frozenset({5, 6, 7, 8})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_SIXTEEN_BIT_STEP = 257  # 65535 / 255
_OPAQUE = 255
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"
_BMP_SIGNATURE = b"BM"


def decode_image(path: Path, resize: bool) -> np.ndarray:
    """Read one image file as a uint8 ``(28, 28)`` array.

    Args:
        path: a PNG, JPEG or BMP file (the content decides, not the extension).
        resize: resize other sizes to 28 x 28 instead of refusing them.

    Raises:
        InputError: the file is empty, unreadable, not one of the formats, corrupt or truncated,
            implausibly large, or not 28 x 28 while ``resize`` is false.
    """
    _refuse_empty(path)
    try:
        gray = _decode(path, resize)
    except InputError:
        raise
    except Image.DecompressionBombError:
        raise InputError(f"{path} is too large to be a digit image") from None
    except Image.UnidentifiedImageError:
        if _has_known_signature(path):
            raise InputError(f"{path} is corrupt or truncated: its header is incomplete") from None
        raise InputError(f"{path} is not a PNG, JPEG or BMP image") from None
    except OSError as error:
        if error.errno is None:  # Pillow's own decoding errors carry no errno
            raise InputError(f"{path} is corrupt or truncated: {_describe(error)}") from None
        raise InputError(f"cannot read {path}: {error.strerror}") from None
    except Exception as error:  # Pillow raises many types (SyntaxError, ValueError...) on bad files
        raise InputError(f"{path} is corrupt or truncated: {_describe(error)}") from None
    return fit_to_side(gray, resize, str(path))


def fit_to_side(gray: np.ndarray, resize: bool, label: str) -> np.ndarray:
    """Return a uint8 ``(H, W)`` gray image as ``(28, 28)``, resizing only when allowed.

    Raises:
        InputError: the image is another size and ``resize`` is false.
    """
    height, width = gray.shape
    if (height, width) == (IMAGE_SIDE, IMAGE_SIDE):
        return gray
    if not resize:
        _refuse_other_size(width, height, label)
    image = Image.fromarray(gray, mode="L")
    return np.asarray(image.resize((IMAGE_SIDE, IMAGE_SIDE), RESIZE_FILTER))


def _decode(path: Path, resize: bool) -> np.ndarray:
    with Image.open(path, formats=IMAGE_FORMATS) as image:
        _check_header_size(image, path, resize)  # Image.open reads the header only
        if image.format == "PNG":
            # load() skips IDAT checksums; verify() checks every chunk's CRC first.
            image.verify()
    with Image.open(path, formats=IMAGE_FORMATS) as image:
        if image.width * image.height > REDUCE_ABOVE_PIXELS:
            # Only reached with resize; draft() makes the JPEG decoder scale down by 1/2..1/8.
            image.draft(image.mode, (REDUCED_SIDE, REDUCED_SIDE))
            image.load()
            return to_gray(ImageOps.exif_transpose(_reduced(image)))
        image.load()
        return to_gray(ImageOps.exif_transpose(image))


def _reduced(image: Image.Image) -> Image.Image:
    """Shrink a decoded image by whole factors toward ``REDUCED_SIDE`` (box averaging).

    Palette and bilevel images are converted first (averaging palette indices means nothing),
    16-bit gray to 32-bit (``reduce`` does not take it); RGBA is averaged premultiplied.
    """
    factors = (max(1, image.width // REDUCED_SIDE), max(1, image.height // REDUCED_SIDE))
    if factors == (1, 1):
        return image
    if image.mode in ("P", "PA"):
        image = image.convert("RGBA")
    elif image.mode == "1":
        image = image.convert("L")
    elif image.mode in _SIXTEEN_BIT_MODES and image.mode != "I":
        image = image.convert("I")
    return image.reduce(factors)


def to_gray(image: Image.Image) -> np.ndarray:
    """Convert a decoded Pillow image of any mode to a uint8 gray array (module rules)."""
    mode = image.mode
    if mode == "L":
        return np.asarray(image, dtype=np.uint8)
    if mode in _SIXTEEN_BIT_MODES:
        wide = np.asarray(image).astype(np.int64)
        scaled = (np.clip(wide, 0, 65535) + _SIXTEEN_BIT_STEP // 2) // _SIXTEEN_BIT_STEP
        return scaled.astype(np.uint8)
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    elif mode == "PA":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "RGBa", "La"):
        return _over_black(image)
    if image.mode not in ("RGB", "P", "1"):
        image = image.convert("RGB")
    return np.asarray(image.convert("L"), dtype=np.uint8)


def _over_black(image: Image.Image) -> np.ndarray:
    """Composite an image with alpha over a black background, then take its gray level."""
    alpha = np.asarray(image.getchannel("A"), dtype=np.uint16)
    color = image.convert("RGB") if image.mode in ("RGBA", "RGBa") else image.convert("L")
    gray = np.asarray(color.convert("L"), dtype=np.uint16)
    if image.mode in ("RGBa", "La"):  # already premultiplied
        return gray.astype(np.uint8)
    return ((gray * alpha + _OPAQUE // 2) // _OPAQUE).astype(np.uint8)


def _refuse_empty(path: Path) -> None:
    try:
        size = path.stat().st_size
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror or error}") from None
    if size == 0:
        raise InputError(f"{path} is empty (0 bytes)")


def _check_header_size(image: Image.Image, path: Path, resize: bool) -> None:
    """Refuse from the header alone: implausibly large, or not 28 x 28 without ``resize``."""
    width, height = image.size
    if width * height > MAX_SOURCE_PIXELS:
        raise InputError(f"{path} is {width}x{height} pixels, too large to be a digit image")
    if _orientation(image) in _QUARTER_TURNS:
        width, height = height, width  # as it will be shown, and named below
    if not resize and (width, height) != (IMAGE_SIDE, IMAGE_SIDE):
        _refuse_other_size(width, height, str(path))


def _orientation(image: Image.Image) -> int | None:
    """The EXIF orientation if the header already holds it (a PNG's ``getexif`` would decode the
    whole image to look for an eXIf chunk after the pixels)."""
    if "exif" not in image.info:
        return None
    orientation = image.getexif().get(ExifTags.Base.Orientation)
    return orientation if isinstance(orientation, int) else None


def _refuse_other_size(width: int, height: int, label: str) -> NoReturn:
    raise InputError(
        f"{label} is {width}x{height} pixels, not {IMAGE_SIDE}x{IMAGE_SIDE} "
        "(pass --resize to resize it)"
    )


def _has_known_signature(path: Path) -> bool:
    """Whether a file Pillow could not identify starts like a PNG, JPEG or BMP (so it is broken)."""
    try:
        with path.open("rb") as stream:
            head = stream.read(len(_PNG_SIGNATURE))
    except OSError:
        return False
    return head.startswith((_PNG_SIGNATURE, _JPEG_SIGNATURE, _BMP_SIGNATURE))


def _describe(error: Exception) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
