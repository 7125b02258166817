"""Safe image decoding: bytes from anywhere in, an RGB array or a clear reason out.

Everything that turns bytes into pixels goes through `decode_image`, so the same rules hold for folders,
video frames and the web: the real format is sniffed from magic bytes (not the file name or the server's
content type), SVG and HTML are refused, the pixel count is capped before decoding (decompression bombs),
the whole image is decoded (truncated files fail here, not later), EXIF orientation is applied, and every
colour mode (grayscale, CMYK, 16-bit, palette, alpha) becomes 8-bit RGB. Animated GIF/WebP keep the first frame.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from facedata.params import default

# A truncated file must fail, never decode to grey padding.
ImageFile.LOAD_TRUNCATED_IMAGES = False

DEFAULT_MAX_PIXELS = default("ingest.max_pixels")
DEFAULT_MIN_SIDE = default("ingest.min_side")
ACCEPTED_FORMATS = {"jpeg", "png", "gif", "webp", "bmp", "tiff"}


class ImageRejected(ValueError):
    """Bytes that are not an acceptable image. `code` is a short machine-readable reason."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class DecodedImage:
    rgb: np.ndarray  # H x W x 3, uint8
    format: str  # sniffed format: jpeg, png, gif, webp, bmp, tiff
    mode: str  # colour mode as found in the file
    n_frames: int

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])


def sniff_format(data: bytes) -> str | None:
    """The format the bytes really are, from their magic numbers; None when unknown."""
    head = data[:64]
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:2] == b"BM":
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    text = data[:1024].lstrip().lower()
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in data[:4096].lower()):
        return "svg"
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in text[:512]:
        return "html"
    if head[:4] == b"\x00\x00\x00\x0c" or head[4:12] in (b"ftypavif", b"ftypheic"):
        return "heif"
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    return None


EXTENSIONS = {"jpeg": ".jpg", "png": ".png", "gif": ".gif", "webp": ".webp", "bmp": ".bmp", "tiff": ".tif"}


def decode_image(
    data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = DEFAULT_MIN_SIDE
) -> DecodedImage:
    """Decode `data` fully to RGB, or raise `ImageRejected` saying why."""
    if not data:
        raise ImageRejected("empty", "no bytes")
    fmt = sniff_format(data)
    if fmt in ("svg", "html"):
        raise ImageRejected(fmt, f"{fmt.upper()} content is not a raster image")
    if fmt not in ACCEPTED_FORMATS:
        raise ImageRejected(
            "not_an_image", f"unrecognised or unsupported content ({fmt or 'unknown magic bytes'})"
        )
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels  # allowed bigger (ingest.max_pixels): Pillow's own guard must agree
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels:
                raise ImageRejected("decompression_bomb", f"{w}x{h} pixels exceeds {_limit(max_pixels)}")
            mode = img.mode
            n_frames = int(getattr(img, "n_frames", 1) or 1)
            img.seek(0)
            img.load()
            img = ImageOps.exif_transpose(img) or img
            rgb = _to_rgb(img)
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow refused at its own, higher limit: say it in our terms, with the limit the user controls.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1))} pixels" if found else "the image"
        raise ImageRejected("decompression_bomb", f"{size} exceeds {_limit(max_pixels)}") from exc
    except UnidentifiedImageError as exc:
        raise ImageRejected("corrupt", f"{fmt} header not readable: {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        code = "truncated" if "truncated" in str(exc).lower() or isinstance(exc, EOFError) else "corrupt"
        raise ImageRejected(code, f"{fmt} data does not decode: {exc}") from exc
    if min(rgb.shape[:2]) < min_side:
        raise ImageRejected(
            "too_small", f"{rgb.shape[1]}x{rgb.shape[0]} is under the {min_side}-pixel minimum side"
        )
    return DecodedImage(rgb=rgb, format=fmt, mode=mode, n_frames=n_frames)


def _limit(max_pixels: int) -> str:
    return f"the {max_pixels}-pixel limit (ingest.max_pixels)"


def _to_rgb(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        # Transparent pixels become white, the usual background of web images with alpha.
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"), dtype=np.uint8).copy()
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def read_image_file(path, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = DEFAULT_MIN_SIDE) -> DecodedImage:
    with open(path, "rb") as fh:
        return decode_image(fh.read(), max_pixels=max_pixels, min_side=min_side)


def encode_png(rgb: np.ndarray) -> bytes:
    """Deterministic lossless encoding (used for video frames and aligned crops)."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def phash(rgb: np.ndarray) -> str:
    """64-bit DCT perceptual hash as 16 hex digits; near-identical images differ in few bits."""
    from scipy.fft import dctn

    gray = Image.fromarray(rgb).convert("L").resize((32, 32), Image.Resampling.LANCZOS)
    coeffs = dctn(np.asarray(gray, dtype=np.float64), norm="ortho")[:8, :8].flatten()
    bits = coeffs > np.median(coeffs[1:])
    return f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"


def hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()
