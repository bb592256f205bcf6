"""Decode the prompts of several requests (possibly on different images) in few mask-decoder calls.

Each :class:`PromptSet` is one image's embeddings with its B objects' prompts, which
:class:`~masklet.ImagePredictor` decodes in one call. :func:`decode_sets` stacks the sets that
give the decoder the same number of sparse tokens and the same multimask choice into one call.
Sets are never padded to a common point count: a padding point (label -1) still enters the
decoder's attention and moves the logits (measured: up to ~1.9 on masklet-nano for one extra
padding point), so sets with different point counts go in separate calls. The prompt encoder
runs set by set, as in the unbatched path; only the decoder sees the stacked batch, where float
kernels may round differently (measured: ~8e-6 in logits, ~1e-8 in IoU on CPU).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .model import Sam2Model
from .precision import inference


@dataclass
class PromptSet:
    """One image's levels ((1, C, h, w) each, finest first, image embedding last) and its B objects'
    prompts on the model's device: points ((B, N, 2), (B, N)) or None, mask (B, 1, 4h, 4w) or None."""

    levels: Sequence[torch.Tensor]
    points: tuple[torch.Tensor, torch.Tensor] | None
    mask: torch.Tensor | None
    multimask_output: bool

    @property
    def objects(self) -> int:
        """B, the number of objects (rows of the decoder batch) of this set."""
        if self.points is not None:
            return int(self.points[0].shape[0])
        return 1 if self.mask is None else int(self.mask.shape[0])


@dataclass
class DecodedSet:
    """A set's mask logits (B, M, 4h, 4w), IoU scores (B, M) and object-score logits (B, 1)."""

    low_res: torch.Tensor
    ious: torch.Tensor
    object_logits: torch.Tensor


def group_key(s: PromptSet) -> tuple[int, bool]:
    """Sets with equal keys can share a decoder call: the point count (-1: none) and the multimask choice."""
    return (-1 if s.points is None else int(s.points[0].shape[1]), bool(s.multimask_output))


def plan_groups(sets: Sequence[PromptSet], max_objects: int = 64) -> list[list[int]]:
    """Indices of ``sets`` per decoder call: equal :func:`group_key`, at most ``max_objects`` rows per call."""
    if max_objects < 1:
        raise ValueError(f"max_objects: expected >= 1, got {max_objects}")
    chunks: dict[tuple[int, bool], list[list[int]]] = {}
    for i, s in enumerate(sets):
        groups = chunks.setdefault(group_key(s), [[]])
        if groups[-1] and sum(sets[j].objects for j in groups[-1]) + s.objects > max_objects:
            groups.append([])
        groups[-1].append(i)
    return [g for groups in chunks.values() for g in groups]


def decode_sets(model: Sam2Model, sets: Sequence[PromptSet], max_objects: int = 64) -> list[DecodedSet]:
    """Decode every set in the calls of :func:`plan_groups`; a call of one set is exactly the unbatched
    :meth:`Sam2Model.decode_masks`. Results come back in the order of ``sets``."""
    out: dict[int, DecodedSet] = {}
    with inference():
        for group in plan_groups(sets, max_objects):
            out.update(zip(group, _decode_group(model, [sets[i] for i in group])))
    return [out[i] for i in range(len(sets))]


def _decode_group(model: Sam2Model, group: list[PromptSet]) -> list[DecodedSet]:
    if len(group) == 1:
        s = group[0]
        levels = list(s.levels)
        low, ious, obj = model.decode_masks(levels[-1], levels[:-1] or None, s.points, s.mask, s.multimask_output)
        return [DecodedSet(low, ious, obj)]
    encoder = model.sam_prompt_encoder
    dtype = group[0].levels[-1].dtype
    sparse, dense, per_level = [], [], []
    for s in group:
        sp, de = encoder(s.points, None, s.mask)  # as decode_masks does, set by set
        sparse.append(sp.to(dtype))
        dense.append(de.to(dtype))
        per_level.append([level.expand(sp.shape[0], -1, -1, -1) for level in s.levels])  # (B_i, C, h, w)
    stacked = [torch.cat(parts) for parts in zip(*per_level)]
    masks, ious, _, obj = model.sam_mask_decoder(
        image_embeddings=stacked[-1],
        image_pe=encoder.get_dense_pe(),
        sparse_prompt_embeddings=torch.cat(sparse),
        dense_prompt_embeddings=torch.cat(dense),
        multimask_output=group[0].multimask_output,
        repeat_image=False,
        high_res_features=stacked[:-1] or None,
    )
    sizes = [int(sp.shape[0]) for sp in sparse]
    return [DecodedSet(m, i, o) for m, i, o in zip(masks.split(sizes), ious.split(sizes), obj.split(sizes))]
