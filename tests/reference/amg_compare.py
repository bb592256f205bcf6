"""Comparison of masklet's automatic masks with the official SAM2AutomaticMaskGenerator's records."""

from __future__ import annotations

import functools

import numpy as np
import torch

from masklet.masks import decode_rle
from reference.official import (
    feat_sizes,
    patched_connected_components,
)
from reference.pairs import test_image


def masks_of(records: list[dict]) -> np.ndarray:
    """(n, H, W) bool masks of AMG records in any output mode."""
    out = []
    for record in records:
        seg = record["segmentation"]
        out.append(decode_rle(seg)[0].numpy() if isinstance(seg, dict) else np.asarray(seg, dtype=bool))
    return np.stack(out) if out else np.zeros((0, 0, 0), dtype=bool)


def match_masks(
    ours: list[dict],
    official: list[dict],
    iou_min: float = 0.999,
    pixel_atol: int = 2,
    score_atol: float = 1e-4,
    stability_atol: float = 1e-4,
    box_atol: float = 0.0,
) -> list[str]:
    """Differences between two lists of AMG records; empty when they agree.

    Same number of masks; each of ours paired with an unused official mask (the one at the same
    rank when it matches, else the best one) at mask IoU >= ``iou_min`` and at most ``pixel_atol``
    pixels different (logits on the threshold; issue 15: the code reaches one pixel in 191 masks),
    area within ``pixel_atol``, predicted IoU within ``score_atol``, stability within
    ``stability_atol`` or what ``pixel_atol`` pixels on its thresholds explain (:func:`stability_bound`), box within ``box_atol`` pixels (exact by default), same prompt point and
    crop box. A pair off the diagonal is
    an order problem unless both official masks at those ranks have the same predicted IoU (a
    tie the two implementations may break differently).
    """
    problems = []
    if len(ours) != len(official):
        problems.append(f"{len(ours)} masks, official {len(official)}")
    if not ours or not official:
        return problems
    a, b = masks_of(ours), masks_of(official)
    if a.shape[1:] != b.shape[1:]:
        return problems + [f"mask size {a.shape[1:]}, official {b.shape[1:]}"]
    fa = a.reshape(len(a), -1).astype(np.float64)
    fb = b.reshape(len(b), -1).astype(np.float64)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    used: set[int] = set()
    for i, rec in enumerate(ours):
        if i < len(official) and i not in used and iou[i, i] >= iou_min:
            j = i
        else:
            free = [k for k in range(len(official)) if k not in used]
            if not free:
                break
            j = max(free, key=lambda k: iou[i, k])
        used.add(j)
        ref = official[j]
        where = f"mask {i} (official {j})"
        if iou[i, j] < iou_min:
            problems.append(f"{where}: IoU {iou[i, j]:.4f} < {iou_min}")
        differ = int(np.count_nonzero(a[i] != b[j]))
        if differ > pixel_atol:
            problems.append(f"{where}: {differ} pixels differ (> {pixel_atol})")
        if abs(rec["area"] - ref["area"]) > pixel_atol:
            problems.append(f"{where}: area {rec['area']} vs {ref['area']}")
        if abs(rec["predicted_iou"] - ref["predicted_iou"]) > score_atol:
            problems.append(f"{where}: predicted_iou {rec['predicted_iou']} vs {ref['predicted_iou']}")
        both_nan = np.isnan(rec["stability_score"]) and np.isnan(ref["stability_score"])
        stability_diff = abs(rec["stability_score"] - ref["stability_score"])
        if not both_nan and not stability_diff <= stability_bound(ref, stability_atol, pixel_atol):
            problems.append(f"{where}: stability {rec['stability_score']} vs {ref['stability_score']}")
        if np.abs(np.subtract(rec["bbox"], ref["bbox"])).max() > box_atol:
            problems.append(f"{where}: bbox {rec['bbox']} vs {ref['bbox']}")
        if not np.allclose(rec["point_coords"], ref["point_coords"], atol=1e-3):
            problems.append(f"{where}: point {rec['point_coords']} vs {ref['point_coords']}")
        if list(rec["crop_box"]) != list(ref["crop_box"]):
            problems.append(f"{where}: crop_box {rec['crop_box']} vs {ref['crop_box']}")
        tie = i < len(official) and abs(official[i]["predicted_iou"] - ref["predicted_iou"]) <= score_atol
        if j != i and not (tie and rec["crop_box"] == official[i]["crop_box"]):
            problems.append(f"{where}: out of order")
    return problems


def stability_bound(official: dict, stability_atol: float, pixel_atol: int) -> float:
    """Largest stability difference that ``pixel_atol`` pixels on a threshold can explain.

    Stability is I / U, the pixel counts above +offset and above -offset, and the mask's area A
    (above 0) lies between them. Moving k pixels across either threshold (logits within float
    rounding of it; which pixels depends on the CPU's kernels) changes I / U by at most
    k (1 + s) / A. A one-pixel move on a small mask (I / U = 11 / 308 against 11 / 309, seen on an
    AVX-512 CPU) is more than 1e-4; on masks of thousands of pixels the bound is ``stability_atol``.
    """
    s, area = float(official["stability_score"]), max(int(official["area"]), 1)
    return max(stability_atol, pixel_atol * (1.0 + s) / area)


def assert_same_masks(ours: list[dict], official: list[dict], **tolerances) -> None:
    problems = match_masks(ours, official, **tolerances)
    assert not problems, f"{len(problems)} difference(s):\n" + "\n".join(problems[:20])


def official_records(
    model, image: np.ndarray, min_mask_region_area: float = 0, first_sam_postprocessing: bool = True, **options
) -> list[dict]:
    """Records of the official SAM2AutomaticMaskGenerator on ``model`` (any image size).

    With ``min_mask_region_area`` > 0 the official generator runs with its predictor's
    low-resolution hole/sprinkle clean-up active (the OpenCV stand-in for its CUDA kernel) and,
    if ``first_sam_postprocessing`` (the reference of ``masklet.MaskGenerator``), the first
    Segment Anything's ``postprocess_small_regions`` (which SAM2 ships but never calls) is
    applied before the records are written, with max(box_nms_thresh, crop_nms_thresh); without
    it these are the official package's own records (the reference of ``masklet.sam2``).
    """
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    generator = SAM2AutomaticMaskGenerator(model, min_mask_region_area=min_mask_region_area, **options)
    generator.predictor._bb_feat_sizes = feat_sizes(int(model.image_size))
    if min_mask_region_area > 0 and first_sam_postprocessing:
        generate_masks = generator._generate_masks
        nms = max(generator.box_nms_thresh, generator.crop_nms_thresh)

        def with_postprocessing(img):
            return generator.postprocess_small_regions(generate_masks(img), min_mask_region_area, nms)

        generator._generate_masks = with_postprocessing
    with patched_connected_components(), torch.inference_mode():
        return generator.generate(image)


@functools.cache
def image(seed: int) -> np.ndarray:
    img = test_image(180, 240, seed=seed)
    img.flags.writeable = False
    return img


@functools.cache
def blob_image(seed: int) -> np.ndarray:
    """A few small discs on flat grey, away from the border: random weights then give small
    masks inside crops, which is what crop tests need (masks touching a crop edge are dropped)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:180, 0:240]
    img = np.full((180, 240, 3), 0.5)
    for _ in range(6):
        cy, cx, r = rng.uniform(0.15, 0.85) * 180, rng.uniform(0.15, 0.85) * 240, rng.uniform(6, 16)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 1, 3)
    img = (img * 255).astype(np.uint8)
    img.flags.writeable = False
    return img
