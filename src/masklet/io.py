"""Image input/output: load pictures as (H, W, 3) uint8 RGB arrays, save masks and overlays.

Accepted image inputs (:func:`load_image`):

* a path (``str`` / ``os.PathLike``) or the ``bytes`` of any PIL-readable file. The EXIF
  orientation tag is applied (``PIL.ImageOps.exif_transpose``), so pixels come out the way
  viewers show them;
* a ``PIL.Image.Image`` (used as given, no EXIF rotation), in any mode: alpha is dropped
  (``RGBA``, ``LA``, ``PA``), palettes are expanded, 16-bit modes (``I;16*``) are scaled by
  1/257, mode ``I`` is taken as 8-bit when all values are <= 255 and as 16-bit when <= 65535,
  and mode ``F`` follows the float rule below;
* a ``numpy.ndarray`` (H, W) or (H, W, C) with C in {1, 3, 4};
* a ``torch.Tensor`` (C, H, W) or (H, W, C) with C in {1, 3, 4} (channels-first is assumed
  when the first dimension is 1, 3 or 4), or (H, W).

Array dtypes: ``uint8`` (as is), ``bool`` (0/255), ``uint16`` (scaled by 1/257) or float with
every value in [0, 1] (scaled by 255 and rounded). One channel is repeated, a 4th one dropped.
"""

from __future__ import annotations

import io
import numbers
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from masklet.checks import is_int, is_real
from masklet.errors import ImageDecodeError, InvalidInputError

__all__ = ["ImageSource", "load_image", "save_image", "save_mask_png", "overlay_masks", "palette", "write_video"]

ImageSource = Union[  # noqa: UP007 (a runtime alias, read by isinstance-free docs)
    str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray, torch.Tensor
]

_MAX_PALETTE = (1 << 24) - 1


def _describe(value: object) -> str:
    """Short description of a value for error messages."""
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return f"{type(value).__name__} of shape {tuple(value.shape)} and dtype {value.dtype}"
    if isinstance(value, Image.Image):
        return f"PIL image of mode {value.mode!r} and size {value.size}"
    return type(value).__name__


# ---------------------------------------------------------------------------------------------
# decoding
# ---------------------------------------------------------------------------------------------


def _decode_file(data: str | os.PathLike | bytes, label: str) -> np.ndarray:
    """Open, EXIF-transpose and convert one encoded image (path or bytes)."""
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        try:
            exists, is_dir = path.exists(), path.is_dir()
        except OSError as e:  # e.g. a name too long for the file system
            raise ImageDecodeError(f"image: cannot access '{path}': {e}") from e
        if not exists:
            raise ImageDecodeError(f"image: no such file: '{path}'")
        if is_dir:
            raise ImageDecodeError(f"image: '{path}' is a directory, expected an image file")
        opener: object = path
    else:
        opener = io.BytesIO(data)
    try:
        with Image.open(opener) as img:  # type: ignore[arg-type]  # a path or a BytesIO, both accepted
            img.load()
            img = ImageOps.exif_transpose(img)
            return _from_pil(img, label)
    except InvalidInputError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageDecodeError(f"image: cannot decode {label}: {e}") from e


def _from_pil(img: Image.Image, label: str) -> np.ndarray:
    """Convert a PIL image of any mode to (H, W, 3) uint8 RGB."""
    mode = img.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img)
        if mode == "I":
            lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
            if lo < 0 or hi > 65535:
                raise InvalidInputError(
                    f"image: {label} has mode 'I' with values in [{lo}, {hi}]; "
                    "accepted are 0..255 (8-bit) or 0..65535 (16-bit)"
                )
            arr = arr.astype(np.uint8) if hi <= 255 else arr.astype(np.uint16)
        return _from_array(arr.astype(arr.dtype.newbyteorder("=")), label)
    if mode == "RGB":
        return _from_array(np.asarray(img), label)
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # avoids PIL's palette-transparency warning; alpha dropped below
    if mode == "La":  # premultiplied grey + alpha, which PIL cannot convert: keep the grey
        return _from_array(np.asarray(img)[:, :, 0], label)
    try:
        return _from_array(np.asarray(img.convert("RGB")), label)
    except (ValueError, OSError) as e:
        raise InvalidInputError(f"image: cannot convert {label} to RGB: {e}") from e


def _from_array(arr: np.ndarray, label: str) -> np.ndarray:
    """Validate an (H, W) / (H, W, C) array and convert it to a fresh (H, W, 3) uint8 array."""
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise InvalidInputError(
            f"image: {label} has shape {tuple(arr.shape)}; accepted are (H, W) or (H, W, C) with C in {{1, 3, 4}}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidInputError(f"image: {label} is empty (shape {tuple(arr.shape)})")
    arr = arr[:, :, :3]
    if arr.dtype == np.uint8:
        out = arr.copy()
    elif arr.dtype == np.bool_:
        out = arr.astype(np.uint8) * 255
    elif arr.dtype == np.uint16:
        out = ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
        if np.isnan(arr).any():
            raise InvalidInputError(f"image: {label} is a float image containing NaN")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            raise InvalidInputError(
                f"image: {label} is a float image with values in [{lo:g}, {hi:g}]; "
                "float images must lie in [0, 1] (use uint8 for 0..255 data)"
            )
        out = np.floor(arr * 255.0 + 0.5).astype(np.uint8)
    else:
        raise InvalidInputError(
            f"image: {label} has unsupported dtype {arr.dtype}; accepted are uint8, bool, uint16 and float in [0, 1]"
        )
    if out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    return np.ascontiguousarray(out)


def _tensor_to_hwc(t: torch.Tensor) -> np.ndarray:
    """A CPU numpy view of an image tensor, moved to (H, W[, C]) layout."""
    t = t.detach().cpu()
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()
    if t.ndim == 3 and t.shape[0] in (1, 3, 4):
        t = t.permute(1, 2, 0)
    try:
        return t.numpy()
    except TypeError as e:
        raise InvalidInputError(f"image: unsupported tensor dtype {t.dtype}") from e


def load_image(source: ImageSource) -> np.ndarray:
    """Load an image from a path, bytes, PIL image, array or tensor as (H, W, 3) uint8 RGB.

    Files and bytes are EXIF-transposed; see the module docstring for the accepted formats.
    """
    if isinstance(source, (str, os.PathLike)):
        return _decode_file(source, f"file '{source}'")
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise ImageDecodeError("image: cannot decode empty bytes")
        return _decode_file(data, f"bytes (length {len(data)})")
    if isinstance(source, Image.Image):
        return _from_pil(source, _describe(source))
    if isinstance(source, np.ndarray):
        return _from_array(source, _describe(source))
    if isinstance(source, torch.Tensor):
        return _from_array(_tensor_to_hwc(source), _describe(source))
    raise InvalidInputError(
        f"image: unsupported type {type(source).__name__}; accepted are a path, bytes, "
        "PIL image, numpy array or torch tensor"
    )


# ---------------------------------------------------------------------------------------------
# writing and drawing
# ---------------------------------------------------------------------------------------------


def _bool_masks(masks: object, name: str, shape_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Return (N, H, W) bool numpy masks from a (H, W) or (N, H, W) bool/int array or tensor."""
    if isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu().numpy()
    if not isinstance(masks, np.ndarray):
        raise InvalidInputError(f"{name}: expected a numpy array or torch tensor, got {_describe(masks)}")
    if masks.dtype != np.bool_ and not np.issubdtype(masks.dtype, np.integer):
        raise InvalidInputError(
            f"{name}: expected bool or integer masks, got {_describe(masks)}; threshold floats first"
        )
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3:
        raise InvalidInputError(f"{name}: expected shape (H, W) or (N, H, W), got {_describe(masks)}")
    if shape_hw is not None and masks.shape[1:] != shape_hw:
        raise InvalidInputError(f"{name}: mask size {tuple(masks.shape[1:])} does not match the image size {shape_hw}")
    return masks.astype(bool)


def save_mask_png(mask: np.ndarray | torch.Tensor, path: str | os.PathLike) -> None:
    """Write one (H, W) bool mask as an 8-bit grayscale PNG (0 background, 255 foreground)."""
    if isinstance(mask, (np.ndarray, torch.Tensor)) and mask.ndim != 2:
        raise InvalidInputError(f"mask: expected shape (H, W), got {_describe(mask)}")
    arr = _bool_masks(mask, "mask")[0]
    Image.fromarray(arr.astype(np.uint8) * 255).save(Path(path), format="PNG")


def save_image(image: ImageSource, path: str | os.PathLike) -> None:
    """Save an image (anything :func:`load_image` accepts) as RGB; format from the extension."""
    arr = load_image(image)
    try:
        Image.fromarray(arr).save(Path(path))
    except (ValueError, KeyError) as e:
        raise InvalidInputError(
            f"path: cannot choose an image format for '{path}' ({e}); use an extension such as .png or .jpg"
        ) from e


def palette(n: int) -> np.ndarray:
    """``n`` distinct RGB colours (n, 3) uint8: entries 1..n of the PASCAL VOC / DAVIS colormap."""
    if not is_int(n) or not 0 <= n <= _MAX_PALETTE:
        raise InvalidInputError(f"n: expected an int in [0, {_MAX_PALETTE}], got {n!r}")
    ids = np.arange(1, n + 1, dtype=np.int64)
    rgb = np.zeros((n, 3), dtype=np.int64)
    for shift in range(8):  # bit j of each 3-bit group goes to bit (7 - shift) of channel j
        for channel in range(3):
            bit = (ids >> (3 * shift + channel)) & 1
            rgb[:, channel] |= bit << (7 - shift)
    return rgb.astype(np.uint8)


def _edges(mask: np.ndarray) -> np.ndarray:
    """Foreground pixels with a 4-connected neighbour outside the mask (or on the image border)."""
    padded = np.pad(mask, 1, constant_values=False)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


def overlay_masks(
    image: ImageSource,
    masks: np.ndarray | torch.Tensor,
    alpha: float = 0.5,
    colors: Sequence[Sequence[int]] | np.ndarray | None = None,
) -> np.ndarray:
    """Blend each mask's colour into the image (``alpha``) and outline it; returns (H, W, 3) uint8.

    Masks are drawn in order (later ones on top); colours default to :func:`palette`.
    """
    base = load_image(image)
    stack = _bool_masks(masks, "masks", base.shape[:2])
    if not is_real(alpha) or not 0.0 <= alpha <= 1.0:
        raise InvalidInputError(f"alpha: expected a float in [0, 1], got {alpha!r}")
    n = stack.shape[0]
    if colors is None:
        rgb = palette(n)
    else:
        rgb = np.asarray(colors)
        if (
            rgb.ndim != 2
            or rgb.shape != (n, 3)
            or not np.issubdtype(rgb.dtype, np.number)
            or (rgb < 0).any()
            or (rgb > 255).any()
        ):
            raise InvalidInputError(
                f"colors: expected {n} RGB triples with values in 0..255 (one per mask), got shape {rgb.shape}"
            )
        rgb = rgb.astype(np.uint8)
    out = base.astype(np.float32)
    for mask, color in zip(stack, rgb.astype(np.float32)):
        out[mask] = (1.0 - alpha) * out[mask] + alpha * color
        out[_edges(mask)] = color
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


def write_video(frames: Sequence[np.ndarray] | np.ndarray, path: str | os.PathLike, fps: float = 8.0) -> None:
    """Encode (T, H, W, 3) uint8 RGB frames as an H.264 mp4 (or any container PyAV infers from
    the extension). Needs the optional PyAV package (``pip install masklet[video]``)."""
    try:
        import av
    except ImportError:
        raise InvalidInputError("writing videos needs PyAV: pip install 'masklet[video]'") from None
    frames = [load_image(f) for f in frames]
    if not frames:
        raise InvalidInputError("frames: expected at least one frame, got none")
    if not isinstance(fps, numbers.Real) or fps <= 0:
        raise InvalidInputError(f"fps: expected a positive number, got {fps!r}")
    height, width = frames[0].shape[:2]
    with av.open(os.fspath(path), mode="w") as container:
        stream = container.add_stream("libx264" if Path(path).suffix == ".mp4" else "mpeg4", rate=round(fps))
        stream.width, stream.height = width - width % 2, height - height % 2  # even sizes for yuv420p
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            if frame.shape[:2] != (height, width):
                raise InvalidInputError(f"frames: every frame must be {height}x{width}, got {frame.shape[:2]}")
            picture = av.VideoFrame.from_ndarray(frame[: stream.height, : stream.width], format="rgb24")
            container.mux(stream.encode(picture))
        container.mux(stream.encode())
