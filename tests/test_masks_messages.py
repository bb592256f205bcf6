"""Every bad input to masklet.masks gets its whole, specific message (issue 15 mutation gate).

The messages are part of the API (they reach HTTP clients in the error envelope): each names the
argument, what was expected and what was passed (type, shape and dtype), so a mutated message,
a dropped description or a swapped argument name fails here.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from masklet.errors import InvalidInputError
from masklet.masks import (
    batched_nms,
    box_iou,
    box_xyxy_to_xywh,
    decode_rle,
    encode_rle,
    encode_uncompressed_rle,
    fill_holes_and_remove_sprinkles,
    fill_small_holes,
    masks_to_boxes,
    remove_small_regions,
    rle_area,
    rle_to_bbox,
)

FLOAT = np.zeros((2, 3, 4), dtype=np.float32)
T_FLOAT = torch.zeros(2, 3, 4)
BOOL2 = torch.zeros(3, 4, dtype=torch.bool)
BOXES = torch.zeros(2, 4)
THRESHOLD = "; threshold float masks first (e.g. logits > 0)"


CASES = [
    (
        lambda: encode_rle(FLOAT),
        "masks: expected a bool or integer array, got ndarray of shape (2, 3, 4) and dtype float32" + THRESHOLD,
    ),
    (lambda: encode_rle([[True]]), "masks: expected a torch.Tensor or numpy.ndarray, got list"),
    (
        lambda: encode_uncompressed_rle(T_FLOAT),
        "masks: expected a bool or integer tensor, got Tensor of shape (2, 3, 4) and dtype torch.float32" + THRESHOLD,
    ),
    (
        lambda: encode_rle(torch.zeros(2, 3, 4, dtype=torch.complex64)),
        "masks: expected a bool or integer tensor, got Tensor of shape (2, 3, 4) and dtype torch.complex64" + THRESHOLD,
    ),
    (lambda: encode_rle(BOOL2), "masks: expected shape (N, H, W), got Tensor of shape (3, 4) and dtype torch.bool"),
    (
        lambda: remove_small_regions(torch.zeros(1, 3, 4, dtype=torch.bool), 1, "holes"),
        "mask: expected shape (H, W), got Tensor of shape (1, 3, 4) and dtype torch.bool",
    ),
    (
        lambda: masks_to_boxes(torch.zeros(4, dtype=torch.bool)),
        "masks: expected shape (..., H, W), got Tensor of shape (4,) and dtype torch.bool",
    ),
    (
        lambda: box_iou(torch.zeros(2, 3), BOXES),
        "boxes1: expected a tensor of shape (N, 4), got Tensor of shape (2, 3) and dtype torch.float32",
    ),
    (lambda: box_iou(BOXES, [[0, 0, 1, 1]]), "boxes2: expected a tensor of shape (N, 4), got list"),
    (
        lambda: box_iou(BOXES, torch.zeros(4)),
        "boxes2: expected a tensor of shape (N, 4), got Tensor of shape (4,) and dtype torch.float32",
    ),
    (
        lambda: box_iou(BOXES, torch.zeros(2, 4, dtype=torch.bool)),
        "boxes2: expected real-valued boxes, got Tensor of shape (2, 4) and dtype torch.bool",
    ),
    (
        lambda: box_iou(torch.zeros(2, 4, dtype=torch.complex64), BOXES),
        "boxes1: expected real-valued boxes, got Tensor of shape (2, 4) and dtype torch.complex64",
    ),
    (
        lambda: box_xyxy_to_xywh(torch.zeros(2, 3)),
        "boxes: expected a tensor of shape (..., 4), got Tensor of shape (2, 3) and dtype torch.float32",
    ),
    (
        lambda: box_xyxy_to_xywh(torch.tensor(1.0)),
        "boxes: expected a tensor of shape (..., 4), got Tensor of shape () and dtype torch.float32",
    ),
    (lambda: box_xyxy_to_xywh((0, 0, 1, 1)), "boxes: expected a tensor of shape (..., 4), got tuple"),
    (
        lambda: batched_nms(BOXES, torch.zeros(3), torch.zeros(2), 0.5),
        "scores: expected a tensor of shape (2,), got Tensor of shape (3,) and dtype torch.float32",
    ),
    (lambda: batched_nms(BOXES, torch.zeros(2), [0, 0], 0.5), "idxs: expected a tensor of shape (2,), got list"),
    (lambda: batched_nms(BOXES, torch.zeros(2), torch.zeros(2), "0.5"), "iou_threshold: expected a float, got str"),
    (lambda: decode_rle("abc"), "rles: expected a list of COCO RLE dicts, got str"),
    (lambda: decode_rle(7), "rles: expected a list of COCO RLE dicts, got int"),
    (lambda: decode_rle([{"size": [1, 2]}]), "rles[0]: expected a COCO RLE dict with 'size' and 'counts', got dict"),
    (lambda: decode_rle([{"counts": [2]}]), "rles[0]: expected a COCO RLE dict with 'size' and 'counts', got dict"),
    (
        lambda: decode_rle([{"size": [1, 2], "counts": [2]}, {"size": [2, 1], "counts": [2]}]),
        "rles[1]: size [2, 1] differs from rles[0] size [1, 2]",
    ),
    (
        lambda: decode_rle([{"size": [1, 2], "counts": [2]}, {"size": [1, 2], "counts": [1]}]),
        "rles[1]: run lengths sum to 1, expected H*W = 2",
    ),
    (
        lambda: decode_rle([{"size": [1, -2], "counts": [0]}]),
        "rles[0]: 'size' must be [H, W] with non-negative ints, got [1, -2]",
    ),
    (
        lambda: decode_rle([{"size": [1.5, 2], "counts": [3]}]),
        "rles[0]: 'size' must be [H, W] with non-negative ints, got [1.5, 2]",
    ),
    (
        lambda: decode_rle([{"size": [True, 2], "counts": [2]}]),
        "rles[0]: 'size' must be [H, W] with non-negative ints, got [True, 2]",
    ),
    (
        lambda: decode_rle([{"size": "ab", "counts": [2]}]),
        "rles[0]: 'size' must be [H, W] with non-negative ints, got 'ab'",
    ),
    (
        lambda: decode_rle([{"size": [1, 2, 3], "counts": [6]}]),
        "rles[0]: 'size' must be [H, W] with non-negative ints, got [1, 2, 3]",
    ),
    (lambda: rle_area({"size": [1, 2], "counts": [3, -1]}), "rle: RLE run lengths must be non-negative"),
    (
        lambda: rle_area({"size": [1, 2], "counts": [[1], [1]]}),
        "rle: 'counts' must be a str/bytes (compressed) or a flat list of ints, got list",
    ),
    (
        lambda: rle_to_bbox({"size": [1, 2], "counts": 2.0}),
        "rle: 'counts' must be a str/bytes (compressed) or a flat list of ints, got float",
    ),
    (
        lambda: rle_area({"size": [1, 2], "counts": "0é"}),
        "rle: compressed RLE counts may only contain ASCII chars '0'..'o'",
    ),
    (
        lambda: rle_area({"size": [1, 2], "counts": b"0~"}),
        "rle: compressed RLE counts may only contain ASCII chars '0'..'o', got b'0~'",
    ),
    (
        lambda: rle_area({"size": [1, 2], "counts": "0p"}),
        "rle: compressed RLE counts may only contain ASCII chars '0'..'o', got b'0p'",
    ),
    (
        lambda: decode_rle([{"size": [1, 2], "counts": [2]}, {"size": [1], "counts": [2]}]),
        "rles[1]: 'size' must be [H, W] with non-negative ints, got [1]",
    ),
    (lambda: rle_area({"size": [1, 2], "counts": "0P"}), "rle: compressed RLE counts string is truncated: b'0P'"),
    (
        lambda: rle_area({"size": [1, 2], "counts": "P" * 13 + "0"}),
        "rle: compressed RLE counts string holds an out-of-range value",
    ),
    (
        lambda: fill_holes_and_remove_sprinkles(torch.zeros(3)),
        "mask_logits: expected a float tensor of shape (..., H, W), got Tensor of shape (3,) and dtype torch.float32",
    ),
    (
        lambda: fill_holes_and_remove_sprinkles(np.zeros((3, 3))),
        "mask_logits: expected a float tensor of shape (..., H, W), got ndarray of shape (3, 3) and dtype float64",
    ),
    (
        lambda: fill_holes_and_remove_sprinkles(torch.zeros(3, 3), threshold="0"),
        "threshold: expected a number, got str",
    ),
    (
        lambda: fill_holes_and_remove_sprinkles(torch.zeros(3, 3), max_hole_area=None),
        "max_hole_area: expected a number, got NoneType",
    ),
    (
        lambda: fill_holes_and_remove_sprinkles(torch.zeros(3, 3), max_sprinkle_area=[1]),
        "max_sprinkle_area: expected a number, got list",
    ),
    (
        lambda: fill_small_holes(torch.zeros(3, 3, dtype=torch.int64), 1),
        "mask_logits: expected a float tensor of shape (..., H, W), got Tensor of shape (3, 3) and dtype torch.int64",
    ),
    (
        lambda: fill_small_holes(torch.zeros(3), 1),
        "mask_logits: expected a float tensor of shape (..., H, W), got Tensor of shape (3,) and dtype torch.float32",
    ),
    (lambda: fill_small_holes(torch.zeros(3, 3), -1), "max_area: expected a number >= 0, got int"),
    (lambda: fill_small_holes(torch.zeros(3, 3), "1"), "max_area: expected a number >= 0, got str"),
    (lambda: remove_small_regions(BOOL2, 1, "blobs"), "mode: expected 'holes' or 'islands', got 'blobs'"),
    (lambda: remove_small_regions(BOOL2, "1", "islands"), "area_thresh: expected a number, got str"),
]


@pytest.mark.parametrize(("call", "message"), CASES, ids=[m[:48] for _, m in CASES])
def test_bad_input_gets_its_whole_message(call, message):
    with pytest.raises(InvalidInputError, match=f"^{re.escape(message)}$"):
        call()


def test_fill_small_holes_fills_single_pixel_holes_and_keeps_larger_ones():
    # the official fill_holes_in_mask_scores fills background components of area 1..max_area
    logits = torch.full((1, 1, 7, 9), 4.0)
    logits[0, 0, 1, 1] = -2.0  # a 1-pixel hole
    logits[0, 0, 4, 4:6] = -3.0  # a 2-pixel hole
    out = fill_small_holes(logits, max_area=1, fill_value=0.5)
    assert out[0, 0, 1, 1].item() == 0.5
    assert out[0, 0, 4, 4:6].tolist() == [-3.0, -3.0]
    out = fill_small_holes(logits, max_area=2)
    assert out[0, 0, 4, 4:6].tolist() == pytest.approx([0.1, 0.1])
    assert int((out != logits).sum()) == 3


def test_fill_holes_and_remove_sprinkles_on_a_one_pixel_mask():
    # a single background pixel is a hole of area 1; a single foreground pixel a sprinkle of area 1
    assert fill_holes_and_remove_sprinkles(torch.tensor([[-1.0]]), max_hole_area=1).tolist() == [[10.0]]
    assert fill_holes_and_remove_sprinkles(torch.tensor([[2.0]]), max_sprinkle_area=1).tolist() == [[-10.0]]
    assert fill_holes_and_remove_sprinkles(torch.zeros(0, 3, 3), max_hole_area=4).shape == (0, 3, 3)


def test_small_edge_cases_of_decoding_and_hole_filling():
    empty = decode_rle([])
    assert empty.shape == (0, 0, 0)
    assert empty.dtype == torch.bool
    logits = torch.full((1, 5, 5), 4.0)
    logits[0, 2, 2] = 0.5  # weak foreground, not background: no hole
    assert fill_small_holes(logits, max_area=0) is logits  # disabled: the input itself comes back
    assert torch.equal(fill_small_holes(logits, max_area=3), logits)


def test_nms_of_zero_area_boxes_warns_nothing():
    import warnings

    boxes = torch.tensor([[1.0, 1.0, 1.0, 5.0], [1.0, 1.0, 1.0, 5.0], [0.0, 0.0, 4.0, 4.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 0 / 0 IoUs of degenerate boxes stay silent
        keep = batched_nms(boxes, torch.tensor([0.9, 0.8, 0.7]), torch.zeros(3, dtype=torch.int64), 0.5)
    assert keep.tolist() == [0, 1, 2]


def test_zero_logits_are_background_and_empty_nms_keeps_the_device():
    logits = torch.full((1, 4, 4), 3.0)
    logits[0, 1, 1] = 0.0  # exactly 0 is background (<= 0), like the official
    assert fill_small_holes(logits, max_area=1)[0, 1, 1].item() == pytest.approx(0.1)
    meta = torch.device("meta")
    keep = batched_nms(torch.zeros(0, 4, device=meta), torch.zeros(0, device=meta), torch.zeros(0, device=meta), 0.5)
    assert keep.device.type == "meta"
    assert keep.dtype == torch.int64


def test_nms_of_float64_boxes_computes_the_iou_in_float64():
    """Box B holds box A and is 2 - 1e-9 high: IoU 1 / (2 - 1e-9), above 0.5 in float64 (B is
    dropped, as torchvision does for float64 boxes) but exactly 0.5 once the boxes are rounded to
    float32 (B would be kept). float32 boxes of the same numbers do keep both."""
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 2.0 - 1e-9]], dtype=torch.float64)
    iou = 1.0 / (1.0 + (2.0 - 1e-9) - 1.0)
    assert iou > 0.5
    assert float(np.float32(2.0 - 1e-9)) == 2.0
    scores, cats = torch.tensor([0.9, 0.8]), torch.zeros(2, dtype=torch.int64)
    assert batched_nms(boxes, scores, cats, 0.5).tolist() == [0]
    assert batched_nms(boxes.float(), scores, cats, 0.5).tolist() == [0, 1]
