"""Convert ROS 2 image messages to RGB numpy arrays and back, without cv_bridge.

cv_bridge from PyPI is broken with numpy 2, so the captioner decodes ``sensor_msgs/Image``
and ``sensor_msgs/CompressedImage`` itself. Nothing here imports rclpy or sensor_msgs:
messages are duck-typed by attribute (``height, width, encoding, is_bigendian, step, data``
for raw images, ``format, data`` for compressed ones), so the functions are tested with
plain ``types.SimpleNamespace`` objects.

Every malformed message raises :class:`ImageConversionError` (a ``ValueError``) with a
message naming what is wrong; nothing else escapes, so the node can catch one type. A
frame that decodes but is damaged (libjpeg's "Corrupt JPEG data: ...", OpenCV's and
libpng's warnings) is returned, and what the decoder said goes to the caller's
``warnings`` list instead of the process's stderr.
"""

from __future__ import annotations

import array
import os
import re
import sys
import tempfile
import threading
from contextlib import contextmanager
from typing import Any, Iterator, Optional

import cv2
import numpy as np

DEFAULT_MAX_PIXELS = 50_000_000
# Wider (or taller) than this, a frame would reach the model as a sliver a few pixels high.
DEFAULT_MAX_ASPECT_RATIO = 32.0

# Bytes per pixel of each supported raw encoding (ROS names, see sensor_msgs/image_encodings).
_BYTES_PER_PIXEL = {
    "rgb8": 3,
    "bgr8": 3,
    "rgba8": 4,
    "bgra8": 4,
    "mono8": 1,
    "mono16": 2,
    "yuv422": 2,  # UYVY
    "yuv422_yuy2": 2,  # YUYV
    "bayer_rggb8": 1,
    "bayer_bggr8": 1,
    "bayer_gbrg8": 1,
    "bayer_grbg8": 1,
}

# OpenCV type names carry no colour order; like OpenCV itself we read 3/4 channels as BGR(A).
_ALIASES = {"8uc1": "mono8", "8uc3": "bgr8", "8uc4": "bgra8", "16uc1": "mono16"}

SUPPORTED_ENCODINGS = tuple(_BYTES_PER_PIXEL) + ("8UC1", "8UC3", "8UC4", "16UC1")

# OpenCV names Bayer patterns after the second row's 2x2 block, so ROS "rggb" is cv2 "BG"
# (the same mapping cv_bridge uses). The numeric codes are identical in OpenCV 4 and 5.
_TO_RGB = {
    "bgr8": cv2.COLOR_BGR2RGB,
    "rgba8": cv2.COLOR_RGBA2RGB,
    "bgra8": cv2.COLOR_BGRA2RGB,
    "mono8": cv2.COLOR_GRAY2RGB,
    "mono16": cv2.COLOR_GRAY2RGB,
    "yuv422": cv2.COLOR_YUV2RGB_UYVY,
    "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUY2,
    "bayer_rggb8": cv2.COLOR_BayerBG2RGB,
    "bayer_bggr8": cv2.COLOR_BayerRG2RGB,
    "bayer_gbrg8": cv2.COLOR_BayerGR2RGB,
    "bayer_grbg8": cv2.COLOR_BayerGB2RGB,
}

_JPEG_SIGNATURE = b"\xff\xd8\xff"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ImageConversionError(ValueError):
    """An image message (or array) that cannot be converted; the message says why."""


# ----------------------------------------------------------------------------- helpers


def _canonical_encoding(encoding: Any) -> str:
    if not isinstance(encoding, str):
        raise ImageConversionError(f"image encoding must be a string, got {type(encoding).__name__}")
    name = encoding.strip().lower()
    name = _ALIASES.get(name, name)
    if name not in _BYTES_PER_PIXEL:
        raise ImageConversionError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}"
        )
    return name


def _field_int(msg: Any, field: str) -> int:
    value = getattr(msg, field, None)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ImageConversionError(f"image field '{field}' must be an integer, got {value!r}")
    return int(value)


def _as_uint8(data: Any) -> np.ndarray:
    """View message ``data`` as a flat uint8 array, without copying where possible."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise ImageConversionError(f"image data array must have dtype uint8, got {data.dtype}")
        return data.reshape(-1)
    if isinstance(data, array.array) and data.typecode != "B":
        raise ImageConversionError(f"image data array.array must have typecode 'B', got {data.typecode!r}")
    if isinstance(data, (bytes, bytearray, memoryview, array.array)):
        return np.frombuffer(data, dtype=np.uint8)
    if isinstance(data, (list, tuple)):
        try:
            return np.asarray(data, dtype=np.uint8).reshape(-1)
        except (OverflowError, ValueError, TypeError) as err:
            raise ImageConversionError(f"image data list must hold integers in 0..255 ({err})") from None
    raise ImageConversionError(
        f"image data must be bytes, bytearray, array.array('B'), a list of ints or a uint8 "
        f"numpy array, got {type(data).__name__}"
    )


def _check_size(width: int, height: int, max_pixels: int, max_aspect_ratio: float) -> None:
    """Refuse, before decoding, frames too large or too elongated to caption."""
    if width * height > max_pixels:
        raise ImageConversionError(
            f"image of {width}x{height} = {width * height} pixels exceeds max_pixels={max_pixels}"
        )
    ratio = max(width, height) / min(width, height)
    if ratio > max_aspect_ratio:
        raise ImageConversionError(
            f"image of {width}x{height} has an aspect ratio of {ratio:.4g}:1, beyond "
            f"max_aspect_ratio={max_aspect_ratio:g} (the model would see a sliver of it)"
        )


def to_8bit(values: np.ndarray) -> np.ndarray:
    """Scale 16-bit intensities to uint8 by the bit depth the frame actually uses.

    A 12-bit camera (or a depth image in millimetres) stored as 16 bit fills only the low
    bits, and plain ``>> 8`` would make it almost black. The frame's maximum decides the
    effective bit depth (at least 8), and values are shifted down to 8 bits from there, so
    a full-range 16-bit frame maps exactly like ``>> 8``.
    """
    if values.dtype == np.uint8:
        return values
    bits = max(8, int(values.max(initial=0)).bit_length())
    return (values >> (bits - 8)).astype(np.uint8)


def validate_rgb(rgb: Any, name: str = "rgb") -> np.ndarray:
    """Return ``rgb`` if it is an (H, W, 3) uint8 array with H, W > 0, else raise ValueError."""
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        desc = (f"{rgb.dtype} array of shape {rgb.shape}" if isinstance(rgb, np.ndarray)
                else type(rgb).__name__)
        raise ImageConversionError(f"{name} must be an (H, W, 3) uint8 array, got {desc}")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ImageConversionError(f"{name} must not be empty, got shape {rgb.shape}")
    return rgb


def _cvt(pixels: np.ndarray, code: int, encoding: str) -> np.ndarray:
    try:
        return cv2.cvtColor(pixels, code)
    except cv2.error as err:  # only reachable for odd shapes cv2 refuses; keep the one error type
        raise ImageConversionError(
            f"cannot convert {encoding} image of shape {pixels.shape}: {err}"
        ) from None


# ----------------------------------------------------------------------------- decoding


def image_msg_to_rgb(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS,
                     max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO,
                     warnings: Optional[list[str]] = None) -> np.ndarray:
    """Convert a ``sensor_msgs/Image``-like message to an (H, W, 3) uint8 RGB array.

    Row padding (``step`` larger than the pixel bytes of a row) is cropped and bytes past
    ``step * height`` are ignored (with a note in ``warnings``). For unpadded rgb8 the
    result is a read-only view of ``msg.data`` (no copy); copy it before modifying. Raises
    :class:`ImageConversionError` for anything malformed, before allocating when the image
    exceeds ``max_pixels`` or ``max_aspect_ratio``.
    """
    encoding = _canonical_encoding(getattr(msg, "encoding", None))
    height, width, step = (_field_int(msg, f) for f in ("height", "width", "step"))
    if height <= 0 or width <= 0:
        raise ImageConversionError(f"image has zero size: width={width}, height={height}")
    _check_size(width, height, max_pixels, max_aspect_ratio)
    row_bytes = width * _BYTES_PER_PIXEL[encoding]
    if step < row_bytes:
        raise ImageConversionError(
            f"image step {step} is smaller than width*bytes_per_pixel = {width}*"
            f"{_BYTES_PER_PIXEL[encoding]} = {row_bytes} for encoding {encoding!r}"
        )
    if encoding.startswith("yuv422") and width % 2:
        raise ImageConversionError(
            f"{encoding} image needs an even width (2 pixels share chroma), got {width}"
        )
    buf = _as_uint8(getattr(msg, "data", None))
    if buf.size < step * height:
        raise ImageConversionError(
            f"image data too short: expected step*height = {step}*{height} = {step * height} bytes, "
            f"got {buf.size}"
        )
    if buf.size > step * height and warnings is not None:
        warnings.append(f"image data has {buf.size - step * height} bytes past step*height = "
                        f"{step}*{height}; ignored")
    rows = buf[: step * height].reshape(height, step)[:, :row_bytes]
    if encoding == "mono16":
        pixels = to_8bit(rows.view(">u2" if getattr(msg, "is_bigendian", 0) else "<u2"))
    elif encoding == "mono8" or encoding.startswith("bayer_"):
        pixels = rows
    else:
        pixels = rows.reshape(height, width, row_bytes // width)
    if encoding != "rgb8":
        return _cvt(pixels, _TO_RGB[encoding], encoding)
    if step != row_bytes:
        return np.ascontiguousarray(pixels)
    view = pixels.view()  # zero copy into msg.data: keep callers from silently editing the message
    view.flags.writeable = False
    return view


def _check_compressed_format(fmt: Any) -> None:
    """Reject CompressedImage formats other than JPEG/PNG (an empty format is sniffed later)."""
    if not isinstance(fmt, str):
        raise ImageConversionError(f"compressed image format must be a string, got {type(fmt).__name__}")
    tokens = re.findall(r"[a-z0-9]+", fmt.lower())
    if "compresseddepth" in tokens:
        raise ImageConversionError(f"compressed depth images are not supported (format {fmt!r})")
    if tokens and not {"jpeg", "jpg", "png"} & set(tokens):
        raise ImageConversionError(f"unknown compressed image format {fmt!r}; supported: jpeg, png")


def _jpeg_size(data: memoryview) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header, walking the marker segments."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        length = (data[i + 2] << 8) | data[i + 3]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
            if i + 9 > n:
                return None
            return (data[i + 7] << 8) | data[i + 8], (data[i + 5] << 8) | data[i + 6]
        if marker == 0xDA or length < 2:  # scan data before any frame header
            return None
        i += 2 + length
    return None


def _compressed_size(data: memoryview, kind: str) -> tuple[int, int] | None:
    if kind == "png":
        if len(data) < 24 or bytes(data[12:16]) != b"IHDR":
            return None
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return _jpeg_size(data)


def compressed_msg_to_rgb(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS,
                          max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO,
                          warnings: Optional[list[str]] = None) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage``-like message (JPEG or PNG) to (H, W, 3) uint8 RGB.

    ``format`` may be a bare ``"jpeg"``/``"png"`` or an image_transport string such as
    ``"rgb8; jpeg compressed bgr8"``; an empty format is detected from the data. The size
    is read from the header and checked against ``max_pixels`` and ``max_aspect_ratio``
    before decoding. 16-bit PNGs are scaled to 8 bit, grayscale is expanded to RGB and alpha
    is dropped. What the decoder reports about damaged data ("Corrupt JPEG data: ...") is
    appended to ``warnings``, or is part of the error when nothing decodes; it never reaches
    stderr.
    """
    # The format only decides what we accept; the data's signature decides how to decode,
    # so a stream labelled "jpeg" that carries PNG still works.
    _check_compressed_format(getattr(msg, "format", None))
    buf = _as_uint8(getattr(msg, "data", None))
    head = bytes(buf[:8])
    kind = "jpeg" if head.startswith(_JPEG_SIGNATURE) else "png" if head == _PNG_SIGNATURE else None
    if kind is None:
        raise ImageConversionError(
            f"compressed image data ({buf.size} bytes) is not a JPEG or PNG "
            f"(starts with {head.hex() or 'nothing'}; format {getattr(msg, 'format', '')!r})"
        )
    if not buf.flags.c_contiguous:
        buf = np.ascontiguousarray(buf)
    size = _compressed_size(memoryview(buf), kind)
    if size is None:
        raise ImageConversionError(f"corrupt {kind.upper()} data: no readable image header")
    width, height = size
    if width == 0 or height == 0:
        raise ImageConversionError(
            f"{kind.upper()} header declares zero size: width={width}, height={height}"
        )
    _check_size(width, height, max_pixels, max_aspect_ratio)
    error = None
    with decoder_messages() as said:  # filled in when the block ends
        try:
            bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
        except cv2.error as err:
            bgr, error = None, str(err).strip()
    if error:
        said.append(error)
    if bgr is None or bgr.ndim != 3 or bgr.shape[2] != 3:
        why = "; ".join(said) or f"OpenCV could not decode {buf.size} bytes"
        raise ImageConversionError(f"corrupt {kind.upper()} data: {why}")
    if said and warnings is not None:
        warnings.append(f"damaged {kind.upper()} data, decoded anyway: {'; '.join(said)}")
    return cv2.cvtColor(to_8bit(bgr), cv2.COLOR_BGR2RGB)


# What the C decoders write to stderr. libjpeg reports damaged data ("Corrupt JPEG data:
# bad Huffman code", "Premature end of JPEG file") only through fprintf(stderr), OpenCV
# (which exposes no log callback to Python) and libpng likewise; so fd 2 is pointed at a
# file for the length of one decode, and the lines are sorted afterwards: ROS log lines of
# other threads go back to stderr in order, the decoder's lines become messages.
_STDERR_LOCK = threading.Lock()
_ROS_LOG_LINE = re.compile(r"^\[(DEBUG|INFO|WARN|ERROR|FATAL)\] \[")
_DECODER_LINE = re.compile(r"jpeg|png|grfmt|imgcodecs|huffman|marker", re.IGNORECASE)
_OPENCV_PREFIX = re.compile(r"^\[\s*(WARN|ERROR|INFO)[^\]]*\]\s*(global\s+\S+\s+\S+\s+)?")


@contextmanager
def decoder_messages() -> Iterator[list[str]]:
    """Collect the lines native code writes to stderr (fd 2) meanwhile, as a list of
    messages filled in on exit; other output of the process is passed through."""
    said: list[str] = []
    with _STDERR_LOCK, tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield said
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            others = []
            for line in sink.read().decode("utf-8", "replace").splitlines(keepends=True):
                if _DECODER_LINE.search(line) and not _ROS_LOG_LINE.match(line):
                    said.append(_OPENCV_PREFIX.sub("", line.strip()))
                else:
                    others.append(line)
            if others:
                os.write(2, "".join(others).encode())


# ----------------------------------------------------------------------------- encoding

# BT.601 limited-range RGB -> YCbCr, the inverse of what OpenCV's 4:2:2 decoders apply.
_RGB_TO_YUV = np.array(
    [[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]], dtype=np.float32
) / 255.0
_YUV_OFFSET = np.array([16.0, 128.0, 128.0], dtype=np.float32)


def _encode_yuv422(rgb: np.ndarray, uyvy: bool) -> np.ndarray:
    h, w = rgb.shape[:2]
    if w % 2:
        raise ImageConversionError(f"yuv422 needs an even width, got {w}")
    yuv = rgb.astype(np.float32) @ _RGB_TO_YUV.T + _YUV_OFFSET
    chroma = 0.5 * (yuv[:, 0::2, 1:] + yuv[:, 1::2, 1:])  # U, V shared by each pixel pair
    out = np.empty((h, w // 2, 4), dtype=np.float32)
    y0, y1 = yuv[:, 0::2, 0], yuv[:, 1::2, 0]
    u, v = chroma[..., 0], chroma[..., 1]
    planes = (u, y0, v, y1) if uyvy else (y0, u, y1, v)
    for k, plane in enumerate(planes):
        out[..., k] = plane
    return np.clip(np.rint(out), 0, 255).astype(np.uint8).reshape(h, w * 2)


def _encode_bayer(rgb: np.ndarray, pattern: str) -> np.ndarray:
    mosaic = np.empty(rgb.shape[:2], dtype=np.uint8)
    for k, colour in enumerate(pattern):  # pattern: the 2x2 block, row by row
        dy, dx = divmod(k, 2)
        mosaic[dy::2, dx::2] = rgb[dy::2, dx::2, "rgb".index(colour)]
    return mosaic


def encode_raw(rgb: np.ndarray, encoding: str = "rgb8", is_bigendian: bool = False) -> np.ndarray:
    """Encode an RGB array as the rows of a raw image in ``encoding``: (H, step) uint8, no padding.

    The inverse of :func:`image_msg_to_rgb` for every supported encoding (exact for
    rgb/bgr/rgba/bgra; grayscale, 4:2:2 chroma and Bayer mosaics lose information by design).
    mono16 stores gray * 257 so the full 16-bit range is used.
    """
    rgb = validate_rgb(rgb)
    name = _canonical_encoding(encoding)
    h, w = rgb.shape[:2]
    if name == "rgb8":
        pixels = np.ascontiguousarray(rgb)
    elif name in ("bgr8", "rgba8", "bgra8", "mono8"):
        code = {"bgr8": cv2.COLOR_RGB2BGR, "rgba8": cv2.COLOR_RGB2RGBA,
                "bgra8": cv2.COLOR_RGB2BGRA, "mono8": cv2.COLOR_RGB2GRAY}[name]
        pixels = cv2.cvtColor(rgb, code)
    elif name == "mono16":
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.uint16) * np.uint16(257)
        pixels = gray.astype(">u2" if is_bigendian else "<u2").view(np.uint8)
    elif name.startswith("yuv422"):
        pixels = _encode_yuv422(rgb, uyvy=name == "yuv422")
    else:
        pixels = _encode_bayer(rgb, name[len("bayer_"):-1])
    return pixels.reshape(h, -1)


def rgb_to_image_msg_fields(rgb: np.ndarray, encoding: str = "rgb8", is_bigendian: bool = False) -> dict:
    """Fields of a ``sensor_msgs/Image`` holding ``rgb`` in ``encoding``; ``data`` is bytes."""
    rows = encode_raw(rgb, encoding, is_bigendian)
    return {
        "height": rows.shape[0],
        "width": rgb.shape[1],
        "encoding": encoding,
        "is_bigendian": int(bool(is_bigendian)),
        "step": rows.shape[1],
        "data": rows.tobytes(),
    }


def fill_image_msg(msg: Any, rgb: np.ndarray, encoding: str = "rgb8", is_bigendian: bool = False) -> Any:
    """Write ``rgb`` into a ``sensor_msgs/Image``-like ``msg`` (header untouched) and return it.

    ``data`` is set as ``array.array('B')``, the type rclpy stores: bytes would make the
    setter check every byte in Python when ROS_PYTHON_CHECK_FIELDS=1 (~100 ms at 640x480).
    """
    rows = encode_raw(rgb, encoding, is_bigendian)
    data = array.array("B")
    data.frombytes(rows.data)
    msg.height, msg.width, msg.step = rows.shape[0], rgb.shape[1], rows.shape[1]
    msg.encoding = encoding
    msg.is_bigendian = int(bool(is_bigendian))
    msg.data = data
    return msg


def rgb_to_compressed(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> bytes:
    """Encode an RGB array as JPEG (``quality`` 0..100) or PNG bytes, for CompressedImage.data."""
    rgb = validate_rgb(rgb)
    if fmt not in ("jpeg", "png"):
        raise ImageConversionError(f"compressed format must be 'jpeg' or 'png', got {fmt!r}")
    if not 0 <= quality <= 100:
        raise ImageConversionError(f"JPEG quality must be in 0..100, got {quality}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == "jpeg" else []
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", bgr, params)
    if not ok:
        raise ImageConversionError(f"OpenCV failed to encode a {rgb.shape} image as {fmt}")
    return encoded.tobytes()


def fill_compressed_msg(msg: Any, rgb: np.ndarray, quality: int = 90, encoding: str = "rgb8") -> Any:
    """Fill a ``sensor_msgs/CompressedImage`` (or any object with ``format`` and ``data``) with
    ``rgb`` as JPEG of ``quality``; ``format`` as image_transport's compressed plugin writes it
    (``"<encoding>; jpeg compressed bgr8"``), ``encoding`` being what the raw image was."""
    data = array.array("B")
    data.frombytes(rgb_to_compressed(rgb, "jpeg", quality))
    msg.format = f"{encoding}; jpeg compressed bgr8"
    msg.data = data
    return msg
