"""Typed outputs of the SAM2 model and what its memory conditioning reads (no computation here)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass
class ImageFeatures:
    """Encoder output for a batch of images, all (B, C, h, w), finest level first.

    ``levels[-1]`` is the embedding the SAM heads use; the finer levels are the high-resolution
    features already projected by the decoder's ``conv_s0`` / ``conv_s1``.
    """

    levels: list[torch.Tensor]
    positions: list[torch.Tensor]


@dataclass
class SamOutput:
    """Result of the SAM heads on a batch of B prompts (M masks each)."""

    low_res_multimasks: torch.Tensor  # (B, M, 4h, 4w)
    high_res_multimasks: torch.Tensor  # (B, M, S, S)
    ious: torch.Tensor  # (B, M)
    low_res_masks: torch.Tensor  # (B, 1, 4h, 4w), the best of the M
    high_res_masks: torch.Tensor  # (B, 1, S, S)
    obj_ptr: torch.Tensor  # (B, C)
    object_score_logits: torch.Tensor  # (B, 1)


class MemoryEntry(Protocol):
    """What memory conditioning reads of a stored frame output (a :class:`TrackStepOutput` is one)."""

    @property
    def maskmem_features(self) -> torch.Tensor | None: ...
    @property
    def maskmem_pos_enc(self) -> torch.Tensor | None: ...
    @property
    def obj_ptr(self) -> torch.Tensor: ...


@dataclass(eq=False)
class TrackStepOutput:
    """One frame of tracking for B objects (the official ``track_step`` dict's entries, typed).

    Low-resolution logits are (B, 1, h, w) (``pred_multimasks``: (B, M, h, w)), high-resolution
    ones (B, 1, S, S); the memory fields stay None unless the memory encoder ran.
    """

    point_inputs: dict[str, torch.Tensor] | None
    mask_inputs: torch.Tensor | None
    pred_multimasks: torch.Tensor
    ious: torch.Tensor
    pred_masks: torch.Tensor
    pred_masks_high_res: torch.Tensor
    obj_ptr: torch.Tensor
    object_score_logits: torch.Tensor
    maskmem_features: torch.Tensor | None = None
    maskmem_pos_enc: torch.Tensor | None = None


@dataclass
class MemoryBank:
    """Per-frame outputs a tracker keeps: conditioning (prompted) frames and tracked frames."""

    cond: Mapping[int, MemoryEntry]
    non_cond: Mapping[int, MemoryEntry]
