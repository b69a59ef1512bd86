"""Tests for sharpeye_ros.ros.image_conversion: raw/compressed image messages <-> RGB arrays.

Messages are SimpleNamespace objects; one test also runs the real sensor_msgs/Image class.
"""

import array
import random
import re
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from sharpeye_ros.ros.image_conversion import (
    SUPPORTED_ENCODINGS,
    ImageConversionError,
    compressed_msg_to_rgb,
    decoder_messages,
    encode_raw,
    fill_image_msg,
    image_msg_to_rgb,
    rgb_to_compressed,
    rgb_to_image_msg_fields,
)

EXACT = {"rgb8", "bgr8", "rgba8", "bgra8", "8UC3", "8UC4"}
GRAY = {"mono8", "mono16", "8UC1", "16UC1"}
YUV = {"yuv422", "yuv422_yuy2"}
BAYER = {"bayer_rggb8", "bayer_bggr8", "bayer_gbrg8", "bayer_grbg8"}

CONTAINERS = {
    "bytes": bytes,
    "bytearray": bytearray,
    "array": lambda b: array.array("B", b),
    "list": list,
    "numpy": lambda b: np.frombuffer(b, dtype=np.uint8),
}


def smooth_rgb(height=48, width=64):
    """A full-range image whose colours vary slowly (fair to chroma subsampling and demosaicing)."""
    yy, xx = np.mgrid[0:height, 0:width]
    r = xx * 255 // (width - 1)
    g = yy * 255 // (height - 1)
    b = 255 - (xx + yy) * 255 // (width + height - 2)
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def raw_msg(rgb, encoding, is_bigendian=False, container=bytes):
    fields = rgb_to_image_msg_fields(rgb, encoding, is_bigendian)
    fields["data"] = container(fields["data"])
    return SimpleNamespace(**fields)


def gray_rgb(rgb):
    return np.repeat(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)


# ----------------------------------------------------------------------------- round trips


def test_supported_encodings_cover_the_brief():
    assert EXACT | GRAY | YUV | BAYER == set(SUPPORTED_ENCODINGS)


@pytest.mark.parametrize("container", sorted(CONTAINERS))
@pytest.mark.parametrize("is_bigendian", [False, True])
@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
def test_round_trip_every_encoding(encoding, is_bigendian, container):
    rgb = smooth_rgb()
    out = image_msg_to_rgb(raw_msg(rgb, encoding, is_bigendian, CONTAINERS[container]))
    assert out.shape == rgb.shape and out.dtype == np.uint8
    err = np.abs(out.astype(int) - rgb.astype(int))
    if encoding in EXACT:
        assert err.max() == 0
    elif encoding in GRAY:
        assert np.array_equal(out, gray_rgb(rgb))  # full-range gray survives mono16 exactly
    elif encoding in YUV:
        assert err.max() <= 6 and err.mean() < 1.5  # 4:2:2 chroma averaging on a steep gradient
    else:
        assert err.mean() < 1.0 and err.max() <= 8


@pytest.mark.parametrize("encoding", sorted(BAYER))
def test_bayer_solid_colours_demosaic_exactly(encoding):
    for colour in ([255, 0, 0], [0, 255, 0], [0, 0, 255], [200, 120, 40]):
        rgb = np.full((16, 16, 3), colour, dtype=np.uint8)
        out = image_msg_to_rgb(raw_msg(rgb, encoding))
        assert np.array_equal(out[2:-2, 2:-2], rgb[2:-2, 2:-2]), (encoding, colour)


def test_bayer_patterns_follow_ros_layout():
    # Hand-built rggb mosaic: only the top-left pixel of each 2x2 block is lit -> solid red.
    mosaic = np.zeros((8, 8), dtype=np.uint8)
    mosaic[0::2, 0::2] = 255
    for encoding, expected in (("bayer_rggb8", [255, 0, 0]), ("bayer_bggr8", [0, 0, 255])):
        msg = SimpleNamespace(height=8, width=8, encoding=encoding, is_bigendian=0, step=8,
                              data=mosaic.tobytes())
        assert np.array_equal(image_msg_to_rgb(msg)[3, 3], expected), encoding


def test_hand_built_bgr8_and_rgba8():
    bgr = SimpleNamespace(height=1, width=2, encoding="bgr8", is_bigendian=0, step=6,
                          data=bytes([1, 2, 3, 4, 5, 6]))
    assert image_msg_to_rgb(bgr).tolist() == [[[3, 2, 1], [6, 5, 4]]]
    rgba = SimpleNamespace(height=1, width=1, encoding="rgba8", is_bigendian=0, step=4,
                           data=bytes([9, 8, 7, 0]))
    assert image_msg_to_rgb(rgba).tolist() == [[[9, 8, 7]]]


def test_hand_built_yuv422_byte_orders():
    # BT.601 limited range: Y=235 is white, Y=16 black, U=V=128 no colour.
    uyvy = SimpleNamespace(height=1, width=2, encoding="yuv422", is_bigendian=0, step=4,
                           data=bytes([128, 235, 128, 16]))
    yuyv = SimpleNamespace(height=1, width=2, encoding="yuv422_yuy2", is_bigendian=0, step=4,
                           data=bytes([235, 128, 16, 128]))
    for msg in (uyvy, yuyv):
        out = image_msg_to_rgb(msg)
        assert np.all(out[0, 0] >= 254) and np.all(out[0, 1] <= 1), msg.encoding


def test_mono16_respects_byte_order():
    data = bytes([0x12, 0x34, 0xFF, 0xFF])
    big = SimpleNamespace(height=1, width=2, encoding="mono16", is_bigendian=1, step=4, data=data)
    little = SimpleNamespace(height=1, width=2, encoding="mono16", is_bigendian=0, step=4, data=data)
    assert image_msg_to_rgb(big)[0, :, 0].tolist() == [0x12, 255]
    assert image_msg_to_rgb(little)[0, :, 0].tolist() == [0x34, 255]


def test_mono16_12_bit_camera_is_scaled_by_its_bit_depth():
    values = np.array([[0, 1024, 2048, 4095]], dtype="<u2")  # a 12-bit sensor in 16-bit pixels
    msg = SimpleNamespace(height=1, width=4, encoding="16UC1", is_bigendian=0, step=8,
                          data=values.tobytes())
    assert image_msg_to_rgb(msg)[0, :, 1].tolist() == [0, 64, 128, 255]


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "bgra8", "mono8", "mono16", "yuv422", "bayer_gbrg8"])
def test_row_padding_is_cropped_and_trailing_bytes_ignored(encoding):
    rgb = smooth_rgb(10, 12)
    plain = image_msg_to_rgb(raw_msg(rgb, encoding))
    rows = encode_raw(rgb, encoding)
    padded = np.full((rows.shape[0], rows.shape[1] + 7), 255, dtype=np.uint8)
    padded[:, : rows.shape[1]] = rows
    msg = SimpleNamespace(height=10, width=12, encoding=encoding, is_bigendian=0,
                          step=padded.shape[1], data=padded.tobytes() + b"\x07" * 13)
    assert np.array_equal(image_msg_to_rgb(msg), plain)


def test_rgb8_is_a_read_only_zero_copy_view():
    rgb = smooth_rgb()
    msg = raw_msg(rgb, "rgb8", container=lambda b: array.array("B", b))
    out = image_msg_to_rgb(msg)
    assert np.shares_memory(out, np.frombuffer(msg.data, dtype=np.uint8))
    assert not out.flags.writeable
    assert np.array_equal(out, rgb)


def test_encoding_names_are_case_insensitive():
    rgb = smooth_rgb(4, 4)
    msg = raw_msg(rgb, "bgr8")
    msg.encoding = " BGR8 "
    assert np.array_equal(image_msg_to_rgb(msg), rgb)


# ----------------------------------------------------------------------------- raw errors


def good_msg(**changes):
    msg = raw_msg(smooth_rgb(6, 8), "rgb8")
    for key, value in changes.items():
        setattr(msg, key, value)
    return msg


@pytest.mark.parametrize(
    "changes, pattern",
    [
        ({"encoding": "32FC1"}, r"unsupported image encoding '32FC1'; supported: rgb8, bgr8"),
        ({"encoding": None}, r"encoding must be a string"),
        ({"width": 0}, r"zero size: width=0, height=6"),
        ({"height": 0}, r"zero size: width=8, height=0"),
        ({"height": -3}, r"zero size"),
        ({"width": 8.0}, r"field 'width' must be an integer"),
        ({"step": 23}, r"step 23 is smaller than width\*bytes_per_pixel = 8\*3 = 24"),
        ({"data": bytes(100)}, r"expected step\*height = 24\*6 = 144 bytes, got 100"),
        ({"data": "abc"}, r"data must be bytes, bytearray"),
        ({"data": None}, r"data must be bytes"),
        ({"data": [0, 300] * 72}, r"integers in 0..255"),
        ({"data": array.array("H", range(144))}, r"typecode 'B'"),
        ({"data": np.zeros(144, dtype=np.float32)}, r"dtype uint8"),
        ({"encoding": "yuv422", "width": 7, "step": 14}, r"yuv422 image needs an even width"),
    ],
)
def test_bad_raw_messages_name_the_problem(changes, pattern):
    with pytest.raises(ImageConversionError, match=pattern):
        image_msg_to_rgb(good_msg(**changes))


def test_huge_image_is_rejected_before_looking_at_data():
    # 100k x 100k with empty data: the size check must come first (no allocation, no length error).
    msg = SimpleNamespace(height=100_000, width=100_000, encoding="rgb8", is_bigendian=0,
                          step=300_000, data=b"")
    with pytest.raises(ImageConversionError, match=r"10000000000 pixels exceeds max_pixels=50000000"):
        image_msg_to_rgb(msg)
    with pytest.raises(ImageConversionError, match="max_pixels=47"):
        image_msg_to_rgb(good_msg(), max_pixels=47)
    assert image_msg_to_rgb(good_msg(), max_pixels=48).shape == (6, 8, 3)


def test_long_thin_frames_are_refused_by_aspect_ratio_before_decoding():
    thin = SimpleNamespace(height=1, width=16000, encoding="rgb8", is_bigendian=0, step=48000,
                           data=bytes(48000))
    with pytest.raises(ImageConversionError, match=r"16000x1 has an aspect ratio of 1\.6e\+04:1, "
                                                   r"beyond max_aspect_ratio=32"):
        image_msg_to_rgb(thin)
    assert image_msg_to_rgb(thin, max_aspect_ratio=20_000).shape == (1, 16000, 3)
    assert image_msg_to_rgb(good_msg(height=2, width=64, step=192, data=bytes(384))).shape == (2, 64, 3)  # 32:1
    # A PNG of a few hundred bytes that decodes to 1x40000: refused from its header.
    png = SimpleNamespace(format="png", data=rgb_to_compressed(np.zeros((40000, 1, 3), np.uint8), "png"))
    assert len(png.data) < 1000
    with pytest.raises(ImageConversionError, match=r"1x40000 has an aspect ratio of 4e\+04:1"):
        compressed_msg_to_rgb(png)


def test_data_past_the_image_is_ignored_with_a_warning():
    msg = good_msg()
    msg.data = bytes(msg.data) + bytes(5)
    warnings: list[str] = []
    assert np.array_equal(image_msg_to_rgb(msg, warnings=warnings), smooth_rgb(6, 8))
    assert warnings == ["image data has 5 bytes past step*height = 24*6; ignored"]


def test_fuzzed_raw_messages_raise_only_image_conversion_error():
    rng = random.Random(1234)
    encodings = list(SUPPORTED_ENCODINGS) + ["", "rgb16", "bayer_rggb16", "jpeg", "nv21"]
    containers = list(CONTAINERS.values())
    decoded = 0
    for _ in range(1500):
        height = rng.choice([0, 1, 2, 3, 5, 8, 17, -1, 70_000])
        width = rng.choice([0, 1, 2, 3, 4, 7, 16, -2, 70_000])
        step = max(0, width) * rng.choice([0, 1, 2, 3, 4, 5]) + rng.choice([0, 0, 1, 3, -1])
        length = max(0, step * max(0, height) + rng.choice([-5, -1, 0, 0, 0, 2, 40]))
        length = min(length, 4096)
        msg = SimpleNamespace(height=height, width=width, encoding=rng.choice(encodings),
                              is_bigendian=rng.choice([0, 1]), step=step,
                              data=rng.choice(containers)(rng.randbytes(length)))
        try:
            out = image_msg_to_rgb(msg)
        except ImageConversionError:
            continue
        decoded += 1
        assert out.shape == (height, width, 3) and out.dtype == np.uint8
    assert decoded > 50  # the fuzzer also exercised the success paths


# ----------------------------------------------------------------------------- compressed


@pytest.mark.parametrize(
    "fmt, kind",
    [("jpeg", "jpeg"), ("jpg", "jpeg"), ("rgb8; jpeg compressed bgr8", "jpeg"), ("png", "png"),
     ("bgr8; png compressed", "png"), ("bgr8; png compressed bgr8", "png"), ("", "png"), ("", "jpeg")],
)
def test_compressed_round_trip(fmt, kind):
    rgb = smooth_rgb()
    data = rgb_to_compressed(rgb, kind, quality=95)
    out = compressed_msg_to_rgb(SimpleNamespace(format=fmt, data=array.array("B", data)))
    assert out.shape == rgb.shape and out.dtype == np.uint8
    err = np.abs(out.astype(int) - rgb.astype(int))
    if kind == "png":
        assert err.max() == 0
    else:
        assert err.mean() < 3.0


def test_compressed_16_bit_gray_and_alpha_pngs():
    gray16 = np.array([[0, 32768, 65535]], dtype=np.uint16)
    ok, png16 = cv2.imencode(".png", gray16)
    assert ok
    out = compressed_msg_to_rgb(SimpleNamespace(format="mono16; png compressed mono16", data=png16.tobytes()))
    assert out.shape == (1, 3, 3) and out[0, :, 0].tolist() == [0, 128, 255]
    assert np.array_equal(out[..., 0], out[..., 2])

    gray8 = np.array([[10, 200]], dtype=np.uint8)
    ok, png8 = cv2.imencode(".png", gray8)
    assert np.array_equal(compressed_msg_to_rgb(SimpleNamespace(format="png", data=png8.tobytes()))[0],
                          [[10, 10, 10], [200, 200, 200]])

    bgra = np.array([[[30, 20, 10, 0]]], dtype=np.uint8)
    ok, png_alpha = cv2.imencode(".png", bgra)
    out = compressed_msg_to_rgb(SimpleNamespace(format="png", data=bytes(png_alpha)))
    assert out[0, 0].tolist() == [10, 20, 30]


def test_compressed_size_limit_reads_headers_before_decoding():
    rgb = smooth_rgb(48, 64)
    for kind in ("jpeg", "png"):
        msg = SimpleNamespace(format=kind, data=rgb_to_compressed(rgb, kind))
        with pytest.raises(ImageConversionError, match=r"64x48 = 3072 pixels exceeds max_pixels=3000"):
            compressed_msg_to_rgb(msg, max_pixels=3000)
    # A PNG header claiming 100000 x 100000 pixels is refused without decoding anything.
    png = bytearray(rgb_to_compressed(rgb, "png"))
    png[16:24] = (100_000).to_bytes(4, "big") * 2
    with pytest.raises(ImageConversionError, match="exceeds max_pixels"):
        compressed_msg_to_rgb(SimpleNamespace(format="png", data=bytes(png)))


@pytest.mark.parametrize(
    "fmt, data, pattern",
    [
        ("theora", b"\xff\xd8\xff\xe0", r"unknown compressed image format 'theora'; supported: jpeg, png"),
        ("16UC1; compressedDepth png", b"\x89PNG\r\n\x1a\n", "compressed depth images are not supported"),
        (None, b"", "format must be a string"),
        ("jpeg", b"", r"not a JPEG or PNG \(starts with nothing"),
        ("jpeg", b"GIF89a....", "not a JPEG or PNG"),
        ("jpeg", b"\xff\xd8\xff" + bytes(50), "corrupt JPEG data: no readable image header"),
        ("png", b"\x89PNG\r\n\x1a\n" + bytes(4), "corrupt PNG data: no readable image header"),
        ("jpeg", 3.5, "data must be bytes"),
    ],
)
def test_bad_compressed_messages_name_the_problem(fmt, data, pattern):
    with pytest.raises(ImageConversionError, match=pattern):
        compressed_msg_to_rgb(SimpleNamespace(format=fmt, data=data))


def test_png_with_damaged_pixel_data_is_reported_corrupt():
    png = bytearray(rgb_to_compressed(smooth_rgb(), "png"))
    png[60:-20] = bytes(len(png) - 80)  # keep the header, wipe the compressed pixels
    with pytest.raises(ImageConversionError, match="corrupt PNG data"):
        compressed_msg_to_rgb(SimpleNamespace(format="png", data=bytes(png)))


def test_damaged_but_decodable_jpeg_is_a_warning_and_decoder_output_stays_off_stderr(capfd):
    jpeg = rgb_to_compressed(smooth_rgb(), "jpeg")
    damaged = jpeg[:-2] + bytes(range(1, 40)) + jpeg[-2:]  # junk before the end-of-image marker
    warnings: list[str] = []
    out = compressed_msg_to_rgb(SimpleNamespace(format="jpeg", data=damaged), warnings=warnings)
    assert np.abs(out.astype(int) - smooth_rgb()).mean() < 6.0
    (warning,) = warnings
    assert re.fullmatch(r"damaged JPEG data, decoded anyway: Corrupt JPEG data: \d+ extraneous bytes "
                        r"before marker 0xd9", warning), warning
    flipped = 0  # bit flips in the scan data: libjpeg notices some of them
    for pos in range(len(jpeg) // 2, len(jpeg) - 2, 3):
        data = bytearray(jpeg)
        data[pos] ^= 0x10
        warnings = []
        try:
            compressed_msg_to_rgb(SimpleNamespace(format="jpeg", data=bytes(data)), warnings=warnings)
        except ImageConversionError:
            continue
        flipped += bool(warnings) and warnings[0].startswith("damaged JPEG data, decoded anyway: Corrupt JPEG")
    assert flipped >= 5
    png = rgb_to_compressed(smooth_rgb(), "png")
    for _ in range(3):  # OpenCV's "[ WARN:0@...] grfmt_png.cpp ..." becomes the error's text
        with pytest.raises(ImageConversionError, match="corrupt PNG data: PNG input buffer is incomplete"):
            compressed_msg_to_rgb(SimpleNamespace(format="png", data=png[: len(png) // 2]))
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""


def test_decoder_messages_pass_other_output_through(capfd):
    import os

    with decoder_messages() as said:
        os.write(2, b"[WARN] [1.5] [camera]: a log line of another thread\n")
        os.write(2, b"Corrupt JPEG data: bad Huffman code\n")
        os.write(2, b"[ WARN:0@1.2] global grfmt_png.cpp:793 readFromStreamOrBuffer PNG input buffer is incomplete\n")
    assert said == ["Corrupt JPEG data: bad Huffman code", "PNG input buffer is incomplete"]
    assert capfd.readouterr().err == "[WARN] [1.5] [camera]: a log line of another thread\n"


def test_fuzzed_compressed_messages_raise_only_image_conversion_error():
    rng = random.Random(99)
    rgb = smooth_rgb(24, 32)
    valid = [rgb_to_compressed(rgb, "jpeg"), rgb_to_compressed(rgb, "png")]
    formats = ["jpeg", "png", "", "rgb8; jpeg compressed bgr8", "tiff", "bgr8; png compressed"]
    decoded = 0
    for _ in range(300):
        data = bytearray(rng.choice(valid))
        mutation = rng.choice(["flip", "truncate", "random", "none"])
        if mutation == "flip":
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif mutation == "truncate":
            data = data[: rng.randrange(len(data))]
        elif mutation == "random":
            data = bytearray(data[:3] + rng.randbytes(rng.randrange(64)))
        msg = SimpleNamespace(format=rng.choice(formats), data=bytes(data))
        try:
            out = compressed_msg_to_rgb(msg, max_pixels=10_000)
        except ImageConversionError:
            continue
        decoded += 1
        assert out.ndim == 3 and out.shape[2] == 3 and out.dtype == np.uint8
    assert decoded > 30


# ----------------------------------------------------------------------------- building messages


def test_image_msg_fields_and_fill():
    rgb = smooth_rgb(5, 6)
    fields = rgb_to_image_msg_fields(rgb, "bgr8")
    assert fields == {"height": 5, "width": 6, "encoding": "bgr8", "is_bigendian": 0, "step": 18,
                      "data": rgb[..., ::-1].tobytes()}
    msg = fill_image_msg(SimpleNamespace(), rgb, encoding="yuv422", is_bigendian=True)
    assert (msg.height, msg.width, msg.step, msg.encoding, msg.is_bigendian) == (5, 6, 12, "yuv422", 1)
    assert isinstance(msg.data, array.array) and len(msg.data) == 60


def test_fill_real_sensor_msgs_image_with_field_checks():
    sensor_msgs = pytest.importorskip("sensor_msgs.msg")
    rgb = smooth_rgb()
    for encoding in ("rgb8", "bgr8", "mono16"):
        msg = fill_image_msg(sensor_msgs.Image(check_fields=True), rgb, encoding)
        expected = gray_rgb(rgb) if encoding == "mono16" else rgb
        assert np.array_equal(image_msg_to_rgb(msg), expected)
    compressed = sensor_msgs.CompressedImage(format="png", data=rgb_to_compressed(rgb, "png"))
    assert np.array_equal(compressed_msg_to_rgb(compressed), rgb)


@pytest.mark.parametrize(
    "call, pattern",
    [
        (lambda: encode_raw(np.zeros((4, 4), np.uint8), "rgb8"), r"rgb must be an \(H, W, 3\) uint8 array"),
        (lambda: encode_raw(np.zeros((4, 4, 3), np.float32), "rgb8"), "float32 array of shape"),
        (lambda: encode_raw(np.zeros((0, 4, 3), np.uint8), "rgb8"), "must not be empty"),
        (lambda: encode_raw(np.zeros((4, 5, 3), np.uint8), "yuv422"), "even width"),
        (lambda: encode_raw(np.zeros((4, 4, 3), np.uint8), "hsv8"), "unsupported image encoding 'hsv8'"),
        (lambda: rgb_to_compressed(np.zeros((4, 4, 3), np.uint8), "webp"), "'jpeg' or 'png'"),
        (lambda: rgb_to_compressed(np.zeros((4, 4, 3), np.uint8), "jpeg", quality=101), "0..100"),
    ],
)
def test_encoder_rejects_bad_input(call, pattern):
    with pytest.raises(ImageConversionError, match=pattern):
        call()
