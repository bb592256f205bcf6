"""Decode the prompts of several requests (possibly on different images) in one mask-decoder call.

Each :class:`PromptSet` is one image's embeddings with its B objects' prompts, which
:class:`~masklet.ImagePredictor` decodes in one call. :func:`decode_sets` stacks sets into one
decoder call whatever their prompts: point counts, boxes, mask inputs and the multimask choice
may differ. Sparse tokens are padded to the longest set and the padding is masked out of every
attention (a label -1 padding *point* would not do: it still enters the attention and moves the
logits); the decoder always computes all mask tokens, and each set picks its multimask or single
output afterwards, as the decoder itself does. The prompt encoder runs set by set, as in the
unbatched path; only the decoder sees the stacked batch, where float kernels may round a little
differently from an unbatched call (tests bound it).
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


def plan_calls(sets: Sequence[PromptSet], max_objects: int = 64) -> list[list[int]]:
    """Indices of ``sets`` per decoder call, in order: at most ``max_objects`` rows (objects) per call
    (a set with more rows than that gets a call of its own), so memory stays bounded."""
    if max_objects < 1:
        raise ValueError(f"max_objects: expected >= 1, got {max_objects}")
    calls: list[list[int]] = []
    rows = 0
    for i, s in enumerate(sets):
        if calls and rows + s.objects <= max_objects:
            calls[-1].append(i)
            rows += s.objects
        else:
            calls.append([i])
            rows = s.objects
    return calls


def decode_sets(model: Sam2Model, sets: Sequence[PromptSet], max_objects: int = 64) -> list[DecodedSet]:
    """Decode every set in the calls of :func:`plan_calls`; a call of one set is exactly the unbatched
    :meth:`Sam2Model.decode_masks`. Results come back in the order of ``sets``."""
    out: list[DecodedSet] = []
    with inference():
        for call in plan_calls(sets, max_objects):
            out.extend(decode_call(model, [sets[i] for i in call]))
    return out


def decode_call(model: Sam2Model, sets: Sequence[PromptSet]) -> list[DecodedSet]:
    """One mask-decoder call for all ``sets`` (no row cap; see :func:`decode_sets`)."""
    if len(sets) == 1:
        s = sets[0]
        levels = list(s.levels)
        low, ious, obj = model.decode_masks(levels[-1], levels[:-1] or None, s.points, s.mask, s.multimask_output)
        return [DecodedSet(low, ious, obj)]
    encoder, decoder = model.sam_prompt_encoder, model.sam_mask_decoder
    dtype = sets[0].levels[-1].dtype
    sparse, dense, per_level = [], [], []
    for s in sets:
        sp, de = encoder(s.points, None, s.mask)  # as decode_masks does, set by set
        sparse.append(sp.to(dtype))  # (B_i, N_i, C)
        dense.append(de.to(dtype))  # (B_i, C, h, w)
        per_level.append([level.expand(sp.shape[0], -1, -1, -1) for level in s.levels])  # (B_i, C, h', w')
    tokens, token_mask = _pad_tokens(sparse)
    stacked = [torch.cat(parts) for parts in zip(*per_level)]
    masks, ious, _, obj = decoder.predict_masks(
        stacked[-1],
        encoder.get_dense_pe(),
        tokens,
        torch.cat(dense),
        repeat_image=False,
        high_res_features=stacked[:-1] or None,
        sparse_mask=token_mask,
    )  # every mask token: (B, 4, 4h, 4w), (B, 4), (B, 1)
    sizes = [int(sp.shape[0]) for sp in sparse]
    out = []
    for s, m, i, o in zip(sets, masks.split(sizes), ious.split(sizes), obj.split(sizes)):
        m, i = decoder.select_outputs(m, i, s.multimask_output)
        out.append(DecodedSet(m, i, o))
    return out


def _pad_tokens(sparse: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sparse tokens (B_i, N_i, C) -> (sum B_i, max N_i, C) zero-padded, and the (sum B_i, max N_i)
    mask of real tokens (None when every set has the same count: nothing to mask)."""
    longest = max(int(sp.shape[1]) for sp in sparse)
    if all(int(sp.shape[1]) == longest for sp in sparse):
        return torch.cat(sparse), None
    padded, masks = [], []
    for sp in sparse:
        b, n, c = sp.shape
        padded.append(torch.cat((sp, sp.new_zeros(b, longest - n, c)), dim=1))
        mask = torch.zeros(b, longest, dtype=torch.bool, device=sp.device)
        mask[:, :n] = True
        masks.append(mask)
    return torch.cat(padded), torch.cat(masks)
