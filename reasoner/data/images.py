"""Safe image decoding: untrusted bytes or data URLs in, a fully loaded RGB image out.

Images reach the system from dataset files, a teacher's inputs and the HTTP API, so decoding is
defensive: only PNG, JPEG, WEBP, GIF (first frame) and BMP are opened (Pillow is never asked to
try its other plugins); byte counts and pixel counts are bounded, the pixel count from the
header before any pixel data is decoded; truncated data is an error, not a half-grey image; and
strings are accepted only as ``data:image/...;base64,`` URLs: nothing is ever fetched.

Every failure raises ``ImageError`` (a ``ValueError``) saying what was wrong. The module changes
no process-wide state: Pillow's own ``Image.MAX_IMAGE_PIXELS`` is left as it is and acts as an
upper bound on ``max_pixels``.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import zlib

from PIL import Image, UnidentifiedImageError

ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
DEFAULT_MAX_PIXELS = 4096 * 4096
DEFAULT_MAX_BYTES = 32 * 1024 * 1024

_DATA_URL = re.compile(r"data:(?P<mime>[^;,]*)(?P<params>(?:;[^;,]*)*),(?P<payload>.*)",
                       re.DOTALL | re.IGNORECASE)
_URL_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*:", re.IGNORECASE)
_MIME = re.compile(r"image/[a-z0-9.+-]+", re.IGNORECASE)
# Signatures of formats we refuse, to name them in the error (checked only after a failed open).
_REFUSED_SIGNATURES = (
    (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"\x00\x00\x01\x00", "ICO"),
    (b"8BPS", "PSD"), (b"%PDF", "PDF"), (b"icns", "ICNS"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"), (b"\xffO\xffQ", "JPEG 2000"), (b"qoif", "QOI"),
    (b"DDS ", "DDS"), (b"v/1\x01", "OpenEXR"), (b"<?xml", "XML/SVG"), (b"<svg", "SVG"),
)


class ImageError(ValueError):
    """Image data that cannot be (safely) decoded; the message says why."""


def _check_limits(max_pixels: int, max_bytes: int) -> None:
    for name, value in (("max_pixels", max_pixels), ("max_bytes", max_bytes)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def _from_data_url(url: str, max_bytes: int) -> bytes:
    """The bytes of a ``data:image/...;base64,`` URL; anything else is refused."""
    url = url.strip()
    if not url:
        raise ImageError("empty image string: expected a data:image/...;base64, URL")
    match = _DATA_URL.fullmatch(url)
    if match is None:
        if _URL_SCHEME.match(url):
            raise ImageError(f"only data:image/...;base64, URLs are accepted, got {url[:40]!r}: "
                             "http(s), file and other URLs are never fetched")
        raise ImageError(f"an image given as str must be a data:image/...;base64, URL, "
                         f"got {url[:40]!r}")
    mime, params = match["mime"].strip(), match["params"].lower().split(";")
    if not _MIME.fullmatch(mime):
        raise ImageError(f"data URL media type must be image/..., got {mime or 'none'!r}")
    if "base64" not in (p.strip() for p in params):
        raise ImageError("data URL must be base64-encoded (data:image/...;base64,...)")
    payload = re.sub(r"\s+", "", match["payload"])
    if len(payload) * 3 // 4 > max_bytes:
        raise ImageError(f"image data URL holds about {len(payload) * 3 // 4} bytes, more than "
                         f"max_bytes={max_bytes}")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ImageError(f"data URL payload is not valid base64: {e}") from e


def _refused_format(data: bytes) -> str | None:
    if data[4:8] == b"ftyp":
        return f"ISO media ({data[8:12].decode('ascii', 'replace').strip()}, e.g. HEIF/AVIF)"
    return next((name for sig, name in _REFUSED_SIGNATURES if data.startswith(sig)), None)


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with any transparency composited onto white and 16-bit grey scaled to 8 bits."""
    if image.mode == "RGB":
        return image
    if image.mode == "I" or image.mode.startswith("I;16"):  # 16-bit greyscale PNG
        image = image.convert("I").point(lambda value: value * (1 / 256)).convert("L")
    if "A" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def decode_image(data: bytes | str, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> Image.Image:
    """Decode untrusted image data into a fully loaded RGB ``PIL.Image.Image``.

    Args:
        data: encoded image bytes (``bytes``, ``bytearray`` or ``memoryview``), or a
            ``data:image/<type>;base64,<payload>`` URL (the declared type is not trusted: the
            bytes are identified by their content). Other URLs are refused, never fetched.
        max_pixels: refuse images whose header declares more than this many pixels
            (width * height), before their pixel data is decoded. Pillow's process-wide
            ``Image.MAX_IMAGE_PIXELS`` bounds it too.
        max_bytes: refuse encoded data longer than this.

    Returns:
        An RGB image, loaded (so truncation is caught here). Transparency is composited onto
        white; for an animated GIF or WEBP, the first frame.

    Raises:
        ImageError: empty, wrong type, not a data URL, bad base64, too large, too many pixels,
            unsupported format, corrupt or truncated data.
    """
    _check_limits(max_pixels, max_bytes)
    if isinstance(data, str):
        data = _from_data_url(data, max_bytes)
    elif isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data)
    else:
        raise ImageError(f"image data must be bytes or a data URL str, got {type(data).__name__}")
    if not data:
        raise ImageError("empty image data")
    if len(data) > max_bytes:
        raise ImageError(f"image data is {len(data)} bytes, more than max_bytes={max_bytes}")

    try:
        # Opening reads only the header. Pillow raises DecompressionBombError on its own above
        # twice Image.MAX_IMAGE_PIXELS; everything above our bound is refused just below.
        image = Image.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS))
    except Image.DecompressionBombError as e:
        raise ImageError(f"image has too many pixels: {e}") from e
    except UnidentifiedImageError as e:
        refused = _refused_format(data)
        if refused:
            raise ImageError(f"unsupported image format {refused}; accepted formats are "
                             f"{', '.join(ALLOWED_FORMATS)}") from e
        raise ImageError("cannot identify image data: corrupt, or not one of "
                         f"{', '.join(ALLOWED_FORMATS)}") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # a broken header
        raise ImageError(f"corrupt or truncated image header: {e}") from e

    width, height = image.size
    limit = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)
    try:
        if width * height > limit:
            raise ImageError(f"image is {width}x{height} = {width * height} pixels, more than "
                             f"the limit of {limit} (max_pixels)")
        if width * height == 0:
            raise ImageError(f"image has no pixels ({width}x{height})")
        image.load()
        rgb = _to_rgb(image)
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error) as e:
        image.close()
        if isinstance(e, ImageError):
            raise
        raise ImageError(f"{image.format} image data is truncated or corrupt: {e}") from e
    if rgb is not image:
        image.close()
    return rgb


def encode_png(image: Image.Image) -> bytes:
    """The image as PNG bytes (lossless; the format stored in the examples artifact)."""
    if not isinstance(image, Image.Image):
        raise TypeError(f"encode_png expects a PIL.Image.Image, got {type(image).__name__}")
    buffer = io.BytesIO()
    try:
        image.save(buffer, format="PNG")
    except OSError as e:
        raise ValueError(f"cannot write a {image.mode} image as PNG ({e}); "
                         "convert it first, e.g. image.convert('RGB')") from e
    return buffer.getvalue()


def to_data_url(data: bytes, mime: str = "image/png") -> str:
    """A ``data:<mime>;base64,`` URL of encoded image bytes (what the HTTP API accepts)."""
    if not isinstance(data, (bytes, bytearray, memoryview)) or not len(data):
        raise ValueError(f"data must be non-empty bytes, got {type(data).__name__}")
    if not isinstance(mime, str) or not _MIME.fullmatch(mime):
        raise ValueError(f"mime must be an image media type like 'image/png', got {mime!r}")
    return f"data:{mime};base64,{base64.b64encode(bytes(data)).decode('ascii')}"
