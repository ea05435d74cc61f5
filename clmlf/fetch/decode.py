"""Safe image decoding: bytes from the wire -> one RGB :class:`PIL.Image.Image`.

:func:`decode_image` is the only place the project turns untrusted bytes into
pixels. It

* accepts only common web formats (:data:`ALLOWED_FORMATS`), so Pillow never
  hands a file to an external program (EPS/Ghostscript) or an exotic parser;
* refuses an image whose header declares more than ``max_pixels`` pixels
  *before* any pixel data is decoded (decompression bombs). The check is our own,
  per call; Pillow's process-wide ``Image.MAX_IMAGE_PIXELS`` is left untouched;
* uses JPEG draft mode so a 12 MP photo is decoded by libjpeg's DCT scaling at
  1/2, 1/4 or 1/8 of its size, never below ``target_size`` on the shorter side;
* applies the EXIF orientation, takes the first frame of animations and
  converts every mode (palette, alpha, CMYK, greyscale, 16-bit) to RGB;
* turns every failure into :class:`ImageDecodeError` with a short stable
  ``reason`` (:data:`REASONS`), usable as a metric label.

:func:`decoded_pixels` reads the same header to tell, before decoding, how many pixels a
decode will allocate (the image workers reserve them from a shared decode budget).

The module also holds the two geometric steps of the CLMLF image pipeline,
:func:`resize_shorter_side` and :func:`center_crop` (resize 256, crop 224), and
:func:`resize_and_center_crop`, which does both in bounded memory for any aspect ratio.
"""

from __future__ import annotations

import io

from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_TARGET_SIZE = 256
DEFAULT_MAX_PIXELS = 40_000_000

# Formats Pillow may identify. Everything a social network serves, nothing that
# shells out (EPS) or is rarely fuzzed in practice.
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "WEBP", "BMP")

REASONS = ("empty", "not_an_image", "too_many_pixels", "truncated", "corrupt")

_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_BACKGROUND = (255, 255, 255)


class ImageDecodeError(ValueError):
    """Bytes that cannot be turned into an image; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str):
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def decode_image(
    data: bytes,
    target_size: int | None = DEFAULT_TARGET_SIZE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Image.Image:
    """Decode untrusted ``data`` into an RGB image (first frame, EXIF-oriented).

    ``target_size`` is the shorter side the caller will resize to; JPEGs are
    decoded at the smallest DCT scale that keeps both sides >= it. ``None``
    disables draft mode (full-resolution decode). ``max_pixels`` caps
    width * height as declared by the header. Raises :class:`ImageDecodeError`.
    """
    if not data:
        raise ImageDecodeError("empty", "no image bytes")
    if max_pixels <= 0:
        raise ValueError("max_pixels must be positive")
    try:
        img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        raise ImageDecodeError("not_an_image", "bytes are not a supported image format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError("too_many_pixels", str(exc)) from None
    except Exception as exc:  # any parser failure on hostile input
        raise ImageDecodeError("corrupt", _describe(exc)) from None

    with img:
        width, height = img.size
        if width <= 0 or height <= 0:
            raise ImageDecodeError("corrupt", f"invalid size {width}x{height}")
        if width * height > max_pixels:
            raise ImageDecodeError(
                "too_many_pixels", f"{width}x{height} is more than {max_pixels} pixels"
            )
        try:
            if target_size and img.format == "JPEG":
                img.draft("RGB", (target_size, target_size))
            img.load()  # first frame only; later frames are never decoded
            oriented = _apply_exif_orientation(img)
            return _to_rgb(oriented)
        except ImageDecodeError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageDecodeError("too_many_pixels", str(exc)) from None
        except Exception as exc:
            message = _describe(exc)
            reason = "truncated" if _looks_truncated(exc) else "corrupt"
            raise ImageDecodeError(reason, message) from None


def decoded_pixels(data: bytes, target_size: int | None = DEFAULT_TARGET_SIZE) -> int:
    """How many pixels :func:`decode_image` (same ``target_size``) will decode ``data`` to, read
    from the header alone (JPEG draft scaling applied; nothing is decoded).  0 when the header
    cannot be read: :func:`decode_image` then fails the same way before decoding anything."""
    if not data:
        return 0
    try:
        with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as img:
            if target_size and img.format == "JPEG":
                img.draft("RGB", (target_size, target_size))
            width, height = img.size
    except Exception:  # any header failure on hostile input: decode_image reports it
        return 0
    return max(0, width) * max(0, height)


def resize_shorter_side(img: Image.Image, size: int) -> Image.Image:
    """Resize so the shorter side is ``size`` (bilinear, aspect ratio kept)."""
    width, height = img.size
    if min(width, height) == size:
        return img
    if width <= height:
        new_size = (size, max(1, round(height * size / width)))
    else:
        new_size = (max(1, round(width * size / height)), size)
    return img.resize(new_size, Image.Resampling.BILINEAR)


# Beyond this long/short side ratio, resize_and_center_crop resamples only the part of the image that survives
# the crop: a 10 x 100,000 banner (1 M pixels, a few KB as PNG) would otherwise be resized to 256 x 2,560,000.
MAX_FULL_RESIZE_ASPECT = 4.0


def resize_and_center_crop(img: Image.Image, resize: int, size: int) -> Image.Image:
    """:func:`resize_shorter_side` to ``resize``, then :func:`center_crop` to ``size``, in bounded memory.

    Ordinary images take exactly those two steps. For an extreme aspect ratio the crop
    is resampled straight from the source region that maps onto it (Pillow's ``box``),
    so the huge intermediate image is never allocated; the pixels equal the two-step
    result up to rounding (at most 1 of 255).
    """
    width, height = img.size
    if size > resize:
        raise ValueError(f"crop {size} is larger than the resize target {resize}")
    if max(width, height) <= MAX_FULL_RESIZE_ASPECT * min(width, height):
        return center_crop(resize_shorter_side(img, resize), size)
    if width <= height:
        new_width, new_height = resize, max(1, round(height * resize / width))
    else:
        new_width, new_height = max(1, round(width * resize / height)), resize
    left, top = (new_width - size) // 2, (new_height - size) // 2
    scale_x, scale_y = width / new_width, height / new_height
    box = (left * scale_x, top * scale_y, (left + size) * scale_x, (top + size) * scale_y)
    return img.resize((size, size), Image.Resampling.BILINEAR, box=box)


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """Crop the central ``size`` x ``size`` square (the image must be at least that large)."""
    width, height = img.size
    if width < size or height < size:
        raise ValueError(f"image {width}x{height} is smaller than the {size}x{size} crop")
    left = (width - size) // 2
    top = (height - size) // 2
    return img.crop((left, top, left + size, top + size))


def _apply_exif_orientation(img: Image.Image) -> Image.Image:
    """Rotate/flip per the EXIF Orientation tag. A broken EXIF block keeps the pixels as stored."""
    try:
        rotated = ImageOps.exif_transpose(img)
    except Exception:  # malformed EXIF must not cost us an otherwise good image
        rotated = None
    # always a new image: the caller closes the file-backed original
    return img.copy() if rotated is None or rotated is img else rotated


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB; transparent areas become white, 16/32-bit greys are rescaled."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P" and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, _BACKGROUND)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return _high_depth_grey_to_rgb(img)
    return img.convert("RGB")


def _high_depth_grey_to_rgb(img: Image.Image) -> Image.Image:
    """16-bit/32-bit greyscale -> 8-bit by its own value range, then RGB."""
    as_float = img.convert("F")
    low, high = as_float.getextrema()
    span = (high - low) or 1.0
    grey = as_float.point(lambda v: (v - low) * 255.0 / span).convert("L")
    return grey.convert("RGB")


def _looks_truncated(exc: Exception) -> bool:
    text = str(exc).lower()
    return isinstance(exc, EOFError) or "truncated" in text or "broken data stream" in text


def _describe(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__
