"""Mask utilities: COCO run-length encoding, boxes, NMS and connected-component clean-up.

Everything here is tensor in, tensor out (COCO RLEs are plain dicts). Work that is inherently
sequential or needs connected-component labelling runs on the CPU (numpy / scipy) and the result
is moved back to the input's device.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from torch import Tensor

from masklet.checks import is_real
from masklet.errors import InvalidInputError

__all__ = [
    "encode_rle",
    "encode_uncompressed_rle",
    "decode_rle",
    "rle_area",
    "rle_to_bbox",
    "masks_to_boxes",
    "box_xyxy_to_xywh",
    "box_iou",
    "batched_nms",
    "fill_holes_and_remove_sprinkles",
    "fill_small_holes",
    "remove_small_regions",
]

RLE = dict[str, Any]
_ArrayT = TypeVar("_ArrayT", np.ndarray, Tensor)

# Offset and payload of the ASCII alphabet used by COCO's compressed RLE strings (chars 48..111).
_CHAR_BASE = 48
_MAX_CHARS_PER_COUNT = 12


# ---------------------------------------------------------------------------------------------
# input checks
# ---------------------------------------------------------------------------------------------


def _describe(value: object) -> str:
    """Short description of a value for error messages."""
    if isinstance(value, (Tensor, np.ndarray)):
        return f"{type(value).__name__} of shape {tuple(value.shape)} and dtype {value.dtype}"
    return f"{type(value).__name__}"


def _binary_masks(masks: object, name: str, ndim: int | None) -> Tensor:
    """Return ``masks`` as a bool tensor after checking its type, rank and dtype."""
    if isinstance(masks, np.ndarray):
        if masks.dtype != np.bool_ and not np.issubdtype(masks.dtype, np.integer):
            raise InvalidInputError(
                f"{name}: expected a bool or integer array, got {_describe(masks)}; "
                "threshold float masks first (e.g. logits > 0)"
            )
        masks = torch.from_numpy(np.ascontiguousarray(masks))
    if not isinstance(masks, Tensor):
        raise InvalidInputError(f"{name}: expected a torch.Tensor or numpy.ndarray, got {_describe(masks)}")
    if masks.dtype.is_floating_point or masks.dtype.is_complex:
        raise InvalidInputError(
            f"{name}: expected a bool or integer tensor, got {_describe(masks)}; "
            "threshold float masks first (e.g. logits > 0)"
        )
    if ndim is not None and masks.ndim != ndim:
        expected = {2: "(H, W)", 3: "(N, H, W)"}.get(ndim, f"{ndim}-D")
        raise InvalidInputError(f"{name}: expected shape {expected}, got {_describe(masks)}")
    if ndim is None and masks.ndim < 2:
        raise InvalidInputError(f"{name}: expected shape (..., H, W), got {_describe(masks)}")
    return masks if masks.dtype == torch.bool else masks != 0


def _boxes(boxes: object, name: str) -> Tensor:
    """Check that ``boxes`` is a floating/integer tensor of shape (N, 4)."""
    if not isinstance(boxes, Tensor) or boxes.ndim != 2 or boxes.shape[1] != 4:
        raise InvalidInputError(f"{name}: expected a tensor of shape (N, 4), got {_describe(boxes)}")
    if boxes.dtype == torch.bool or boxes.dtype.is_complex:
        raise InvalidInputError(f"{name}: expected real-valued boxes, got {_describe(boxes)}")
    return boxes


# ---------------------------------------------------------------------------------------------
# COCO run-length encoding
# ---------------------------------------------------------------------------------------------


def _run_lengths(masks: Tensor) -> list[np.ndarray]:
    """Column-major run lengths of each (H, W) mask, starting with a (possibly empty) 0-run."""
    n, h, w = masks.shape
    area = h * w
    if area == 0:
        return [np.zeros(1, dtype=np.int64) for _ in range(n)]
    flat = masks.transpose(1, 2).reshape(n, area)
    rows, cols = torch.nonzero(flat[:, 1:] != flat[:, :-1], as_tuple=True)
    per_mask = torch.bincount(rows, minlength=n).cpu().tolist()
    change_ends = np.split((cols + 1).cpu().numpy(), np.cumsum(per_mask)[:-1])
    starts_on = flat[:, 0].cpu().numpy()
    out = []
    for ends, first_on in zip(change_ends, starts_on):
        bounds = np.concatenate(([0], ends, [area]))
        counts = np.diff(bounds)
        out.append(np.concatenate(([0], counts)) if first_on else counts)
    return out


def _counts_to_string(counts: np.ndarray) -> str:
    """COCO's compressed RLE string (``rleToString``): deltas, then 5-bit groups as ASCII."""
    x = counts.astype(np.int64)
    if x.size > 3:
        x[3:] = counts[3:] - counts[1:-2]
    digits, live = [], []
    active = np.ones(x.shape, dtype=bool)
    while active.any():
        c = x & 0x1F
        x = x >> 5  # arithmetic shift, like C's >> on a signed long
        more = np.where((c & 0x10) != 0, x != -1, x != 0)
        digits.append(c | (more.astype(np.int64) << 5))
        live.append(active)
        active = active & more
    if not digits:
        return ""
    chars = np.stack(digits, axis=1)[np.stack(live, axis=1)] + _CHAR_BASE
    return chars.astype(np.uint8).tobytes().decode("ascii")


def _string_to_counts(s: bytes, name: str) -> np.ndarray:
    """Inverse of :func:`_counts_to_string` (``rleFrString``)."""
    c = np.frombuffer(s, dtype=np.uint8).astype(np.int64) - _CHAR_BASE
    if c.size == 0:
        return np.zeros(0, dtype=np.int64)
    if (c < 0).any() or (c > 63).any():
        raise InvalidInputError(f"{name}: compressed RLE counts may only contain ASCII chars '0'..'o', got {s[:40]!r}")
    ends = (c & 0x20) == 0
    if not ends[-1]:
        raise InvalidInputError(f"{name}: compressed RLE counts string is truncated: {s[-40:]!r}")
    group = np.cumsum(ends) - ends
    group_start = np.flatnonzero(np.concatenate(([True], ends[:-1])))
    pos = np.arange(c.size) - group_start[group]
    n_chars = np.bincount(group)
    if n_chars.max() > _MAX_CHARS_PER_COUNT:
        raise InvalidInputError(f"{name}: compressed RLE counts string holds an out-of-range value")
    x = np.zeros(group_start.size, dtype=np.int64)
    np.add.at(x, group, (c & 0x1F) << (5 * pos))
    negative = (c[ends] & 0x10) != 0
    x[negative] -= np.left_shift(1, 5 * n_chars[negative])
    counts = x.copy()
    counts[1::2] = np.cumsum(x[1::2])  # undo the delta coding (applied from index 3 on)
    counts[2::2] = np.cumsum(x[2::2])
    return counts


def _rle_size(rle: object, name: str) -> tuple[int, int]:
    """Validate an RLE dict's ``size`` and return it as (H, W)."""
    if not isinstance(rle, Mapping) or "size" not in rle or "counts" not in rle:
        raise InvalidInputError(f"{name}: expected a COCO RLE dict with 'size' and 'counts', got {_describe(rle)}")
    size = rle["size"]
    try:
        h, w = (int(v) for v in size)
        valid = all(int(v) == v and not isinstance(v, bool) for v in size) and min(h, w) >= 0
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise InvalidInputError(f"{name}: 'size' must be [H, W] with non-negative ints, got {size!r}")
    return h, w


def _rle_counts(rle: Mapping[str, Any], name: str) -> np.ndarray:
    """Run lengths of a compressed (str/bytes) or uncompressed (list of ints) RLE."""
    counts = rle["counts"]
    if isinstance(counts, str):
        try:
            counts = counts.encode("ascii")
        except UnicodeEncodeError as e:
            raise InvalidInputError(f"{name}: compressed RLE counts may only contain ASCII chars '0'..'o'") from e
    if isinstance(counts, (bytes, bytearray)):
        out = _string_to_counts(bytes(counts), name)
    else:
        try:
            out = np.asarray(counts.cpu() if isinstance(counts, Tensor) else counts)
        except (TypeError, ValueError):  # e.g. ragged nested lists
            out = np.zeros((0, 0))
        if out.ndim != 1 or not (np.issubdtype(out.dtype, np.integer) or out.size == 0):
            raise InvalidInputError(
                f"{name}: 'counts' must be a str/bytes (compressed) or a flat list of ints, "
                f"got {type(rle['counts']).__name__}"
            )
        out = out.astype(np.int64)
    if (out < 0).any():
        raise InvalidInputError(f"{name}: RLE run lengths must be non-negative")
    return out


def encode_rle(masks: Tensor | np.ndarray) -> list[RLE]:
    """Encode (N, H, W) bool masks as compressed COCO RLEs ``{"size": [H, W], "counts": str}``.

    The output is byte-identical to ``pycocotools.mask.encode`` (counts decoded to str).
    """
    masks = _binary_masks(masks, "masks", 3)
    _, h, w = masks.shape
    return [{"size": [h, w], "counts": _counts_to_string(c)} for c in _run_lengths(masks)]


def encode_uncompressed_rle(masks: Tensor | np.ndarray) -> list[RLE]:
    """Encode (N, H, W) bool masks as uncompressed COCO RLEs (``counts`` is a list of ints)."""
    masks = _binary_masks(masks, "masks", 3)
    _, h, w = masks.shape
    return [{"size": [h, w], "counts": c.tolist()} for c in _run_lengths(masks)]


def decode_rle(rles: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> Tensor:
    """Decode COCO RLEs (compressed str/bytes or uncompressed list counts) to (N, H, W) bool.

    A single dict gives N = 1; an empty list gives a (0, 0, 0) tensor. All RLEs must share a size.
    """
    if isinstance(rles, Mapping):
        rles = [rles]
    if not isinstance(rles, Sequence) or isinstance(rles, (str, bytes)):
        raise InvalidInputError(f"rles: expected a list of COCO RLE dicts, got {_describe(rles)}")
    if len(rles) == 0:
        return torch.zeros(0, 0, 0, dtype=torch.bool)
    h, w = _rle_size(rles[0], "rles[0]")
    all_counts = []
    for i, rle in enumerate(rles):
        size = _rle_size(rle, f"rles[{i}]")
        if size != (h, w):
            raise InvalidInputError(f"rles[{i}]: size {list(size)} differs from rles[0] size {[h, w]}")
        counts = _rle_counts(rle, f"rles[{i}]")
        if int(counts.sum()) != h * w:
            raise InvalidInputError(f"rles[{i}]: run lengths sum to {int(counts.sum())}, expected H*W = {h * w}")
        all_counts.append(counts)
    counts = np.concatenate(all_counts)
    values = np.concatenate([np.arange(c.size) % 2 == 1 for c in all_counts])
    flat = np.repeat(values, counts)
    return torch.from_numpy(flat.reshape(len(rles), w, h)).transpose(1, 2).contiguous()


def rle_area(rle: Mapping[str, Any]) -> int:
    """Number of foreground pixels of a COCO RLE (compressed or uncompressed)."""
    _rle_size(rle, "rle")
    return int(_rle_counts(rle, "rle")[1::2].sum())


def rle_to_bbox(rle: Mapping[str, Any]) -> list[float]:
    """XYWH box of a COCO RLE, as ``pycocotools.mask.toBbox``; [0, 0, 0, 0] when empty."""
    h, _ = _rle_size(rle, "rle")
    counts = _rle_counts(rle, "rle")
    ends = np.cumsum(counts)
    starts = ends - counts
    fg = (np.arange(counts.size) % 2 == 1) & (counts > 0)
    if not fg.any():
        return [0.0, 0.0, 0.0, 0.0]
    first, last = starts[fg], ends[fg] - 1
    x_first, x_last = first // h, last // h
    x0, x1 = int(x_first.min()), int(x_last.max())
    if (x_first < x_last).any():
        y0, y1 = 0, h - 1
    else:
        y0, y1 = int((first % h).min()), int((last % h).max())
    return [float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1)]


# ---------------------------------------------------------------------------------------------
# boxes and NMS
# ---------------------------------------------------------------------------------------------


def masks_to_boxes(masks: Tensor) -> Tensor:
    """XYXY boxes (inclusive pixel bounds, int64) of (..., H, W) masks; [0, 0, 0, 0] if empty."""
    masks = _binary_masks(masks, "masks", None)
    h, w = masks.shape[-2:]
    out = torch.zeros(*masks.shape[:-2], 4, dtype=torch.int64, device=masks.device)
    if masks.numel() == 0:
        return out
    rows = masks.any(dim=-1).to(torch.uint8)  # (..., H)
    cols = masks.any(dim=-2).to(torch.uint8)  # (..., W)
    top = rows.argmax(dim=-1)
    bottom = h - 1 - rows.flip(-1).argmax(dim=-1)
    left = cols.argmax(dim=-1)
    right = w - 1 - cols.flip(-1).argmax(dim=-1)
    boxes = torch.stack([left, top, right, bottom], dim=-1)
    return torch.where(rows.any(dim=-1, keepdim=True).bool(), boxes, out)


def box_xyxy_to_xywh(boxes: Tensor) -> Tensor:
    """Convert (..., 4) XYXY boxes to XYWH (width = x1 - x0, no +1, as the official AMG)."""
    if not isinstance(boxes, Tensor) or boxes.ndim < 1 or boxes.shape[-1] != 4:
        raise InvalidInputError(f"boxes: expected a tensor of shape (..., 4), got {_describe(boxes)}")
    return torch.cat([boxes[..., :2], boxes[..., 2:] - boxes[..., :2]], dim=-1)


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise IoU (N, M) of XYXY boxes, with area = (x1 - x0) * (y1 - y0) like torchvision."""
    a, b = _boxes(boxes1, "boxes1"), _boxes(boxes2, "boxes2")
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """Per-category greedy NMS with torchvision semantics; kept indices by decreasing score.

    A box is dropped when its IoU with a higher-scoring kept box of the same category exceeds
    ``iou_threshold``. Ties in score keep the input order.
    """
    boxes = _boxes(boxes, "boxes")
    n = boxes.shape[0]
    for name, t in (("scores", scores), ("idxs", idxs)):
        if not isinstance(t, Tensor) or t.shape != (n,):
            raise InvalidInputError(f"{name}: expected a tensor of shape ({n},), got {_describe(t)}")
    if not is_real(iou_threshold):
        raise InvalidInputError(f"iou_threshold: expected a float, got {_describe(iou_threshold)}")
    if n == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores.detach(), descending=True, stable=True).indices
    sorted_boxes = boxes.detach()[order].cpu()
    b = (sorted_boxes if sorted_boxes.dtype in (torch.float32, torch.float64) else sorted_boxes.float()).numpy()
    cats = idxs.detach()[order].cpu().numpy()
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    suppressed = np.zeros(n, dtype=bool)
    keep = []
    for i in range(n):  # greedy: one vectorised IoU row per kept box
        if suppressed[i]:
            continue
        keep.append(i)
        rest = b[i + 1 :]
        iw = np.maximum(np.minimum(b[i, 2], rest[:, 2]) - np.maximum(b[i, 0], rest[:, 0]), 0)
        ih = np.maximum(np.minimum(b[i, 3], rest[:, 3]) - np.maximum(b[i, 1], rest[:, 1]), 0)
        inter = iw * ih
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = inter / (area[i] + area[i + 1 :] - inter)
        suppressed[i + 1 :] |= (iou.astype(np.float64) > iou_threshold) & (cats[i + 1 :] == cats[i])
    return order[torch.tensor(keep, dtype=torch.int64, device=order.device)]


# ---------------------------------------------------------------------------------------------
# connected components
# ---------------------------------------------------------------------------------------------


def _component_areas(binary: np.ndarray) -> np.ndarray:
    """Area of the 8-connected component holding each True pixel of (N, H, W); 0 elsewhere."""
    from scipy import ndimage

    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True  # 8-connectivity within a mask, never across masks
    labels, _ = ndimage.label(binary, structure=structure)
    areas = np.bincount(labels.ravel())
    areas[0] = 0
    return areas[labels]


def fill_holes_and_remove_sprinkles(
    mask_logits: Tensor,
    threshold: float = 0.0,
    max_hole_area: float = 0,
    max_sprinkle_area: float = 0,
) -> Tensor:
    """Fill small background components and drop small foreground ones in (..., H, W) logits.

    Mirrors the official SAM2 ``postprocess_masks``: background (<= threshold) 8-connected
    components of area <= max_hole_area (border-touching ones included) become threshold + 10;
    foreground (> threshold) components of area <= max_sprinkle_area become threshold - 10.
    Like the official code, both sets of components are found on the *input* logits, so the
    sprinkle step does not see the holes just filled. A step is skipped when its area is <= 0.
    """
    if not isinstance(mask_logits, Tensor) or mask_logits.ndim < 2:
        raise InvalidInputError(
            f"mask_logits: expected a float tensor of shape (..., H, W), got {_describe(mask_logits)}"
        )
    for name, value in (
        ("threshold", threshold),
        ("max_hole_area", max_hole_area),
        ("max_sprinkle_area", max_sprinkle_area),
    ):
        if not is_real(value):
            raise InvalidInputError(f"{name}: expected a number, got {_describe(value)}")
    logits = mask_logits if mask_logits.dtype.is_floating_point else mask_logits.float()
    if logits.numel() == 0 or (max_hole_area <= 0 and max_sprinkle_area <= 0):
        return logits.clone()
    h, w = logits.shape[-2:]
    scores = logits.detach().reshape(-1, h, w).cpu()
    out = logits
    if max_hole_area > 0:
        areas = torch.from_numpy(_component_areas((scores <= threshold).numpy()))
        is_hole = ((areas > 0) & (areas <= max_hole_area)).reshape(logits.shape)
        out = torch.where(is_hole.to(logits.device), threshold + 10.0, out)
    if max_sprinkle_area > 0:
        areas = torch.from_numpy(_component_areas((scores > threshold).numpy()))
        is_sprinkle = ((areas > 0) & (areas <= max_sprinkle_area)).reshape(logits.shape)
        out = torch.where(is_sprinkle.to(logits.device), threshold - 10.0, out)
    return out


def fill_small_holes(mask_logits: Tensor, max_area: float, fill_value: float = 0.1) -> Tensor:
    """Set background (<= 0) 8-connected components of area <= ``max_area`` in (..., H, W) logits
    to ``fill_value``, as the official video predictor's ``fill_hole_area`` does (components that
    touch the border count too). Runs on CPU with scipy; returns a tensor on the input's device."""
    if not isinstance(mask_logits, Tensor) or mask_logits.ndim < 2 or not mask_logits.dtype.is_floating_point:
        raise InvalidInputError(
            f"mask_logits: expected a float tensor of shape (..., H, W), got {_describe(mask_logits)}"
        )
    if not is_real(max_area) or max_area < 0:
        raise InvalidInputError(f"max_area: expected a number >= 0, got {_describe(max_area)}")
    if max_area == 0 or mask_logits.numel() == 0:
        return mask_logits
    h, w = mask_logits.shape[-2:]
    background = (mask_logits.detach().reshape(-1, h, w) <= 0).cpu().numpy()
    areas = torch.from_numpy(_component_areas(background)).reshape(mask_logits.shape)
    is_hole = ((areas > 0) & (areas <= max_area)).to(mask_logits.device)
    return torch.where(is_hole, torch.full_like(mask_logits, fill_value), mask_logits)


def remove_small_regions(mask: _ArrayT, area_thresh: float, mode: Literal["holes", "islands"]) -> tuple[_ArrayT, bool]:
    """Fill holes or drop islands smaller than ``area_thresh`` in one (H, W) mask (8-connected).

    Same semantics as segment-anything's ``remove_small_regions``: returns (mask, changed); in
    "islands" mode the largest island is kept when every island is small (ties: first in raster
    order). The result has the input's container type (numpy array or tensor) and dtype bool.
    """
    from scipy import ndimage

    if mode not in ("holes", "islands"):
        raise InvalidInputError(f"mode: expected 'holes' or 'islands', got {mode!r}")
    if not is_real(area_thresh):
        raise InvalidInputError(f"area_thresh: expected a number, got {_describe(area_thresh)}")
    is_numpy = isinstance(mask, np.ndarray)
    tensor = _binary_masks(mask, "mask", 2)
    binary = tensor.cpu().numpy()
    working = ~binary if mode == "holes" else binary
    labels, n_labels = ndimage.label(working, structure=np.ones((3, 3), dtype=bool))
    sizes = np.bincount(labels.ravel(), minlength=n_labels + 1)[1:]
    small = sizes < area_thresh
    if not small.any():
        return (binary if is_numpy else tensor), False  # type: ignore[return-value]  # the input's container type
    if mode == "holes":
        lut = np.concatenate(([True], small))  # label 0 is the mask itself
    else:
        lut = np.concatenate(([False], ~small))
        if not lut.any():
            lut[int(np.argmax(sizes)) + 1] = True
    result = lut[labels]
    if is_numpy:
        return result, True
    return torch.from_numpy(result).to(tensor.device), True  # type: ignore[return-value]  # a tensor in, a tensor out
