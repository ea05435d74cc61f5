"""decode_image: formats, modes, EXIF, draft mode, decompression bombs, broken bytes."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image

from clmlf.fetch.decode import (
    MAX_FULL_RESIZE_ASPECT,
    ImageDecodeError,
    center_crop,
    decode_image,
    resize_and_center_crop,
    resize_shorter_side,
)

RED, BLUE = (220, 20, 20), (20, 20, 220)


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def noisy_rgb(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    gradient = np.linspace(0, 200, width, dtype=np.float32)[None, :, None]
    pixels = gradient + rng.normal(0, 20, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def halves(width: int, height: int) -> Image.Image:
    """Left half red, right half blue."""
    img = Image.new("RGB", (width, height), BLUE)
    img.paste(RED, (0, 0, width // 2, height))
    return img


def dominant(pixel: tuple[int, ...]) -> str:
    r, _g, b = pixel[:3]
    return "red" if r > b else "blue"


def decode_reason(data: bytes, **kwargs: object) -> str:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data, **kwargs)
    return info.value.reason


# -- formats and modes --------------------------------------------------------------------------

@pytest.mark.parametrize(
    "fmt,mode,params",
    [
        ("JPEG", "RGB", {}),
        ("PNG", "RGB", {}),
        ("GIF", "P", {}),
        ("WEBP", "RGB", {"lossless": True}),
        ("BMP", "RGB", {}),
        ("JPEG", "L", {}),
        ("PNG", "L", {}),
        ("JPEG", "CMYK", {}),
        ("PNG", "RGBA", {}),
        ("PNG", "LA", {}),
        ("PNG", "P", {}),
        ("PNG", "1", {}),
        ("PNG", "I;16", {}),
        ("WEBP", "RGBA", {"lossless": True}),
    ],
)
def test_formats_and_modes_decode_to_rgb(fmt: str, mode: str, params: dict) -> None:
    source = halves(64, 32)
    if mode == "I;16":
        img = Image.fromarray(np.asarray(source.convert("L"), dtype=np.uint16) * 200)
        assert img.mode == "I;16"
    else:
        img = source.convert(mode)
    out = decode_image(encode(img, fmt, **params))
    assert out.mode == "RGB"
    assert out.size == (64, 32)
    if mode not in ("1", "L", "LA", "I;16"):  # colour survives
        assert dominant(out.getpixel((4, 16))) == "red"
        assert dominant(out.getpixel((60, 16))) == "blue"


def test_transparent_pixels_become_white() -> None:
    img = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    img.putpixel((5, 5), (255, 0, 0, 255))
    out = decode_image(encode(img, "PNG"))
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((5, 5)) == (255, 0, 0)


def test_palette_with_transparency_becomes_white() -> None:
    img = Image.new("P", (10, 10), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.putpixel((5, 5), 1)
    out = decode_image(encode(img, "PNG", transparency=0))
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((5, 5)) == (255, 0, 0)


def test_cmyk_jpeg_colours_are_right() -> None:
    out = decode_image(encode(halves(32, 16).convert("CMYK"), "JPEG", quality=95))
    assert dominant(out.getpixel((2, 8))) == "red"
    assert dominant(out.getpixel((30, 8))) == "blue"


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animation_yields_first_frame(fmt: str) -> None:
    frames = [Image.new("RGB", (16, 16), RED), Image.new("RGB", (16, 16), BLUE)]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2
    out = decode_image(data)
    assert dominant(out.getpixel((8, 8))) == "red"


# -- EXIF and draft mode ------------------------------------------------------------------------

def test_exif_orientation_6_rotates() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = encode(halves(40, 20), "JPEG", exif=exif.tobytes(), quality=95)
    out = decode_image(data)
    assert out.size == (20, 40)
    assert dominant(out.getpixel((10, 2))) == "red"  # the left half is on top after the rotation
    assert dominant(out.getpixel((10, 37))) == "blue"


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_broken_exif_keeps_the_image() -> None:
    data = encode(halves(40, 20), "JPEG", exif=b"Exif\x00\x00MM\x00*garbage-garbage")
    out = decode_image(data)
    assert out.size == (40, 20)
    assert dominant(out.getpixel((2, 10))) == "red"


def test_draft_mode_decodes_large_jpeg_small() -> None:
    data = encode(noisy_rgb(3000, 2000), "JPEG", quality=85)
    drafted = decode_image(data, target_size=256)
    assert drafted.size == (750, 500)  # DCT scale 1/4: the largest scale keeping both sides >= 256
    assert decode_image(data, target_size=224).size == (375, 250)  # 1/8
    assert decode_image(data, target_size=None).size == (3000, 2000)


def test_draft_never_goes_below_target() -> None:
    data = encode(noisy_rgb(600, 300), "JPEG")
    out = decode_image(data, target_size=256)
    assert min(out.size) >= 256


def test_draft_with_exif_rotation_keeps_shorter_side() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(noisy_rgb(2000, 1200), "JPEG", exif=exif.tobytes())
    out = decode_image(data, target_size=256)
    assert out.size == (300, 500)


# -- decompression bombs ------------------------------------------------------------------------

def png_header_only(width: int, height: int) -> bytes:
    """A ~60-byte PNG that declares width x height (RGB, 8 bit) and carries one tiny IDAT."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def jpeg_with_declared_size(width: int, height: int) -> bytes:
    """A tiny real JPEG whose SOF0 header is patched to claim width x height."""
    data = bytearray(encode(Image.new("RGB", (16, 16), RED), "JPEG"))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


@pytest.mark.parametrize(
    "data",
    [
        png_header_only(100_000, 100_000),  # 10^10 pixels
        png_header_only(8_000, 6_000),  # 48 MP: under Pillow's own limit, over ours (40 MP)
        jpeg_with_declared_size(7_000, 7_000),
        jpeg_with_declared_size(65_000, 65_000),
    ],
    ids=["png-100k", "png-48mp", "jpeg-49mp", "jpeg-4gp"],
)
def test_decompression_bomb_is_refused_without_allocating(data: bytes) -> None:
    assert len(data) < 2000
    tracemalloc.start()
    try:
        assert decode_reason(data) == "too_many_pixels"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000  # a decoded 48 MP RGB frame would be 144 MB


def test_max_pixels_is_per_call_and_leaves_pillow_global_alone() -> None:
    before = Image.MAX_IMAGE_PIXELS
    data = encode(noisy_rgb(100, 100), "PNG")
    assert decode_reason(data, max_pixels=9_999) == "too_many_pixels"
    assert decode_image(data, max_pixels=10_000).size == (100, 100)
    assert Image.MAX_IMAGE_PIXELS == before


def test_bad_max_pixels() -> None:
    with pytest.raises(ValueError):
        decode_image(encode(noisy_rgb(8, 8), "PNG"), max_pixels=0)


# -- broken input -------------------------------------------------------------------------------

def test_empty_bytes() -> None:
    assert decode_reason(b"") == "empty"


@pytest.mark.parametrize(
    "data",
    [b"garbage" * 100, b"<html><body>not found</body></html>", b"\x00" * 1000,
     b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", b"GIF89a"],
    ids=["garbage", "html", "zeros", "eps", "gif-magic-only"],
)
def test_not_an_image(data: bytes) -> None:
    assert decode_reason(data) in ("not_an_image", "corrupt", "truncated")
    if not data.startswith(b"GIF"):
        assert decode_reason(data) == "not_an_image"


def test_disallowed_format_is_not_an_image() -> None:
    data = encode(noisy_rgb(16, 16), "TIFF")
    assert decode_reason(data) == "not_an_image"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_truncated(fmt: str) -> None:
    data = encode(noisy_rgb(300, 200), fmt)
    assert decode_reason(data[: len(data) // 2]) in ("truncated", "corrupt")
    if fmt != "WEBP":  # libwebp only says "could not decode"
        assert decode_reason(data[: len(data) // 2]) == "truncated"


def test_corrupted_png_body_is_an_error_not_a_crash() -> None:
    data = bytearray(encode(noisy_rgb(200, 200), "PNG"))
    data[100:400] = b"\x00" * 300
    assert decode_reason(bytes(data)) in ("corrupt", "truncated")


def test_decode_error_is_a_value_error_with_reason() -> None:
    with pytest.raises(ValueError, match="^empty: "):
        decode_image(b"")


# -- geometry helpers ---------------------------------------------------------------------------

def test_resize_shorter_side_and_center_crop() -> None:
    img = resize_shorter_side(noisy_rgb(750, 500), 256)
    assert img.size == (384, 256)
    assert resize_shorter_side(noisy_rgb(300, 900), 256).size == (256, 768)
    crop = center_crop(img, 224)
    assert crop.size == (224, 224)
    assert crop.tobytes() == img.crop((80, 16, 304, 240)).tobytes()
    with pytest.raises(ValueError):
        center_crop(Image.new("RGB", (100, 300)), 224)


def _two_step(img: Image.Image, resize: int, size: int) -> np.ndarray:
    return np.asarray(center_crop(resize_shorter_side(img, resize), size)).astype(int)


@pytest.mark.parametrize("shape", [(50, 600), (600, 50), (1000, 61), (300, 1300), (20, 90), (200, 800), (800, 200)])
def test_resize_and_center_crop_equals_the_two_steps(shape: tuple[int, int]) -> None:
    width, height = shape
    img = Image.fromarray(np.random.default_rng(width).integers(0, 256, (height, width, 3), dtype=np.uint8))
    got = np.asarray(resize_and_center_crop(img, 256, 224)).astype(int)
    assert got.shape == (224, 224, 3)
    if max(shape) <= MAX_FULL_RESIZE_ASPECT * min(shape):
        assert np.array_equal(got, _two_step(img, 256, 224))  # ordinary images: the very same two steps
    else:
        assert np.abs(got - _two_step(img, 256, 224)).max() <= 1


def test_resize_and_center_crop_keeps_the_centre_of_a_banner() -> None:
    banner = Image.new("RGB", (12_000, 30), (0, 0, 0))
    banner.paste((255, 255, 255), (5_990, 0, 6_010, 30))  # 20 px white stripe in the middle
    out = resize_and_center_crop(banner, 256, 224)
    assert out.getpixel((112, 100)) == (255, 255, 255) and out.getpixel((0, 100)) == (0, 0, 0)


def test_resize_and_center_crop_rejects_a_crop_larger_than_the_resize() -> None:
    with pytest.raises(ValueError, match="larger than the resize"):
        resize_and_center_crop(Image.new("RGB", (300, 300)), 200, 224)
