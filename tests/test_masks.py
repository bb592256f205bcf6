"""Tests for masklet.masks: COCO RLE, boxes, NMS and connected-component clean-up."""

from __future__ import annotations

import warnings

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
    masks_to_boxes,
    remove_small_regions,
    rle_area,
    rle_to_bbox,
)

cv2 = pytest.importorskip("cv2")
mask_utils = pytest.importorskip("pycocotools.mask")


def _coco_encode(masks: np.ndarray) -> list[dict]:
    """pycocotools encoding of (N, H, W) bool masks."""
    return mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))


def _special_masks(h: int, w: int, seed: int) -> np.ndarray:
    """Random masks of several densities plus empty, full, first/last/single-pixel masks."""
    rng = np.random.default_rng(seed)
    masks = [rng.random((h, w)) < p for p in (0.02, 0.5, 0.98)]
    masks += [np.zeros((h, w), bool), np.ones((h, w), bool)]
    first = np.zeros((h, w), bool)
    first[0, 0] = True
    last = np.zeros((h, w), bool)
    last[-1, -1] = True
    single = np.zeros((h, w), bool)
    single[h // 2, w // 2] = True
    block = np.zeros((h, w), bool)
    block[h // 4 : h // 4 + max(1, h // 2), w // 3 : w // 3 + max(1, w // 3)] = True
    return np.stack(masks + [first, last, single, block, ~block])


SHAPES = [(1, 1), (1, 9), (9, 1), (2, 2), (7, 13), (64, 3), (480, 641)]


# ------------------------------------------------------------------------------------------
# RLE
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_encode_rle_is_byte_identical_to_pycocotools(shape: tuple[int, int]) -> None:
    masks = _special_masks(*shape, seed=sum(shape))
    ours = encode_rle(torch.from_numpy(masks))
    ref = _coco_encode(masks)
    assert len(ours) == len(ref) == len(masks)
    for o, r in zip(ours, ref):
        assert isinstance(o["counts"], str)
        assert o["counts"] == r["counts"].decode("ascii")
        assert o["size"] == list(r["size"]) == list(shape)


@pytest.mark.parametrize("shape", SHAPES)
def test_decode_rle_round_trip_and_reads_pycocotools(shape: tuple[int, int]) -> None:
    masks = _special_masks(*shape, seed=7 * sum(shape))
    decoded = decode_rle(encode_rle(torch.from_numpy(masks)))
    assert decoded.dtype == torch.bool and decoded.shape == masks.shape
    assert np.array_equal(decoded.numpy(), masks)
    ref = _coco_encode(masks)  # bytes counts straight from pycocotools
    assert np.array_equal(decode_rle(ref).numpy(), masks)
    uncompressed = encode_uncompressed_rle(masks)
    assert np.array_equal(decode_rle(uncompressed).numpy(), masks)


def test_encode_rle_large_runs_and_negative_deltas() -> None:
    # Runs alternate between long and short, so the delta coding yields big negative values.
    h, w = 300, 500
    flat = np.zeros(h * w, bool)
    pos = 0
    rng = np.random.default_rng(3)
    value = False
    while pos < flat.size:
        run = int(rng.choice([1, 2, 70000, 3000]))
        flat[pos : pos + run] = value
        pos += run
        value = not value
    mask = flat.reshape(w, h).T[None]
    (ours,) = encode_rle(mask)
    (ref,) = _coco_encode(mask)
    assert ours["counts"] == ref["counts"].decode()
    assert np.array_equal(decode_rle([ours]).numpy(), mask)


def test_encode_rle_accepts_fortran_c_order_and_integer_input() -> None:
    masks = _special_masks(31, 17, seed=1)
    c_order = np.ascontiguousarray(masks)
    f_order = np.asfortranarray(masks)
    strided = np.repeat(masks, 2, axis=2)[:, :, ::2]  # non-contiguous view
    assert f_order.flags.f_contiguous and not strided.flags.c_contiguous
    expected = [r["counts"].decode() for r in _coco_encode(masks)]
    for variant in (c_order, f_order, strided):
        assert [r["counts"] for r in encode_rle(variant)] == expected
    assert [r["counts"] for r in encode_rle(masks.astype(np.uint8))] == expected
    assert [r["counts"] for r in encode_rle(torch.from_numpy(masks).to(torch.int32))] == expected
    transposed = torch.from_numpy(masks.transpose(0, 2, 1).copy()).transpose(1, 2)
    assert [r["counts"] for r in encode_rle(transposed)] == expected


def test_uncompressed_rle_matches_official_format() -> None:
    masks = _special_masks(9, 11, seed=5)
    ours = encode_uncompressed_rle(torch.from_numpy(masks))
    for o, r, m in zip(ours, _coco_encode(masks), masks):
        assert o["size"] == [9, 11]
        assert all(isinstance(c, int) for c in o["counts"])
        assert sum(o["counts"]) == 99
        assert (o["counts"][0] == 0) == bool(m[0, 0])
        recompressed = mask_utils.frPyObjects(o, 9, 11)
        assert recompressed["counts"] == r["counts"]
    amg = pytest.importorskip("sam2.utils.amg")
    official = amg.mask_to_rle_pytorch(torch.from_numpy(masks))
    assert [o["counts"] for o in ours] == [o["counts"] for o in official]


def test_rle_of_zero_sized_masks() -> None:
    for shape in ((2, 0, 5), (1, 4, 0)):
        masks = np.zeros(shape, bool)
        ours = encode_rle(masks)
        assert [r["counts"] for r in ours] == [r["counts"].decode() for r in _coco_encode(masks)]
        assert decode_rle(ours).shape == shape
    assert encode_rle(torch.zeros(0, 5, 6, dtype=torch.bool)) == []
    assert decode_rle([]).shape == (0, 0, 0)


def test_decode_rle_single_dict_and_str_or_bytes_counts() -> None:
    mask = _special_masks(6, 5, seed=2)[1:2]
    (rle,) = encode_rle(mask)
    as_bytes = {"size": rle["size"], "counts": rle["counts"].encode()}
    assert np.array_equal(decode_rle(rle).numpy(), mask)
    assert np.array_equal(decode_rle(as_bytes).numpy(), mask)
    # Hand-made uncompressed RLE in column-major order: 2 off, 3 on, 1 off over a 3x2 image.
    manual = decode_rle({"size": [3, 2], "counts": [2, 3, 1]})[0]
    assert manual.tolist() == [[False, True], [False, True], [True, False]]


@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (33, 20), (480, 641)])
def test_rle_area_and_bbox_match_pycocotools(shape: tuple[int, int]) -> None:
    masks = _special_masks(*shape, seed=11)
    # Also a mask whose box is narrow (single column) and one spanning two columns partially.
    ours = encode_rle(masks)
    ref = _coco_encode(masks)
    for o, r, u in zip(ours, ref, encode_uncompressed_rle(masks)):
        assert rle_area(o) == rle_area(u) == int(mask_utils.area(r))
        assert rle_to_bbox(o) == rle_to_bbox(u) == mask_utils.toBbox(r).tolist()


def test_rle_to_bbox_column_cases() -> None:
    mask = np.zeros((1, 10, 8), bool)
    mask[0, 2:5, 3] = True  # inside one column: tight y range
    assert rle_to_bbox(encode_rle(mask)[0]) == [3.0, 2.0, 1.0, 3.0]
    mask[0, 8:, 4] = True
    mask[0, :1, 5] = True  # a run that crosses a column boundary spans the full height
    assert rle_to_bbox(encode_rle(mask)[0]) == mask_utils.toBbox(_coco_encode(mask)[0]).tolist()
    assert rle_to_bbox(encode_rle(mask)[0]) == [3.0, 0.0, 3.0, 10.0]
    assert rle_to_bbox({"size": [3, 3], "counts": [9]}) == [0.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((4, 4), bool), r"masks: expected shape \(N, H, W\)"),
        (np.zeros((1, 4, 4), np.float32), "bool or integer"),
        (torch.zeros(1, 4, 4), "bool or integer"),
        ([[[True]]], "torch.Tensor or numpy.ndarray"),
    ],
)
def test_encode_rle_rejects_bad_masks(bad: object, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        encode_rle(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=match):
        encode_uncompressed_rle(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad, match",
    [
        ("abc", "list of COCO RLE dicts"),
        ([{"counts": "0"}], "'size' and 'counts'"),
        ([{"size": [2], "counts": "0"}], "'size' must be"),
        ([{"size": [-1, 2], "counts": "0"}], "'size' must be"),
        ([{"size": [2, 2], "counts": [1, 2]}], "sum to 3, expected H\\*W = 4"),
        ([{"size": [2, 2], "counts": [5, -1]}], "non-negative"),
        ([{"size": [2, 2], "counts": [1.5, 2.5]}], "flat list of ints"),
        ([{"size": [2, 2], "counts": [[1], [1, 2]]}], "flat list of ints"),
        ([{"size": [2, 2], "counts": "4~"}], "ASCII chars"),
        ([{"size": [2, 2], "counts": "4\u00e9"}], "ASCII chars"),
        ([{"size": [2, 2], "counts": "4P"}], "truncated"),
        ([{"size": [2, 2], "counts": [4]}, {"size": [2, 3], "counts": [6]}], "differs"),
    ],
)
def test_decode_rle_rejects_bad_rles(bad: object, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        decode_rle(bad)  # type: ignore[arg-type]


def test_rle_area_and_bbox_reject_bad_input() -> None:
    with pytest.raises(InvalidInputError, match="rle: expected a COCO RLE dict"):
        rle_area([1, 2])  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="rle: 'counts'"):
        rle_to_bbox({"size": [2, 2], "counts": {"a": 1}})


# ------------------------------------------------------------------------------------------
# boxes and NMS
# ------------------------------------------------------------------------------------------


def _numpy_box(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return [0, 0, 0, 0]
    return [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]


def test_masks_to_boxes_matches_numpy_reference() -> None:
    rng = np.random.default_rng(0)
    masks = rng.random((2, 3, 17, 23)) < 0.004
    masks[0, 0] = False
    masks[1, 2] = True
    masks[0, 1, 5, 7] = True
    boxes = masks_to_boxes(torch.from_numpy(masks))
    assert boxes.shape == (2, 3, 4) and boxes.dtype == torch.int64
    expected = [[_numpy_box(m) for m in row] for row in masks]
    assert boxes.tolist() == expected
    assert boxes[0, 0].tolist() == [0, 0, 0, 0]
    assert boxes[1, 2].tolist() == [0, 0, 22, 16]
    assert masks_to_boxes(torch.from_numpy(masks[1, 1])).tolist() == _numpy_box(masks[1, 1])


def test_masks_to_boxes_empty_inputs() -> None:
    assert masks_to_boxes(torch.zeros(0, 5, 5, dtype=torch.bool)).shape == (0, 4)
    assert masks_to_boxes(torch.zeros(3, 0, 5, dtype=torch.bool)).tolist() == [[0, 0, 0, 0]] * 3
    with pytest.raises(InvalidInputError, match="masks"):
        masks_to_boxes(torch.zeros(5))


def test_box_xyxy_to_xywh() -> None:
    boxes = torch.tensor([[1, 2, 5, 9], [0, 0, 0, 0]])
    assert box_xyxy_to_xywh(boxes).tolist() == [[1, 2, 4, 7], [0, 0, 0, 0]]
    assert box_xyxy_to_xywh(torch.tensor([1.0, 1.0, 2.0, 4.0])).tolist() == [1.0, 1.0, 1.0, 3.0]
    with pytest.raises(InvalidInputError, match=r"boxes: expected a tensor of shape \(\.\.\., 4\)"):
        box_xyxy_to_xywh(torch.zeros(3, 5))


def _iou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _random_boxes(n: int, seed: int, integer: bool = True) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 60
    wh = torch.rand(n, 2, generator=g) * 30 + 1
    boxes = torch.cat([xy, xy + wh], dim=1)
    return boxes.round() if integer else boxes


def test_box_iou_matches_brute_force() -> None:
    a, b = _random_boxes(9, 1), _random_boxes(7, 2)
    iou = box_iou(a, b)
    assert iou.shape == (9, 7)
    expected = [[_iou(x, y) for y in b.tolist()] for x in a.tolist()]
    assert torch.allclose(iou, torch.tensor(expected), atol=1e-6)
    assert box_iou(a[:1], a[:1]).item() == pytest.approx(1.0)


def _brute_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, thr: float) -> list[int]:
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    keep: list[int] = []
    b, c = boxes.tolist(), idxs.tolist()
    for i in order:
        if all(c[i] != c[k] or _iou(b[i], b[k]) <= thr for k in keep):
            keep.append(i)
    return keep


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("thr", [0.0, 0.3, 0.7])
def test_batched_nms_matches_brute_force(seed: int, thr: float) -> None:
    n = 120
    boxes = _random_boxes(n, seed)
    g = torch.Generator().manual_seed(100 + seed)
    scores = torch.randint(0, 20, (n,), generator=g).float()  # many ties
    idxs = torch.randint(0, 3, (n,), generator=g)
    keep = batched_nms(boxes, scores, idxs, thr)
    assert keep.dtype == torch.int64
    assert keep.tolist() == _brute_nms(boxes, scores, idxs, thr)
    kept_scores = scores[keep]
    assert bool((kept_scores[:-1] >= kept_scores[1:]).all())


def test_batched_nms_threshold_is_strict_and_per_category() -> None:
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 10, 10]])
    scores = torch.tensor([0.9, 0.8, 0.95])
    same = torch.tensor([0, 0, 1])
    # IoU(box0, box1) is exactly 0.5: kept at threshold 0.5, suppressed just below it.
    assert batched_nms(boxes, scores, same, 0.5).tolist() == [2, 0, 1]
    assert batched_nms(boxes, scores, same, 0.49).tolist() == [2, 0]
    one_category = torch.zeros(3, dtype=torch.int64)
    assert batched_nms(boxes, scores, one_category, 0.5).tolist() == [2, 1]
    assert batched_nms(boxes, scores, one_category, 0.49).tolist() == [2]
    empty = batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)
    assert empty.shape == (0,) and empty.dtype == torch.int64


def test_batched_nms_rejects_bad_input() -> None:
    boxes = _random_boxes(4, 0)
    with pytest.raises(InvalidInputError, match=r"boxes: expected a tensor of shape \(N, 4\)"):
        batched_nms(boxes[:, :3], torch.zeros(4), torch.zeros(4), 0.5)
    with pytest.raises(InvalidInputError, match=r"scores: expected a tensor of shape \(4,\)"):
        batched_nms(boxes, torch.zeros(3), torch.zeros(4), 0.5)
    with pytest.raises(InvalidInputError, match="idxs"):
        batched_nms(boxes, torch.zeros(4), [0, 0, 0, 0], 0.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="iou_threshold"):
        batched_nms(boxes, torch.zeros(4), torch.zeros(4), "0.5")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# connected components
# ------------------------------------------------------------------------------------------


def _cv2_areas(binary: np.ndarray) -> np.ndarray:
    """Per-pixel 8-connected component area (0 off the foreground) via OpenCV."""
    _, labels, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=8)
    areas = stats[:, cv2.CC_STAT_AREA].copy()
    areas[0] = 0
    return np.where(binary, areas[labels], 0)


def _reference_fill(logits: np.ndarray, thr: float, hole: float, sprinkle: float) -> np.ndarray:
    """The official SAM2 post-processing, one 2-D mask at a time, with OpenCV labelling."""
    out = logits.copy()
    for idx in np.ndindex(logits.shape[:-2]):
        src = logits[idx]
        if hole > 0:
            areas = _cv2_areas(src <= thr)
            out[idx][(areas > 0) & (areas <= hole)] = thr + 10.0
        if sprinkle > 0:
            areas = _cv2_areas(src > thr)  # found on the input logits, as in the official code
            out[idx][(areas > 0) & (areas <= sprinkle)] = thr - 10.0
    return out


def _blob_logits() -> tuple[np.ndarray, dict[str, tuple[slice, slice]]]:
    """A 40x40 map: a big square with square holes of area 1/4/9/16, islands of 1/4/9 outside."""
    logits = np.full((40, 40), -3.0, np.float32)
    logits[2:22, 2:38] = 2.0
    regions = {
        "hole1": (slice(4, 5), slice(4, 5)),
        "hole4": (slice(4, 6), slice(8, 10)),
        "hole9": (slice(4, 7), slice(14, 17)),
        "hole16": (slice(10, 14), slice(20, 24)),
        "island1": (slice(30, 31), slice(4, 5)),
        "island4": (slice(30, 32), slice(10, 12)),
        "island9": (slice(30, 33), slice(20, 23)),
    }
    for name, (ys, xs) in regions.items():
        logits[ys, xs] = -1.5 if name.startswith("hole") else 1.0
    return logits, regions


def test_fill_holes_and_remove_sprinkles_known_sizes() -> None:
    logits, regions = _blob_logits()
    out = fill_holes_and_remove_sprinkles(torch.from_numpy(logits), 0.0, 4, 4).numpy()
    for name in ("hole1", "hole4"):
        assert np.all(out[regions[name]] == 10.0), name
    for name in ("island1", "island4"):
        assert np.all(out[regions[name]] == -10.0), name
    for name in ("hole9", "hole16", "island9"):
        assert np.array_equal(out[regions[name]], logits[regions[name]]), name
    untouched = np.ones_like(logits, bool)
    for name in ("hole1", "hole4", "island1", "island4"):
        untouched[regions[name]] = False
    assert np.array_equal(out[untouched], logits[untouched])


def test_fill_holes_areas_are_inclusive_and_steps_optional() -> None:
    logits, regions = _blob_logits()
    t = torch.from_numpy(logits)
    holes_only = fill_holes_and_remove_sprinkles(t, 0.0, max_hole_area=9).numpy()
    assert np.all(holes_only[regions["hole9"]] == 10.0)
    assert np.array_equal(holes_only[regions["island1"]], logits[regions["island1"]])
    sprinkles_only = fill_holes_and_remove_sprinkles(t, 0.0, max_sprinkle_area=9.0).numpy()
    assert np.all(sprinkles_only[regions["island9"]] == -10.0)
    assert np.array_equal(sprinkles_only[regions["hole1"]], logits[regions["hole1"]])
    unchanged = fill_holes_and_remove_sprinkles(t)
    assert torch.equal(unchanged, t) and unchanged.data_ptr() != t.data_ptr()


def test_fill_holes_counts_border_background_and_uses_input_for_sprinkles() -> None:
    logits = np.full((8, 8), 1.0, np.float32)
    logits[0, 0] = -1.0  # background touching the border, area 1: a hole for SAM2
    logits[5:8, 5:8] = -1.0  # a ring of 8 foreground pixels around a 1-pixel hole
    logits[5:8, 5:8][[0, 0, 0, 1, 1, 2, 2, 2], [0, 1, 2, 0, 2, 0, 1, 2]] = 1.0
    logits[4, 4:8] = -1.0
    logits[4:8, 4] = -1.0
    out = fill_holes_and_remove_sprinkles(torch.from_numpy(logits), 0.0, 1, 8).numpy()
    assert out[0, 0] == 10.0
    assert out[6, 6] == 10.0  # the hole is filled ...
    assert np.all(out[5:8, 5:8][logits[5:8, 5:8] > 0] == -10.0)  # ... and its ring, of 8, removed
    assert np.array_equal(out, _reference_fill(logits, 0.0, 1, 8))


@pytest.mark.parametrize("thr", [0.0, 0.5, -0.25])
def test_fill_holes_matches_opencv_reference_on_random_blobs(thr: float) -> None:
    g = torch.Generator().manual_seed(int(thr * 100) + 3)
    noise = torch.randn(2, 3, 1, 48, 40, generator=g)
    smooth = torch.nn.functional.avg_pool2d(noise.flatten(0, 2), 3, 1, 1).reshape(2, 3, 48, 40)
    logits = (smooth * 4).to(torch.float64)
    out = fill_holes_and_remove_sprinkles(logits, thr, 12, 7.5)
    assert out.dtype == torch.float64 and out.shape == logits.shape
    ref = _reference_fill(logits.numpy(), thr, 12, 7.5)
    assert np.array_equal(out.numpy(), ref)
    assert not np.array_equal(ref, logits.numpy())  # the case actually changes something


def test_fill_holes_matches_official_postprocess_masks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the official ``postprocess_masks`` with an OpenCV stand-in for its CUDA kernel."""
    transforms = pytest.importorskip("sam2.utils.transforms")
    misc = pytest.importorskip("sam2.utils.misc")

    def cv2_connected_components(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.zeros_like(mask, dtype=torch.int32)
        areas = torch.zeros_like(mask, dtype=torch.int32)
        for i in range(mask.shape[0]):
            binary = mask[i, 0].numpy().astype(np.uint8)
            _, lab, _, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
            labels[i, 0] = torch.from_numpy(lab)
            areas[i, 0] = torch.from_numpy(_cv2_areas(binary.astype(bool)))
        return labels, areas

    monkeypatch.setattr(misc, "get_connected_components", cv2_connected_components)
    g = torch.Generator().manual_seed(17)
    noise = torch.randn(6, 1, 40, 36, generator=g)
    logits = (torch.nn.functional.avg_pool2d(noise, 3, 1, 1) * 4).reshape(2, 3, 40, 36)
    for thr, hole, sprinkle in [(0.0, 10, 10), (0.3, 25, 0), (-0.2, 0, 6)]:
        config = type("Cfg", (), {})()
        config.mask_threshold, config.max_hole_area, config.max_sprinkle_area = thr, hole, sprinkle
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the official code warns and skips on any failure
            official = transforms.SAM2Transforms.postprocess_masks(config, logits, (40, 36))
        ours = fill_holes_and_remove_sprinkles(logits, thr, hole, sprinkle)
        assert torch.allclose(ours, official, atol=1e-6), (thr, hole, sprinkle)
        assert not torch.equal(ours, logits)


def test_fill_holes_rejects_bad_input() -> None:
    match = r"mask_logits: expected a float tensor of shape \(\.\.\., H, W\)"
    with pytest.raises(InvalidInputError, match=match):
        fill_holes_and_remove_sprinkles(torch.zeros(5), 0.0, 1, 1)
    with pytest.raises(InvalidInputError, match="mask_logits"):
        fill_holes_and_remove_sprinkles(np.zeros((4, 4)), 0.0, 1, 1)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="max_hole_area: expected a number"):
        fill_holes_and_remove_sprinkles(torch.zeros(4, 4), 0.0, "1", 1)  # type: ignore[arg-type]


def _reference_remove_small_regions(mask: np.ndarray, area_thresh: float, mode: str) -> tuple[np.ndarray, bool]:
    """segment-anything's remove_small_regions semantics, with OpenCV labelling."""
    holes = mode == "holes"
    working = (mask ^ holes).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(working, connectivity=8)
    sizes = stats[1:, cv2.CC_STAT_AREA]
    small = [i + 1 for i in range(n - 1) if sizes[i] < area_thresh]
    if not small:
        return mask, False
    fill = [0] + small
    if not holes:
        fill = [i for i in range(n) if i not in fill] or [int(np.argmax(sizes)) + 1]
    return np.isin(labels, fill), True


def _unique_largest(mask: np.ndarray) -> bool:
    _, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    sizes = np.sort(stats[1:, cv2.CC_STAT_AREA])
    return len(sizes) < 2 or sizes[-1] != sizes[-2]


@pytest.mark.parametrize("mode", ["holes", "islands"])
@pytest.mark.parametrize("area", [0, 3, 10, 60, 1e9])
def test_remove_small_regions_matches_opencv_reference(mode: str, area: float) -> None:
    rng = np.random.default_rng(int(area) % 1000 + len(mode))
    checked = 0
    for _ in range(12):
        mask = rng.random((30, 26)) < rng.choice([0.2, 0.5, 0.8])
        if mode == "islands" and area == 1e9 and not _unique_largest(mask):
            continue  # ties for "largest" are broken by label order, which differs from OpenCV
        ours, changed = remove_small_regions(mask, area, mode)  # type: ignore[arg-type]
        ref, ref_changed = _reference_remove_small_regions(mask, area, mode)
        assert isinstance(ours, np.ndarray) and ours.dtype == bool
        assert changed == ref_changed
        assert np.array_equal(ours, ref)
        checked += 1
    assert checked >= 6


def test_remove_small_regions_agrees_with_official_sam2() -> None:
    amg = pytest.importorskip("sam2.utils.amg")
    rng = np.random.default_rng(9)
    for _ in range(6):
        mask = rng.random((20, 24)) < 0.35
        for mode in ("holes", "islands"):
            ours, changed = remove_small_regions(mask, 5, mode)  # type: ignore[arg-type]
            ref, ref_changed = amg.remove_small_regions(mask, 5, mode)
            assert changed == ref_changed and np.array_equal(ours, ref)


def test_remove_small_regions_keeps_largest_island_and_tensor_type() -> None:
    mask = torch.zeros(10, 10, dtype=torch.bool)
    mask[0:2, 0:2] = True  # area 4
    mask[5:8, 5:8] = True  # area 9
    mask[9, 0] = True  # area 1
    out, changed = remove_small_regions(mask, 100, "islands")
    assert isinstance(out, torch.Tensor) and changed
    expected = torch.zeros_like(mask)
    expected[5:8, 5:8] = True
    assert torch.equal(out, expected)
    out, changed = remove_small_regions(mask, 2, "islands")
    assert changed and out.sum().item() == 13 and not out[9, 0]
    filled, changed = remove_small_regions(~expected, 10, "holes")
    assert changed and bool(filled.all())
    kept, changed = remove_small_regions(~expected, 9, "holes")
    assert not changed and torch.equal(kept, ~expected)


def test_remove_small_regions_rejects_bad_input() -> None:
    mask = np.zeros((4, 4), bool)
    with pytest.raises(InvalidInputError, match="mode: expected 'holes' or 'islands', got 'blobs'"):
        remove_small_regions(mask, 3, "blobs")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"mask: expected shape \(H, W\)"):
        remove_small_regions(np.zeros((1, 4, 4), bool), 3, "holes")
    with pytest.raises(InvalidInputError, match="area_thresh"):
        remove_small_regions(mask, None, "holes")  # type: ignore[arg-type]
