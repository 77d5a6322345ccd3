"""Hardened inputs (issue 6): a corpus of malformed and unusual uploads, run through `decode_upload` one by
one and all together through the upload page's real path (AppTest, real model on the small run).

Every case names its expected outcome: an `UploadError` whose message matches ``error``, or "analysed" with
the notes matching ``notes`` (and, where orientation or colour matters, the decoded size and some pixels).
All files carry an accepted extension (png/jpg/jpeg/webp): the browser's file picker and Streamlit's
server-side check refuse other names before the app sees them, so what the app must survive is content
that does not match its name.
"""

from __future__ import annotations

import io
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from app.safe_text import code
from app.uploads import MAX_ASPECT_RATIO, MAX_UPLOAD_BYTES, UploadError, decode_upload

APP = Path(__file__).resolve().parents[1] / "app" / "main.py"

RED, BLUE, WHITE, BLACK = (255, 0, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)


@dataclass(frozen=True)
class Case:
    """One upload: its file name (unique in the corpus), bytes and MIME type, and the expected outcome."""

    name: str
    data: bytes = field(repr=False)
    mime: str
    error: str | None = None  # regex of the UploadError message; None: the file is analysed
    notes: tuple[str, ...] = ()  # analysed: one regex per expected note, in order
    size: tuple[int, int] | None = None  # analysed: decoded (width, height)
    pixels: tuple[tuple[tuple[int, int], tuple[int, int, int]], ...] = ()  # ((x, y), rgb) after decoding
    tolerance: int = 0  # per channel, for the pixel checks (lossy formats)

    @property
    def analysed(self) -> bool:
        return self.error is None


# -- encoders ----------------------------------------------------------------------------------------------
def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _noise(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def _red_left_blue_right() -> Image.Image:
    """40 x 20: left half red, right half blue (shows where an EXIF rotation put the left edge)."""
    image = Image.new("RGB", (40, 20), BLUE)
    image.paste(RED, (0, 0, 20, 20))
    return image


def _with_orientation(image: Image.Image, fmt: str, orientation: int, **kwargs) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _encode(image, fmt, exif=exif.tobytes(), **kwargs)


def _png_chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


def _raw_png(width: int, height: int, bit_depth: int, colour_type: int, rows: list[bytes] | None) -> bytes:
    """A PNG written by hand (PIL cannot write 16-bit colour); ``rows=None`` leaves out the pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    out = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
    if rows is not None:
        out += _png_chunk(b"IDAT", zlib.compress(b"".join(b"\x00" + row for row in rows)))
    return out + _png_chunk(b"IEND", b"")


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose SOF header is patched to claim ``width x height``."""
    data = bytearray(_encode(Image.new("RGB", (16, 16), "grey"), "JPEG"))
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def _corrupt(data: bytes, at: int, length: int = 64, fill: bytes = b"\xff\x00\xa5\x5a") -> bytes:
    """``data`` with ``length`` bytes from offset ``at`` overwritten by a repeated ``fill`` pattern."""
    out = bytearray(data)
    out[at : at + length] = (fill * length)[:length]
    return bytes(out)


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("readme.txt", "not a picture " * 20)
    return buffer.getvalue()


def _animated(fmt: str, **kwargs) -> bytes:
    frames = [Image.new("RGB", (32, 32), colour) for colour in (RED, BLUE, "green")]
    return _encode(frames[0], fmt, save_all=True, append_images=frames[1:], **kwargs)


# -- the corpus --------------------------------------------------------------------------------------------
NOT_AN_IMAGE = r"is not an image PIL can read; upload PNG, JPEG or WEBP\."
CORRUPT = r"could not be decoded \(truncated or corrupt\?\)"
BOMB = r"the limit is 40 megapixels \(a guard against decompression bombs\)"  # the app's limit, not PIL's
TOO_SMALL = r"images need at least 8 px on each side"


@lru_cache(maxsize=1)
def build_corpus() -> tuple[Case, ...]:
    """The malformed and unusual uploads, each with its expected outcome."""
    png = _encode(_noise(), "PNG")
    jpeg = _encode(_noise(), "JPEG", quality=90)
    half = _red_left_blue_right()
    ramp16 = np.linspace(0, 65535, 64 * 48, dtype=np.uint16).reshape(48, 64)
    palette = Image.new("P", (16, 16), 0)
    palette.putpalette([*BLUE, *RED] + [0] * 762)
    palette.paste(1, (8, 0, 16, 16))  # right half: palette entry 1 (red)
    rgba = Image.new("RGBA", (16, 16), (255, 0, 0, 255))
    rgba.paste((255, 0, 0, 0), (8, 0, 16, 16))  # right half fully transparent
    la = Image.new("LA", (16, 16), (0, 255))
    la.paste((0, 0), (8, 0, 16, 16))
    bilevel = Image.new("1", (16, 16), 0)
    bilevel.paste(1, (8, 0, 16, 16))
    grey_trns = Image.new("L", (16, 16), 0)
    grey_trns.paste(200, (8, 0, 16, 16))
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # red in print colours
    rgb16_row = struct.pack(">HHH", 65535, 0, 32768) * 8
    rgba16_row = struct.pack(">HHHH", 65535, 0, 0, 65535) * 4 + struct.pack(">HHHH", 0, 0, 0, 0) * 4
    left, right = (4, 8), (12, 8)  # pixels in the left and right halves of the 16 x 16 images
    return (
        # refused, with a message naming the problem
        Case("empty.png", b"", "image/png", error=r"^empty\.png is empty\.$"),
        Case("truncated.png", png[: len(png) // 2], "image/png", error=CORRUPT),
        Case("corrupt-pixels.png", _corrupt(png, len(png) // 2), "image/png", error=CORRUPT),
        Case("header-only.png", _raw_png(8, 8, 8, 2, None), "image/png", error=CORRUPT),
        Case("truncated.jpg", jpeg[: len(jpeg) // 2], "image/jpeg", error=CORRUPT),
        Case(
            "corrupt-huffman-table.jpg",
            _corrupt(jpeg, jpeg.find(b"\xff\xc4") + 4, 20, b"\xff"),
            "image/jpeg",
            error=CORRUPT,
        ),
        Case("zero-size.jpg", _jpeg_claiming(0, 0), "image/jpeg", error=NOT_AN_IMAGE),
        Case("plain-text.png", b"hello, I am a text file\n" * 10, "image/png", error=NOT_AN_IMAGE),
        Case(
            "web-page.jpg",
            b"<!DOCTYPE html><html><body><img src=x></body></html>",
            "image/jpeg",
            error=NOT_AN_IMAGE,
        ),
        Case(
            "document.png",
            b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n%%EOF\n",
            "image/png",
            error=NOT_AN_IMAGE,
        ),
        Case("archive.webp", _zip(), "image/webp", error=NOT_AN_IMAGE),
        Case("sound.webp", b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(28), "image/webp", error=NOT_AN_IMAGE),
        Case(
            "gif-inside.png",
            _encode(_noise().convert("P"), "GIF"),
            "image/png",
            error=r"gif-inside\.png is a GIF image; upload PNG, JPEG or WEBP\.",
        ),
        Case("bmp-inside.png", _encode(_noise(), "BMP"), "image/png", error=r"is a BMP image; upload PNG"),
        Case("tiff-inside.png", _encode(_noise(), "TIFF"), "image/png", error=r"is a TIFF image; upload PNG"),
        Case(
            "bomb-header-60000.png", _raw_png(60_000, 60_000, 8, 2, [b"\x00" * 16]), "image/png", error=BOMB
        ),
        Case("bomb-header-65000.jpg", _jpeg_claiming(65_000, 65_000), "image/jpeg", error=BOMB),
        # real, decodable files of a few KB whose pixels would take 100 MB / 40 MB (just over the limit)
        Case(
            "bomb-real-10000.png",
            _encode(Image.new("1", (10_000, 10_000)), "PNG", optimize=True),
            "image/png",
            error=BOMB,
        ),
        Case(
            "bomb-just-over.jpg",
            _encode(Image.new("L", (8000, 5001)), "JPEG", quality=5),
            "image/jpeg",
            error=BOMB,
        ),
        Case(
            "over-20-mb.png",
            png + bytes(MAX_UPLOAD_BYTES + 2**20 - len(png)),
            "image/png",
            error=r"over-20-mb\.png is 21\.0 MB; the limit is 20 MB\.",
        ),
        Case(
            "strip-1x4000.png",
            _encode(Image.new("RGB", (1, 4000), RED), "PNG"),
            "image/png",
            error=r"strip-1x4000\.png is 1 x 4000 px, more elongated than 100:1",
        ),
        Case(
            "strip-4000x2.jpg",
            _encode(Image.new("RGB", (4000, 2), RED), "JPEG"),
            "image/jpeg",
            error=r"is 4000 x 2 px, more elongated than 100:1",
        ),
        # analysed, with notes on what was converted
        Case("plain-rgb.png", png, "image/png", size=(64, 48)),
        Case("same image again.png", png, "image/png", size=(64, 48)),  # the same image twice
        Case("plain.jpg", jpeg, "image/jpeg", size=(64, 48)),
        Case("PHOTO.JPEG", _encode(_noise(seed=1), "JPEG"), "image/jpeg", size=(64, 48)),
        # libjpeg decodes garbage in the entropy-coded data into garbled blocks and only warns: refused
        Case(
            "corrupt-scan-data.jpg",
            _corrupt(jpeg, len(jpeg) // 2),
            "image/jpeg",
            error=r"JPEG body is damaged",
        ),
        Case("zeroed-scan-data.jpg", _corrupt(jpeg, len(jpeg) // 2, 200, b"\0"), "image/jpeg", error=CORRUPT),
        Case("progressive.jpg", _encode(_noise(seed=2), "JPEG", progressive=True), "image/jpeg"),
        Case("png-named.jpg", _encode(_noise(seed=3), "PNG"), "image/jpeg", size=(64, 48)),
        Case("jpeg-named.webp", _encode(_noise(seed=4), "JPEG"), "image/webp", size=(64, 48)),
        Case("lossy.webp", _encode(_noise(seed=5), "WEBP", quality=80), "image/webp", size=(64, 48)),
        Case("café ☕ ünïcode name.png", _encode(_noise(seed=6), "PNG"), "image/png"),
        Case(
            "greyscale.jpg",
            _encode(Image.new("L", (16, 16), 128), "JPEG"),
            "image/jpeg",
            notes=(r"^converted from L to RGB$",),
            pixels=((left, (128, 128, 128)),),
            tolerance=2,
        ),
        Case(
            "grey-16bit.png",
            _encode(Image.fromarray(ramp16), "PNG"),
            "image/png",
            notes=(r"high bit depth\) to 8-bit RGB",),
            pixels=(((0, 0), BLACK), ((63, 47), WHITE)),
        ),
        Case(
            "rgb-16bit.png",
            _raw_png(8, 8, 16, 2, [rgb16_row] * 8),
            "image/png",
            size=(8, 8),
            pixels=(((0, 0), (255, 0, 128)),),
        ),
        Case(
            "rgba-16bit.png",
            _raw_png(8, 8, 16, 6, [rgba16_row] * 8),
            "image/png",
            notes=(r"with transparency composited on white",),
            pixels=(((0, 0), RED), ((7, 0), WHITE)),
        ),
        Case(
            "cmyk.jpg",
            _encode(cmyk, "JPEG"),
            "image/jpeg",
            notes=(r"^converted from CMYK to RGB$",),
            pixels=((left, RED),),
            tolerance=40,
        ),
        Case(
            "palette.png",
            _encode(palette, "PNG"),
            "image/png",
            notes=(r"^converted from P to RGB$",),
            pixels=((left, BLUE), (right, RED)),
        ),
        Case(
            "palette-transparent.png",
            _encode(palette, "PNG", transparency=0),
            "image/png",
            notes=(r"^P with transparency composited on white$",),
            pixels=((left, WHITE), (right, RED)),
        ),
        Case(
            "grey-transparent.png",
            _encode(grey_trns, "PNG", transparency=0),
            "image/png",
            notes=(r"^L with transparency composited on white$",),
            pixels=((left, WHITE), (right, (200, 200, 200))),
        ),
        Case(
            "rgba.png",
            _encode(rgba, "PNG"),
            "image/png",
            notes=(r"^RGBA with transparency composited on white$",),
            pixels=((left, RED), (right, WHITE)),
        ),
        Case(
            "half-transparent.png",
            _encode(Image.new("RGBA", (8, 8), (255, 0, 0, 128)), "PNG"),
            "image/png",
            notes=(r"^RGBA with transparency",),
            pixels=(((4, 4), (255, 127, 127)),),
            tolerance=1,
        ),
        Case(
            "grey-alpha.png",
            _encode(la, "PNG"),
            "image/png",
            notes=(r"^LA with transparency composited on white$",),
            pixels=((left, BLACK), (right, WHITE)),
        ),
        Case(
            "alpha.webp",
            _encode(rgba, "WEBP", lossless=True),
            "image/webp",
            notes=(r"^RGBA with transparency",),
            pixels=((left, RED), (right, WHITE)),
        ),
        Case(
            "bilevel.png",
            _encode(bilevel, "PNG"),
            "image/png",
            notes=(r"^converted from 1 to RGB$",),
            pixels=((left, BLACK), (right, WHITE)),
        ),
        Case(
            "exif-6.jpg",
            _with_orientation(half, "JPEG", 6, quality=95),
            "image/jpeg",
            notes=(r"^rotated by its EXIF orientation$",),
            size=(20, 40),
            pixels=(((10, 5), RED), ((10, 35), BLUE)),
            tolerance=40,
        ),
        Case(
            "exif-8.jpg",
            _with_orientation(half, "JPEG", 8, quality=95),
            "image/jpeg",
            notes=(r"^rotated by its EXIF orientation$",),
            size=(20, 40),
            pixels=(((10, 5), BLUE), ((10, 35), RED)),
            tolerance=40,
        ),
        Case(
            "exif-3.jpg",
            _with_orientation(half, "JPEG", 3, quality=95),
            "image/jpeg",
            notes=(r"^rotated by its EXIF orientation$",),
            size=(40, 20),
            pixels=(((5, 10), BLUE), ((35, 10), RED)),
            tolerance=40,
        ),
        Case(
            "exif-6.png",
            _with_orientation(half, "PNG", 6),
            "image/png",
            notes=(r"^rotated by its EXIF orientation$",),
            size=(20, 40),
            pixels=(((10, 5), RED),),
        ),
        Case(
            "exif-invalid-9.jpg",
            _with_orientation(half, "JPEG", 9, quality=95),
            "image/jpeg",
            size=(40, 20),
            pixels=(((5, 10), RED),),
            tolerance=40,
        ),
        Case(
            "animated.webp",
            _animated("WEBP", lossless=True),
            "image/webp",
            notes=(r"^animated WEBP: the first frame is used$",),
            pixels=(((16, 16), RED),),
        ),
        Case(
            "animated.png",
            _animated("PNG"),
            "image/png",
            notes=(r"^animated PNG: the first frame is used$",),
            pixels=(((16, 16), RED),),
        ),
        Case(
            "stereo-mpo.jpg",
            _animated("MPO"),
            "image/jpeg",
            notes=(r"the first frame is used",),
            pixels=(((16, 16), RED),),
            tolerance=40,
        ),
        Case("tiny-1x1.png", _encode(Image.new("RGB", (1, 1), BLUE), "PNG"), "image/png", error=TOO_SMALL),
        Case(
            "tiny-1x1-grey.jpg", _encode(Image.new("L", (1, 1), 255), "JPEG"), "image/jpeg", error=TOO_SMALL
        ),
        Case(
            "thin-7x64.webp", _encode(Image.new("RGB", (7, 64), RED), "WEBP"), "image/webp", error=TOO_SMALL
        ),
        Case("smallest-8x8.png", _encode(Image.new("RGB", (8, 8), BLUE), "PNG"), "image/png", size=(8, 8)),
        Case(
            "panorama-80to1.png",
            _encode(Image.new("RGB", (2000, 25), "green"), "PNG"),
            "image/png",
            size=(2000, 25),
        ),
    )


CORPUS = build_corpus()


def test_the_corpus_is_well_formed():
    names = [case.name for case in CORPUS]
    assert len(set(names)) == len(names)
    assert all(name.lower().endswith((".png", ".jpg", ".jpeg", ".webp")) for name in names)
    assert not [a for a in names for b in names if a != b and a in b]  # a name in an error names one file
    assert sum(case.analysed for case in CORPUS) >= 25 and sum(not case.analysed for case in CORPUS) >= 20
    assert max(len(case.data) for case in CORPUS) > MAX_UPLOAD_BYTES
    assert MAX_ASPECT_RATIO == 100  # the strip cases' messages


# -- (1) every case through decode_upload --------------------------------------------------------------------
@pytest.mark.parametrize("case", CORPUS, ids=[case.name for case in CORPUS])
def test_decode_upload_outcome(case: Case):
    if not case.analysed:
        with pytest.raises(UploadError) as raised:
            decode_upload(case.name, case.data)
        message = str(raised.value)
        assert re.search(case.error, message), message
        assert case.name in message  # the message says which file
        return
    upload = decode_upload(case.name, case.data)
    pixels = np.asarray(upload.image)
    assert upload.image.mode == "RGB" and pixels.dtype == np.uint8 and pixels.ndim == 3
    assert pixels.shape[2] == 3
    assert len(upload.notes) == len(case.notes), upload.notes
    for pattern, note in zip(case.notes, upload.notes, strict=True):
        assert re.search(pattern, note), note
    if case.size is not None:
        assert upload.image.size == case.size
    for (x, y), rgb in case.pixels:
        got = pixels[y, x].astype(int)
        assert np.abs(got - rgb).max() <= case.tolerance, (x, y, tuple(got), rgb)


# -- (2) all cases at once through the upload page ---------------------------------------------------------
def _upload_page(monkeypatch, root: Path) -> AppTest:
    monkeypatch.setenv("PURE_RUNS_DIR", str(root))
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params = {"page": "upload", "run": "small", "neuron": "3", "k": "2"}
    return at.run()


def _expected_notes(cases) -> list[str]:
    return sorted(f"Note: {note}." for case in cases for note in decode_upload(case.name, case.data).notes)


def _shown(name: str) -> str:
    """A file name as the page shows it (literal, in a code span)."""
    return code(name, max_chars=120)


def _page_error(case: Case) -> str:
    """The message the page shows for a refused case: `decode_upload`'s, with the file name as shown."""
    with pytest.raises(UploadError) as raised:
        decode_upload(_shown(case.name), case.data)
    return str(raised.value)


def _check_page(at: AppTest, good: list[Case], bad: list[Case]) -> None:
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert sorted(errors) == sorted(_page_error(case) for case in bad)  # e.g. no "Analysing ... failed"
    assert [s.value for s in at.subheader] == [_shown(case.name) for case in CORPUS]
    # one verdict per analysed image: an assignment in a green box, or a warning saying why there is none
    verdicts = [s.value for s in at.success] + [
        w.value for w in at.warning if w.value.startswith("No assignment")
    ]
    assert len(verdicts) == len(good)
    assert all(v.startswith(("Assigned to **VN ", "No assignment: ")) for v in verdicts)
    assert len(at.dataframe) == len(good)
    notes = sorted(c.value for c in at.caption if c.value.startswith("Note: "))
    assert notes == _expected_notes(good)


def test_the_whole_corpus_through_the_upload_page(monkeypatch, small_runs_root):
    good = [case for case in CORPUS if case.analysed]
    bad = [case for case in CORPUS if not case.analysed]
    at = _upload_page(monkeypatch, small_runs_root)
    assert not at.exception and not at.error
    at.file_uploader[0].set_value([(case.name, case.data, case.mime) for case in CORPUS]).run(timeout=300)
    _check_page(at, good, bad)
    # the session keeps working: a rerun with the same files renders the same page, ...
    at.run(timeout=300)
    _check_page(at, good, bad)
    # ... clearing the uploader goes back to the waiting state, and a new upload is analysed
    at.file_uploader[0].clear().run(timeout=120)
    assert not at.exception and not at.error and not at.success and not at.warning
    assert any("centre-cropped" in c.value for c in at.caption)
    at.file_uploader[0].set_value(("after.png", _encode(_noise(seed=9), "PNG"), "image/png")).run(timeout=120)
    assert not at.exception and not at.error
    verdicts = [*at.success, *(w for w in at.warning if w.value.startswith("No assignment"))]
    assert [s.value for s in at.subheader] == [_shown("after.png")] and len(verdicts) == 1
