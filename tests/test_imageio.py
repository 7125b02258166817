"""Safe decoding: every format and colour mode becomes RGB; everything else is refused with a reason."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from facedata import imageio
from facedata.imageio import ImageRejected, decode_image


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def gradient(w=64, h=48) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.uint8)[None, :].repeat(h, 0)
    return Image.fromarray(np.stack([x, x[::-1], np.full_like(x, 128)], axis=2))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"])
def test_formats_decode_to_rgb(fmt):
    out = decode_image(encode(gradient(), fmt))
    assert out.rgb.shape == (48, 64, 3) and out.rgb.dtype == np.uint8
    assert out.format == fmt.lower() if fmt != "JPEG" else out.format == "jpeg"


def test_grayscale_cmyk_palette():
    assert decode_image(encode(gradient().convert("L"), "PNG")).rgb.shape == (48, 64, 3)
    cmyk = decode_image(encode(gradient().convert("CMYK"), "JPEG"))
    assert cmyk.mode == "CMYK" and cmyk.rgb.shape == (48, 64, 3)
    pal = decode_image(encode(gradient().convert("P"), "PNG"))
    assert pal.mode == "P" and pal.rgb.shape == (48, 64, 3)


def test_16_bit_is_scaled_not_clipped():
    arr = (np.linspace(0, 65535, 64 * 48).reshape(48, 64)).astype(np.uint16)
    out = decode_image(encode(Image.fromarray(arr), "PNG"))
    assert out.mode.startswith("I")
    assert out.rgb.max() == 255 and out.rgb.min() == 0
    assert 100 < out.rgb[24, 32, 0] < 160  # middle of the ramp maps to middle grey


def test_alpha_is_composited_on_white():
    rgba = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (0, 0, 20, 40))
    out = decode_image(encode(rgba, "PNG"))
    assert tuple(out.rgb[10, 5]) == (0, 0, 255)
    assert tuple(out.rgb[10, 35]) == (255, 255, 255)


def test_exif_orientation_is_applied():
    img = gradient(80, 40)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    out = decode_image(encode(img, "JPEG", exif=exif.tobytes()))
    assert out.rgb.shape == (80, 40, 3)


def test_animated_gif_keeps_first_frame():
    frames = [Image.new("RGB", (40, 40), c) for c in ((255, 0, 0), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    out = decode_image(buf.getvalue())
    assert out.n_frames == 2
    assert out.rgb[20, 20, 0] > 200 and out.rgb[20, 20, 1] < 50


@pytest.mark.parametrize(
    "data, code",
    [
        (b"", "empty"),
        (b"<!DOCTYPE html><html><body>not found</body></html>", "html"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"></svg>', "svg"),
        (b"<svg onload='alert(1)'></svg>", "svg"),
        (b"\x1f\x8b\x08\x00compressed", "not_an_image"),
        (b"just some text", "not_an_image"),
    ],
)
def test_non_images_are_refused(data, code):
    with pytest.raises(ImageRejected) as exc:
        decode_image(data)
    assert exc.value.code == code


def test_truncated_jpeg_is_refused():
    data = encode(gradient(256, 256), "JPEG", quality=95)
    with pytest.raises(ImageRejected) as exc:
        decode_image(data[: len(data) // 2])
    assert exc.value.code in ("truncated", "corrupt")


def test_corrupt_header_is_refused():
    with pytest.raises(ImageRejected) as exc:
        decode_image(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    assert exc.value.code == "corrupt"


def test_decompression_bomb_is_refused_before_decoding():
    big = Image.new("L", (4000, 4000))
    data = encode(big, "PNG", optimize=True)  # tiny file, 16 Mpx
    assert len(data) < 200_000
    with pytest.raises(ImageRejected) as exc:
        decode_image(data, max_pixels=10_000_000)
    assert exc.value.code == "decompression_bomb"
    assert "10000000-pixel limit (ingest.max_pixels)" in str(exc.value)
    assert decode_image(data, max_pixels=20_000_000).rgb.shape == (4000, 4000, 3)


def test_a_bomb_beyond_pillows_own_limit_quotes_ingest_max_pixels():
    from .collect_servers import bomb_png

    with pytest.raises(ImageRejected) as exc:
        decode_image(bomb_png(30000, 30000), max_pixels=50_000_000)  # 900 Mpx: Pillow refuses on open
    assert exc.value.code == "decompression_bomb"
    assert str(exc.value) == (
        "decompression_bomb: 900000000 pixels exceeds the 50000000-pixel limit (ingest.max_pixels)"
    )


def test_too_small_is_refused():
    with pytest.raises(ImageRejected) as exc:
        decode_image(encode(gradient(20, 20), "PNG"), min_side=32)
    assert exc.value.code == "too_small"


def textured(seed: int, size: int = 128) -> np.ndarray:
    """Smooth random texture: structure at every scale phash looks at (a plain gradient has almost none)."""
    from PIL import ImageFilter

    noise = np.random.default_rng(seed).integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
    img = Image.fromarray(noise).resize((size, size), Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(2))
    return np.asarray(img)


def test_phash_near_duplicates():
    a = textured(0)
    noisy = np.clip(a.astype(int) + np.random.default_rng(1).integers(-3, 4, a.shape), 0, 255).astype(np.uint8)
    other = textured(2)
    assert imageio.hamming(imageio.phash(a), imageio.phash(noisy)) <= 4
    assert imageio.hamming(imageio.phash(a), imageio.phash(other)) > 10


def test_png_encoding_is_deterministic():
    a = np.asarray(gradient())
    assert imageio.encode_png(a) == imageio.encode_png(a.copy())
