"""Tests of reasoner.data.images: safe decoding of untrusted image data."""

from __future__ import annotations

import io
import random
import struct
import zlib

import pytest
from PIL import Image

from reasoner.data.images import (
    ImageError,
    decode_image,
    encode_png,
    to_data_url,
)


def encoded(image: Image.Image, fmt: str, **save_args) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_args)
    return buffer.getvalue()


def noise_png(size: int = 64) -> bytes:
    """Random pixels, so the compressed stream is large enough to cut in the middle."""
    rng = random.Random(0)
    pixels = bytes(rng.randrange(256) for _ in range(size * size * 3))
    return encode_png(Image.frombytes("RGB", (size, size), pixels))


def png_declaring(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose IHDR is patched to declare width x height (with a correct CRC)."""
    data = encode_png(Image.new("RGB", (1, 1), (1, 2, 3)))
    assert data[12:16] == b"IHDR"
    body = b"IHDR" + struct.pack(">II", width, height) + data[24:29]
    return data[:12] + body + struct.pack(">I", zlib.crc32(body)) + data[33:]


def test_png_roundtrip_is_rgb_and_exact():
    image = Image.new("RGB", (3, 2), (10, 20, 30))
    image.putpixel((2, 1), (250, 0, 7))
    out = decode_image(encode_png(image))
    assert out.mode == "RGB" and out.size == (3, 2)
    assert out.getpixel((0, 0)) == (10, 20, 30) and out.getpixel((2, 1)) == (250, 0, 7)


def test_data_url_roundtrip():
    data = noise_png(8)
    url = to_data_url(data)
    assert url.startswith("data:image/png;base64,iVBORw0KGgo")
    assert decode_image(url).tobytes() == decode_image(data).tobytes()
    assert decode_image(to_data_url(data, mime="image/jpeg")).size == (8, 8)  # content decides


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "GIF", "BMP"])
def test_other_allowed_formats(fmt):
    out = decode_image(encoded(Image.new("RGB", (8, 8), (200, 10, 10)), fmt))
    assert out.mode == "RGB" and out.size == (8, 8)
    red, green, blue = out.getpixel((4, 4))
    assert red > 190 and green < 20 and blue < 20  # lossy formats: close, not exact


def test_animated_gif_gives_the_first_frame():
    frames = [Image.new("RGB", (4, 4), (255, 0, 0)), Image.new("RGB", (4, 4), (0, 0, 255))]
    data = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert decode_image(data).getpixel((0, 0)) == (255, 0, 0)


def test_modes_are_converted_to_rgb():
    rgba = Image.new("RGBA", (2, 1), (255, 0, 0, 255))
    rgba.putpixel((1, 0), (0, 0, 255, 0))  # fully transparent: composited onto white
    out = decode_image(encode_png(rgba))
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 0, 0) and out.getpixel((1, 0)) == (255, 255, 255)

    palette = Image.new("P", (2, 1), 1)
    palette.putpalette([0, 0, 0, 0, 128, 0])
    assert decode_image(encode_png(palette)).getpixel((0, 0)) == (0, 128, 0)

    grey = Image.new("L", (2, 1), 77)
    assert decode_image(encode_png(grey)).getpixel((1, 0)) == (77, 77, 77)

    grey16 = Image.new("I;16", (1, 1), 0x8000)  # 16-bit grey is scaled, not clipped
    assert decode_image(encode_png(grey16)).getpixel((0, 0)) == (128, 128, 128)


@pytest.mark.parametrize("data", [b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 50])
def test_corrupt_bytes(data):
    with pytest.raises(ImageError, match="cannot identify image data|corrupt"):
        decode_image(data)


def test_truncated_png():
    data = noise_png()
    with pytest.raises(ImageError, match="PNG image data is truncated or corrupt"):
        decode_image(data[: len(data) // 2])


def test_huge_dimension_header_is_refused_without_decoding():
    with pytest.raises(ImageError, match="too many pixels"):
        decode_image(png_declaring(100_000, 100_000))
    # Under Pillow's own bomb limit but over ours: refused from the header (the pixel data,
    # one pixel's worth, is never decoded, or this would say "truncated").
    with pytest.raises(ImageError, match=r"5000x5000 = 25000000 pixels, more than the limit "
                                         r"of 16777216"):
        decode_image(png_declaring(5000, 5000))


def test_max_pixels_on_a_real_image():
    data = encode_png(Image.new("RGB", (20, 10)))
    assert decode_image(data, max_pixels=200).size == (20, 10)
    with pytest.raises(ImageError, match="20x10 = 200 pixels, more than the limit of 199"):
        decode_image(data, max_pixels=199)


def test_oversized_byte_count():
    data = noise_png(16)
    with pytest.raises(ImageError, match=f"{len(data)} bytes, more than max_bytes=100"):
        decode_image(data, max_bytes=100)
    with pytest.raises(ImageError, match="more than max_bytes=100"):
        decode_image(to_data_url(data), max_bytes=100)


@pytest.mark.parametrize(("fmt", "name"), [("TIFF", "TIFF"), ("ICO", "ICO")])
def test_unsupported_format_is_named(fmt, name):
    data = encoded(Image.new("RGB", (16, 16), (1, 2, 3)), fmt)
    with pytest.raises(ImageError, match=f"unsupported image format {name}; accepted formats "
                                         "are PNG, JPEG, WEBP, GIF, BMP"):
        decode_image(data)


@pytest.mark.parametrize("url", ["http://example.com/cat.png", "https://example.com/cat.png",
                                 "file:///etc/passwd"])
def test_urls_are_never_fetched(url):
    with pytest.raises(ImageError, match="never fetched"):
        decode_image(url)


@pytest.mark.parametrize(("data", "match"), [
    (b"", "empty image data"),
    ("", "empty image string"),
    (bytearray(), "empty image data"),
    (None, "got NoneType"),
    (12, "got int"),
    (Image.new("RGB", (1, 1)), "got Image"),
    ("iVBORw0KGgo=", "must be a data:image/...;base64, URL"),
    ("data:image/png;base64,@@@not base64@@@", "not valid base64"),
    ("data:text/plain;base64,aGVsbG8=", "media type must be image"),
    ("data:image/png,rawbytes", "must be base64-encoded"),
])
def test_bad_inputs(data, match):
    with pytest.raises(ImageError, match=match):
        decode_image(data)


def test_bad_limits_and_encoders():
    with pytest.raises(ValueError, match="max_pixels"):
        decode_image(noise_png(4), max_pixels=0)
    with pytest.raises(ValueError, match="mime"):
        to_data_url(b"x", mime="text/html")
    with pytest.raises(TypeError):
        encode_png(b"not an image")
    assert encode_png(Image.new("RGB", (1, 1)))[:8] == b"\x89PNG\r\n\x1a\n"


def test_module_leaves_pillow_limits_alone():
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageError):
        decode_image(png_declaring(100_000, 100_000))
    decode_image(noise_png(4), max_pixels=10**8)
    assert Image.MAX_IMAGE_PIXELS == before
