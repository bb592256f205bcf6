"""The "informative" guard of the parity tests (issue 15 item 6) rejects degenerate references.

The data below reproduce what the old references measured: the random-weights m2m AMG case (185
of 191 official masks over 90% of the image, NMS off), the random SAM2.1 video case (median
foreground 0.8%) and a single foreground pixel; the old guards (``0 < coverage < 1`` for half
the masks) accepted all three.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reference.informative import assert_informative, coverages, informative_count, informative_problem

H, W = 40, 50


def covering(fraction: float) -> np.ndarray:
    """An (H, W) bool mask whose first ``fraction`` of pixels (row-major) are foreground."""
    mask = np.zeros(H * W, dtype=bool)
    mask[: int(round(fraction * H * W))] = True
    return mask.reshape(H, W)


def old_check(masks: list[np.ndarray]) -> bool:
    """The guard the parity helpers had before issue 15: half the masks neither empty nor full."""
    return sum(0 < float(m.mean()) < 1 for m in masks) >= len(masks) // 2


def old_m2m_reference() -> list[np.ndarray]:
    # 185 near-full masks and 6 mid-size ones, as measured on test_m2m_matches_official's seed
    return [covering(0.95 + 0.0002 * i) for i in range(185)] + [covering(0.3)] * 6


def old_sam21_video_reference() -> list[np.ndarray]:
    # per-frame object masks around 0.8% foreground (median 0.008), a few larger ones
    return [covering(0.004 + 0.00005 * i) for i in range(30)] + [covering(0.05)] * 8


@pytest.mark.parametrize(
    "masks",
    [old_m2m_reference(), old_sam21_video_reference(), [covering(1 / (H * W))] * 4],
    ids=["random-m2m-nms-off", "random-sam2.1-video", "one-pixel"],
)
def test_guard_rejects_the_old_degenerate_references(masks):
    assert old_check(masks)  # what the old guard let through
    problem = informative_problem(masks)
    assert problem is not None
    assert "proves little" in problem
    with pytest.raises(AssertionError, match="cover 1-90% of the image"):
        assert_informative(masks)


def test_guard_accepts_mostly_mid_size_masks_and_counts_the_bounds():
    masks = [covering(f) for f in (0.01, 0.2, 0.5, 0.9, 0.95, 0.005)]
    assert coverages(masks) == pytest.approx([0.01, 0.2, 0.5, 0.9, 0.95, 0.005])
    assert informative_count(masks) == 4  # 1% and 90% are inside
    assert informative_problem(masks) is None
    assert informative_problem(masks, min_fraction=0.8) is not None  # 4 of 6 < ceil(4.8)
    assert informative_problem(masks[:2], min_count=3) is not None
    assert_informative(masks)


def test_coverages_read_logits_stacks_and_absent_outputs():
    logits = torch.full((2, 1, H, W), -1024.0)  # (N, 1, H, W), the second object absent
    logits[0, 0, :10] = 5.0
    assert coverages([logits]) == pytest.approx([0.25, 0.0])
    assert coverages([logits], threshold=10.0) == pytest.approx([0.0, 0.0])
    assert informative_count([logits.numpy()]) == 1
