"""Wire formats: uploaded images (bounded), image ids, base64 float32 arrays, COCO RLE masks."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io

import numpy as np
from PIL import Image

from ..errors import ImageDecodeError, InvalidInputError
from ..io import load_image
from ..masks import _rle_counts, encode_rle

NPY_MAGIC = b"\x93NUMPY"


def image_id(model: str, pixels: np.ndarray) -> str:
    """Content id of decoded (H, W, 3) uint8 pixels under a model: the same on server and client."""
    h = hashlib.sha256(f"{model}|{pixels.shape[0]}x{pixels.shape[1]}|".encode())
    h.update(np.ascontiguousarray(pixels).data)
    return h.hexdigest()[:32]


def _check_pixels(h: int, w: int, max_pixels: int) -> None:
    if h * w > max_pixels:
        raise InvalidInputError(f"image: {w}x{h} = {w * h} pixels exceeds the limit of {max_pixels} pixels")


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """(H, W, 3) uint8 from an encoded image (any PIL format) or a .npy array, checking the pixel
    count from the header before decoding (decompression bombs are refused, not decoded)."""
    if not data:
        raise ImageDecodeError("image: the upload is empty")
    if data.startswith(NPY_MAGIC):
        buf = io.BytesIO(data)
        try:
            version = np.lib.format.read_magic(buf)
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, _, _ = read_header(buf)  # the header only
            if len(shape) < 2:
                raise ValueError(f"shape {shape}")
            _check_pixels(int(shape[0]), int(shape[1]), max_pixels)
            array = np.load(io.BytesIO(data), allow_pickle=False)
        except InvalidInputError:
            raise
        except Exception as err:  # noqa: BLE001 (anything unreadable is the caller's bad input)
            raise ImageDecodeError(f"image: not a readable .npy image array ({err})") from None
        return load_image(array)
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
    except Image.DecompressionBombError as err:
        raise InvalidInputError(f"image: refused as a decompression bomb ({err})") from None
    except Exception as err:  # noqa: BLE001 (anything unreadable is the caller's bad input)
        raise ImageDecodeError(f"image: cannot decode {len(data)} bytes as an image ({type(err).__name__})") from None
    _check_pixels(h, w, max_pixels)
    try:
        return load_image(data)
    except Image.DecompressionBombError as err:
        raise InvalidInputError(f"image: refused as a decompression bomb ({err})") from None


def check_encoded_size(data: bytes, max_pixels: int) -> tuple[int, int]:
    """(H, W) of an encoded image or .npy from its header, within the pixel limit, without decoding."""
    if data.startswith(NPY_MAGIC):
        arr = decode_image(data, max_pixels)
        return int(arr.shape[0]), int(arr.shape[1])
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
    except Exception as err:  # noqa: BLE001 (anything unreadable is the caller's bad input)
        raise ImageDecodeError(f"frames: cannot decode {len(data)} bytes as an image ({type(err).__name__})") from None
    _check_pixels(h, w, max_pixels)
    return h, w


def data_uri_bytes(uri: str) -> bytes:
    """The payload of a ``data:<mime>;base64,<data>`` URI (or of bare base64)."""
    payload = uri.split(",", 1)[1] if uri.startswith("data:") and "," in uri else uri
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ImageDecodeError("image: the data URI is not valid base64") from None


def npy_bytes(array: np.ndarray) -> bytes:
    """An array as .npy bytes (no pickles)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def pack_array(array: np.ndarray) -> dict:
    """A float32 array as ``{"dtype", "shape", "data": base64 of the raw little-endian bytes}`` (exact)."""
    a = np.ascontiguousarray(array, dtype="<f4")
    return {"dtype": "float32", "shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode()}


def unpack_array(packed: dict, name: str) -> np.ndarray:
    """Inverse of :func:`pack_array`, validated."""
    try:
        shape = [int(s) for s in packed["shape"]]
        raw = base64.b64decode(packed["data"], validate=True)
        if packed.get("dtype", "float32") != "float32" or any(s < 0 for s in shape):
            raise ValueError("dtype must be float32 and sizes >= 0")
        return np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)
    except Exception as err:  # noqa: BLE001 (anything unreadable is the caller's bad input)
        raise InvalidInputError(
            f"{name}: expected {{'dtype': 'float32', 'shape': [...], 'data': base64 of the raw float32 bytes}} ({err})"
        ) from None


def masks_to_rles(masks: np.ndarray) -> list[dict]:
    """Bool masks (..., H, W) as a flat list of COCO RLEs (row-major over the leading axes)."""
    h, w = masks.shape[-2:]
    return encode_rle(np.asarray(masks, dtype=bool).reshape(-1, h, w)) if masks.size else []


def rles_to_masks(rles: list[dict], lead: list[int], hw: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`masks_to_rles`: (*lead, H, W) bool."""
    if not rles:
        return np.zeros((*lead, *hw), dtype=bool)
    h, w = hw
    out = np.empty((len(rles), h, w), dtype=bool)
    for i, rle in enumerate(rles):
        if list(rle.get("size", ())) != [h, w]:
            raise InvalidInputError(f"masks[{i}]: size {rle.get('size')} differs from {[h, w]}")
        counts = _rle_counts(rle, f"masks[{i}]")
        if int(counts.sum()) != h * w:
            raise InvalidInputError(f"masks[{i}]: run lengths sum to {int(counts.sum())}, expected {h * w}")
        flat = np.repeat(np.arange(counts.size) % 2 == 1, counts)  # column-major (COCO)
        out[i] = flat.reshape(w, h).T
    return out.reshape(*lead, h, w)
