"""Uploads are decoded safely: every mode becomes 8-bit RGB, EXIF rotation is applied, bad files get a
message (UploadError), never a crash."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from app.uploads import MAX_PIXELS, MIN_SIDE_PX, UploadError, decode_upload, libjpeg_warning


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_rgb_png_is_kept_as_is():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8))
    upload = decode_upload("a.png", _encode(image, "PNG"))
    assert upload.image.mode == "RGB" and upload.image.size == (30, 20) and upload.notes == ()
    assert np.array_equal(np.asarray(upload.image), np.asarray(image))
    assert len(upload.sha256) == 64


def test_16_bit_greyscale_is_scaled_to_8_bit():
    ramp = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)
    upload = decode_upload("deep.png", _encode(Image.fromarray(ramp), "PNG"))
    pixels = np.asarray(upload.image)
    assert upload.image.mode == "RGB" and pixels.max() == 255 and pixels.min() == 0
    assert "high bit depth" in upload.notes[0]


def test_cmyk_jpeg_becomes_rgb():
    upload = decode_upload("print.jpg", _encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG"))
    red = np.asarray(upload.image)[8, 8]
    assert upload.image.mode == "RGB" and red[0] > 200 and red[1] < 60
    assert "CMYK" in upload.notes[0]


def test_transparency_is_composited_on_white():
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    upload = decode_upload("clear.png", _encode(rgba, "PNG"))
    assert tuple(np.asarray(upload.image)[0, 0]) == (255, 255, 255)
    palette = Image.new("P", (10, 10), 0)
    palette.putpalette([0, 0, 255] + [0] * 765)
    upload = decode_upload("pal.png", _encode(palette, "PNG", transparency=0))
    assert tuple(np.asarray(upload.image)[0, 0]) == (255, 255, 255)


def test_palette_without_transparency_keeps_its_colours():
    palette = Image.new("P", (10, 10), 0)
    palette.putpalette([0, 0, 255] + [0] * 765)
    upload = decode_upload("pal.png", _encode(palette, "PNG"))
    assert tuple(np.asarray(upload.image)[0, 0]) == (0, 0, 255)


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    upload = decode_upload("phone.jpg", _encode(image, "JPEG", exif=exif.tobytes()))
    assert upload.image.size == (20, 40)
    assert any("EXIF" in note for note in upload.notes)


def _png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width x height`` (a decompression bomb's header; no real pixel data)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    idat = b"IDAT" + zlib.compress(b"\x00" * 16)
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + struct.pack(">I", len(idat) - 4)
        + idat
        + struct.pack(">I", zlib.crc32(idat))
    )


def test_decompression_bombs_are_refused_from_the_header():
    with pytest.raises(UploadError, match="decompression bomb"):
        decode_upload("bomb.png", _png_header_claiming(60_000, 60_000))


def test_pixel_limit_is_configurable():
    data = _encode(Image.new("RGB", (20, 20)), "PNG")
    with pytest.raises(UploadError, match="decompression bombs"):
        decode_upload("x.png", data, max_pixels=100)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"hello, not an image", "not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not an image|could not be decoded"),
    ],
)
def test_garbage_gets_a_message(data, message):
    with pytest.raises(UploadError, match=message):
        decode_upload("bad.png", data)


def test_truncated_file_gets_a_message():
    data = _encode(
        Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)), "PNG"
    )
    with pytest.raises(UploadError, match="could not be decoded"):
        decode_upload("cut.png", data[: len(data) // 2])


def test_other_formats_are_refused_by_name():
    with pytest.raises(UploadError, match="GIF image; upload PNG, JPEG or WEBP"):
        decode_upload("anim.gif", _encode(Image.new("P", (8, 8)), "GIF"))


def test_size_limit():
    with pytest.raises(UploadError, match="the limit is 1 MB"):
        decode_upload("big.png", b"\x00" * (2 * 2**20), max_bytes=2**20)


def test_animated_webp_uses_the_first_frame():
    frames = [Image.new("RGB", (12, 12), colour) for colour in ("red", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="WEBP", save_all=True, append_images=frames[1:], lossless=True)
    upload = decode_upload("anim.webp", buffer.getvalue())
    assert tuple(np.asarray(upload.image)[6, 6]) == (255, 0, 0)
    assert any("first frame" in note for note in upload.notes)


def _corrupt_jpeg() -> tuple[bytes, bytes]:
    """(a clean JPEG of noise, the same with 64 bytes of its entropy-coded body overwritten)."""
    noise = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    clean = _encode(Image.fromarray(noise), "JPEG", quality=90)
    damaged = bytearray(clean)
    middle = len(clean) // 2
    damaged[middle : middle + 64] = (b"\xff\x00\xa5\x5a" * 16)[:64]
    return clean, bytes(damaged)


def test_libjpeg_warnings_reveal_a_damaged_jpeg_body_pillow_decodes_silently():
    clean, damaged = _corrupt_jpeg()
    Image.open(io.BytesIO(damaged)).load()  # Pillow: no error, garbled blocks
    assert libjpeg_warning(clean) is None
    assert libjpeg_warning(damaged).startswith("Corrupt JPEG data")
    with pytest.raises(UploadError, match=r"photo\.jpg could not be decoded .*JPEG body is damaged"):
        decode_upload("photo.jpg", damaged)
    assert decode_upload("photo.jpg", clean).image.size == (64, 48)


def test_images_smaller_than_the_minimum_side_are_refused():
    for size in ((1, 1), (7, 300), (300, 7)):
        with pytest.raises(
            UploadError, match=rf"is {size[0]} x {size[1]} px; images need at least {MIN_SIDE_PX}"
        ):
            decode_upload("tiny.png", _encode(Image.new("RGB", size), "PNG"))
    assert decode_upload("ok.png", _encode(Image.new("RGB", (MIN_SIDE_PX, MIN_SIDE_PX)), "PNG"))


def test_a_decompression_bomb_message_quotes_the_apps_limit_not_pils():
    with pytest.raises(UploadError) as raised:
        decode_upload("bomb.png", _png_header_claiming(10_000, 9_000))
    assert f"the limit is {MAX_PIXELS / 1e6:.0f} megapixels" in str(raised.value)
    assert "80" not in str(raised.value).split(";", 1)[1]


@pytest.mark.parametrize("method", ["gradient_x_input", "lrp"])
def test_the_upload_heatmap_is_made_as_the_runs_crops_are(method):
    """The upload page explains an image with the heatmap method the run's crops used (LRP for a ResNet)."""
    import torch
    import torchvision

    from app.uploads import analyse_image
    from pure_core.heatmaps import input_heatmaps_for_pairs
    from pure_core.models import IMAGENET_PREPROCESSING, LoadedModel, ModelSpec

    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    loaded = LoadedModel(model, IMAGENET_PREPROCESSING, None, ModelSpec("resnet18"))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (240, 260, 3), dtype=np.uint8))
    analysis = analyse_image(loaded, image, "layer4", "layer3", 7, list(range(512)), heatmap_method=method)
    x = IMAGENET_PREPROCESSING.to_tensor(image)[None]
    expected = input_heatmaps_for_pairs(model, x, "layer4", [7], method=method)[0].numpy()
    np.testing.assert_allclose(analysis.heatmap, expected, rtol=1e-5, atol=1e-7)
    assert analysis.heatmap.shape == (224, 224) and np.abs(analysis.heatmap).sum() > 0


def test_the_top_neurons_are_ranked_relative_to_their_weakest_reference():
    """A channel of large scale does not crowd out one that the image drives past its own references."""
    import torch
    from torch import nn

    from app.uploads import analyse_image, relative_activation
    from pure_core.models import LoadedModel, ModelSpec, Preprocessing

    class TwoScales(nn.Module):
        def __init__(self):
            super().__init__()
            self.lower = nn.Conv2d(3, 2, 1)
            self.layer = nn.Conv2d(2, 3, 1)

        def forward(self, x):
            return self.layer(self.lower(x))

    model = TwoScales().eval()
    with torch.no_grad():
        model.lower.weight.fill_(1.0)
        model.lower.bias.zero_()
        model.layer.weight.copy_(torch.tensor([[10.0, 0.0], [1.0, 0.0], [0.5, 0.0]])[:, :, None, None])
        model.layer.bias.zero_()
    prep = Preprocessing(size=8, resize=8, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                         interpolation="bilinear")
    loaded = LoadedModel(model, prep, None, ModelSpec("two-scales"))
    image = Image.new("RGB", (8, 8), (255, 255, 255))  # lower = 3 everywhere: activations 30, 3, 1.5
    weakest = {0: 100.0, 1: 2.5, 2: 1.0}  # channel 0 would need 100 to be a reference
    raw = analyse_image(loaded, image, "layer", "lower", 0, [0, 1, 2], top_n=3)
    relative = analyse_image(loaded, image, "layer", "lower", 0, [0, 1, 2], top_n=3, weakest=weakest)
    assert raw.top == [0, 1, 2]
    assert relative.top == [2, 1, 0]  # 1.5 / 1 > 3 / 2.5 > 30 / 100
    assert relative_activation(3.0, 1, weakest) == 1.2 and relative_activation(3.0, 1, None) == 3.0
    assert relative_activation(3.0, 9, weakest) == float("-inf")  # no references: ranked last


def test_weakest_activations_skip_missing_reference_slots():
    from store.schema import References

    refs = References(np.array([4, 7]), np.array([[3, 5, -1], [-1, -1, -1]]),
                      np.array([[9.0, 2.0, 0.0], [0.0, 0.0, 0.0]]), np.zeros((2, 3, 2)))
    assert refs.weakest_activations() == {4: 2.0}
