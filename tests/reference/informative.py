"""The "informative" guard of parity tests (issue 15 item 6): a comparison proves something only
when most compared masks are neither (nearly) empty nor (nearly) full.

A single foreground pixel, or a mask over 90% of the image, agrees between two implementations
that differ in many ways; so guards count masks covering 1-90% of their image.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

__all__ = ["LOW", "HIGH", "assert_informative", "coverages", "informative_count", "informative_problem"]

LOW, HIGH = 0.01, 0.9


def coverages(masks: Iterable[np.ndarray | torch.Tensor], threshold: float = 0.0) -> list[float]:
    """Foreground fraction of each mask (logits above ``threshold`` or True); one per 2-D plane.

    Accepts 2-D masks and stacks of them ((N, H, W), (N, 1, H, W)); absent-object outputs
    (all at NO_OBJ_SCORE) count as empty.
    """
    out: list[float] = []
    for mask in masks:
        arr = mask.detach().float().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
        fg = arr if arr.dtype == bool else arr > threshold
        planes = fg.reshape(-1, *fg.shape[-2:])
        out.extend(float(p.mean()) for p in planes)
    return out


def informative_count(masks: Iterable[np.ndarray | torch.Tensor], threshold: float = 0.0) -> int:
    """How many masks cover 1-90% of their image."""
    return sum(LOW <= c <= HIGH for c in coverages(masks, threshold))


def informative_problem(
    masks: Iterable[np.ndarray | torch.Tensor], min_fraction: float = 0.5, min_count: int = 1, threshold: float = 0.0
) -> str | None:
    """Why ``masks`` prove little (fewer than ``min_fraction`` of them, or ``min_count``, cover
    1-90% of the image), or None when they are informative."""
    cov = coverages(masks, threshold)
    good = sum(LOW <= c <= HIGH for c in cov)
    need = max(min_count, int(np.ceil(min_fraction * len(cov))))
    if good >= need:
        return None
    median = float(np.median(cov)) if cov else float("nan")
    full = sum(c > HIGH for c in cov)
    return (
        f"only {good} of {len(cov)} compared masks cover 1-90% of the image (need {need}; {full} cover "
        f"over 90%, median coverage {median:.3f}): the comparison proves little"
    )


def assert_informative(
    masks: Iterable[np.ndarray | torch.Tensor], min_fraction: float = 0.5, min_count: int = 1, threshold: float = 0.0
) -> None:
    """Fail unless at least ``min_fraction`` of the masks (and ``min_count``) cover 1-90% of the image."""
    problem = informative_problem(masks, min_fraction, min_count, threshold)
    assert problem is None, problem
