"""Image parity helpers: logits and masks of masklet against a reference, with one tolerance."""

from __future__ import annotations

import numpy as np

ATOL = 1e-4  # float32 logits, IoU and object scores


EDGE = 1e-3  # binary masks may differ only where the logit is this close to the threshold


def assert_close(ours, ref, what: str, atol: float = ATOL) -> None:
    ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != {ref.shape}"
    diff = float(np.abs(ours - ref).max()) if ours.size else 0.0
    assert diff <= atol, f"{what}: max abs diff {diff:.3g} > {atol}"


def assert_masks_agree(our_masks, ref_logits, threshold: float = 0.0) -> None:
    differ = our_masks != (ref_logits > threshold)
    assert np.all(np.abs(ref_logits[differ] - threshold) <= EDGE), f"{int(differ.sum())} pixels differ"
