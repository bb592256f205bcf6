"""How an exemplar query is decoded: from a click at the prototype's best match, or through memory
attention over the bank; plus the no-memory features and mask prototypes both modes need."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..model import Sam2Model
from ..model.common import to_maps, to_sequence
from ..model.position import sine_1d
from ..model.sam2 import NO_OBJ_SCORE, SamOutput
from ..transforms import upscale_masks
from .bank import Bank


@dataclass
class ImageState:
    """One encoded image: its pixel key (to reuse features), size and feature levels."""

    key: bytes
    hw: tuple[int, int]
    levels: list[torch.Tensor]  # (1, C, h, w) finest first
    positions: list[torch.Tensor]


def no_memory(model: Sam2Model, state: ImageState) -> torch.Tensor:
    """The features of an image decoded without memory, as SAM2 decodes a first frame."""
    raw = state.levels[-1]
    h, w = raw.shape[-2:]
    seq = to_sequence(raw)
    pos = to_sequence(state.positions[-1])
    return model.condition_on_memory(0, True, seq, pos, (h, w), None, None)  # type: ignore[arg-type]  # no memory: the model's no-memory path takes None


def prototypes(state: ImageState, low_res: torch.Tensor) -> list[torch.Tensor | None]:
    """Mean finest-level feature under each (B, 1, h, w) mask logit map > 0, as (1, C0); None if empty."""
    fine = state.levels[0]
    inside = upscale_masks(low_res, fine.shape[-2:])[:, 0] > 0
    out: list[torch.Tensor | None] = []
    for m in inside:
        count = int(m.sum())
        out.append(None if count == 0 else (fine[0].float() * m).sum(dim=(1, 2))[None].div(count).to(fine.dtype))
    return out


def decode_by_prototype(
    model: Sam2Model, bank: Bank, state: ImageState, ids: list[int]
) -> tuple[SamOutput, torch.Tensor]:
    """Decode each object without memory from a click at its prototype's most similar place;
    returns the SAM output and each object's peak cosine similarity (-1 without a prototype)."""
    fine = state.levels[0][0].float()  # (C0, h0, w0)
    h0, w0 = fine.shape[-2:]
    prototypes, known = [], []
    for obj_id in ids:
        own = [m.prototype for m in bank.memories[obj_id] if m.prototype is not None]
        known.append(bool(own))
        prototypes.append(torch.cat(own).float().mean(0) if own else fine.new_zeros(fine.shape[0]))
    sims = F.normalize(torch.stack(prototypes), dim=1) @ F.normalize(fine.flatten(1), dim=0)  # (N, h0 * w0)
    peak, where = sims.max(dim=1)
    known_t = torch.tensor(known, device=peak.device)
    peak = torch.where(known_t, peak, torch.full_like(peak, -1.0))
    size = model.image_size
    xs = ((where % w0).float() + 0.5) * (size / w0)
    ys = ((where // w0).float() + 0.5) * (size / h0)
    n = len(ids)
    point_inputs = {
        "point_coords": torch.stack([xs, ys], dim=-1)[:, None].to(state.levels[-1].dtype),
        "point_labels": torch.ones(n, 1, dtype=torch.int32, device=peak.device),
    }
    features = no_memory(model, state).expand(n, -1, -1, -1)
    high_res = None if len(state.levels) == 1 else [f.expand(n, -1, -1, -1) for f in state.levels[:-1]]
    sam = model.forward_sam_heads(features, point_inputs, None, high_res, False)
    if not all(known):  # an object whose masks were all empty has nothing to look for
        sam.low_res_masks[~known_t] = NO_OBJ_SCORE
    return sam, peak


def decode_by_memory(
    model: Sam2Model, bank: Bank, state: ImageState, ids: list[int], object_pointers: bool, multimask: bool
) -> SamOutput:
    """Memory attention over each object's memories (and, with ``object_pointers``, its examples'
    pointers), then the SAM heads with no prompt (``multimask``: the best of three masks)."""
    c = model.config
    h, w = state.levels[-1].shape[-2:]
    vision = to_sequence(state.levels[-1])  # (hw, 1, C)
    vision_pos = to_sequence(state.positions[-1])
    pos = to_sequence(bank.position_encoding()) + model.maskmem_tpos_enc[c.num_maskmem - 1]  # (hw, 1, Cm)
    # Objects with as many memories share one batched memory attention call.
    groups: dict[tuple[int, int], list[int]] = {}
    for i, obj_id in enumerate(ids):
        memories = bank.memories[obj_id]
        pointers = sum(m.obj_ptr is not None for m in memories) if object_pointers else 0
        groups.setdefault((len(memories), pointers), []).append(i)
    fused = torch.empty(len(ids), c.hidden_dim, h, w, dtype=state.levels[-1].dtype, device=model.device)
    attn_dtype = model.memory_attention.norm.weight.dtype
    for (count, pointers), members in groups.items():
        batch = len(members)
        memory = torch.stack(
            [
                torch.cat([m.features for m in bank.memories[ids[i]]]).flatten(2).permute(0, 2, 1).flatten(0, 1)
                for i in members
            ],
            dim=1,
        )  # (count * hw, B, Cm), memories in bank order
        memory_pos = pos.repeat(count, 1, 1).expand(-1, batch, -1)
        num_ptr_tokens = 0
        if pointers:
            tokens, tokens_pos = pointer_tokens(model, bank, [ids[i] for i in members])
            memory, memory_pos = torch.cat([memory, tokens]), torch.cat([memory_pos, tokens_pos])
            num_ptr_tokens = tokens.shape[0]
        out = model.memory_attention(
            curr=vision.to(attn_dtype),
            memory=memory.to(attn_dtype),
            curr_pos=vision_pos.to(attn_dtype),
            memory_pos=memory_pos.to(attn_dtype),
            num_obj_ptr_tokens=num_ptr_tokens,
        )
        out = out.to(fused.dtype).expand(-1, batch, -1) if out.shape[1] == 1 else out.to(fused.dtype)
        fused[members] = to_maps(out, (h, w))
    n = len(ids)
    high_res = None if len(state.levels) == 1 else [f.expand(n, -1, -1, -1) for f in state.levels[:-1]]
    return model.forward_sam_heads(fused, None, None, high_res, multimask)


def pointer_tokens(model: Sam2Model, bank: Bank, obj_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Object pointers of the objects' examples as memory tokens (P * split, B, C_mem), each
    placed one frame before the query (as a video's last conditioning frame)."""
    c = model.config
    ptrs = torch.stack(
        [torch.cat([m.obj_ptr for m in bank.memories[i] if m.obj_ptr is not None]) for i in obj_ids], dim=1
    )  # (P, B, C)
    count, batch = ptrs.shape[:2]
    if c.add_tpos_enc_to_obj_ptrs:
        tpos_dim = c.hidden_dim if c.proj_tpos_enc_in_obj_ptrs else c.mem_dim
        rel = torch.ones(count, device=ptrs.device) / max(c.max_obj_ptrs_in_encoder - 1, 1)
        pos = model.obj_ptr_tpos_proj(sine_1d(rel, tpos_dim).to(model.dtype)).unsqueeze(1).expand(-1, batch, c.mem_dim)
    else:
        pos = ptrs.new_zeros(count, batch, c.mem_dim)
    if c.mem_dim < c.hidden_dim:
        split = c.hidden_dim // c.mem_dim
        ptrs = ptrs.reshape(count, batch, split, c.mem_dim).permute(0, 2, 1, 3).flatten(0, 1)
        pos = pos.repeat_interleave(split, dim=0)
    return ptrs, pos
