"""Export wrappers of the video step: memory attention over a bank (temporal encodings included),
the memory encoder, the no-memory embedding of first frames and the mask-prompt downsampler."""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ..model import Sam2Model
from ..model.attention import RoPEAttention
from ..model.memory import CXBlock, MemoryAttentionLayer
from ..model.position import axial_rope_angles, sine_1d


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Axial RoPE of (B, heads, G, n, d) grids by (n, d/2) tables: pairs of channels turn by an angle."""
    shape = x.shape
    pairs = x.reshape(shape[0], shape[1], shape[2], shape[3], -1, 2)
    a, b = pairs[..., 0], pairs[..., 1]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).reshape(shape)


class MemoryAttentionExport(nn.Module):
    """Memory attention over raw bank entries: spatial memories of whole frames with their slot
    (``maskmem_tpos_enc`` is added here) and object pointers with their relative frame distance
    (sine encoding, ``obj_ptr_tpos_proj`` and the split into memory-width tokens happen here).
    ``curr`` may have batch 1 (one frame shared by B objects)."""

    rope_cos: torch.Tensor
    rope_sin: torch.Tensor

    def __init__(self, model: Sam2Model) -> None:
        super().__init__()
        self.model = model
        self.attention = model.memory_attention
        self.hw = model.config.embedding_size**2
        first = cast(MemoryAttentionLayer, self.attention.layers[0]).self_attn
        head_dim = first.internal_dim // first.num_heads
        e = model.config.embedding_size
        angles = torch.view_as_real(axial_rope_angles(head_dim, e, e, first.rope_theta))
        self.register_buffer("rope_cos", angles[..., 0].contiguous(), persistent=False)
        self.register_buffer("rope_sin", angles[..., 1].contiguous(), persistent=False)

    def _attend(
        self,
        attn: RoPEAttention,
        q: torch.Tensor,
        k_spatial: torch.Tensor,
        k_ptr: torch.Tensor | None,
        v: torch.Tensor,
    ) -> torch.Tensor:
        """RoPEAttention.forward with real rotations (queries: one grid; keys: grids then pointers)."""
        heads = attn.num_heads

        def split(x: torch.Tensor) -> torch.Tensor:
            b, n, ch = x.shape
            return x.reshape(b, n, heads, ch // heads).transpose(1, 2)

        q = split(attn.q_proj(q))
        bq, hq, nq, d = q.shape
        q = _rotate(q.reshape(bq, hq, 1, nq, d), self.rope_cos, self.rope_sin).reshape(bq, hq, nq, d)
        # keys projected together, so that no reshape sees an empty pointer set (ORT refuses those)
        k = split(attn.k_proj(k_spatial if k_ptr is None else torch.cat((k_spatial, k_ptr), dim=1)))
        bk, hk, _, _ = k.shape
        nk = k_spatial.shape[1]
        ks = _rotate(k[:, :, :nk].reshape(bk, hk, -1, self.hw, d), self.rope_cos, self.rope_sin)
        ks = ks.reshape(bk, hk, nk, d)
        k = ks if k_ptr is None else torch.cat((ks, k[:, :, nk:]), dim=2)
        out = F.scaled_dot_product_attention(q, k, split(attn.v_proj(v)))
        b, h, n, dd = out.shape
        return attn.out_proj(out.transpose(1, 2).reshape(b, n, h * dd))

    def _pointer_tokens(self, obj_ptrs: torch.Tensor, rel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(P, B, hidden) pointers and (P,) relative distances -> (P * split, B, mem) tokens and positions."""
        m, c = self.model, self.model.config
        p, b = obj_ptrs.shape[0], obj_ptrs.shape[1]
        split = max(1, c.hidden_dim // c.mem_dim)
        if c.add_tpos_enc_to_obj_ptrs:
            tpos_dim = c.hidden_dim if c.proj_tpos_enc_in_obj_ptrs else c.mem_dim
            pos = m.obj_ptr_tpos_proj(sine_1d(rel, tpos_dim))  # (P, mem)
        else:
            pos = rel[:, None] * torch.zeros(1, c.mem_dim)
        tokens = obj_ptrs.reshape(p, b, split, c.mem_dim).permute(0, 2, 1, 3).reshape(p * split, b, c.mem_dim)
        pos = pos[:, None, None, :].expand(p, split, b, c.mem_dim).reshape(p * split, b, c.mem_dim)
        return tokens, pos

    def forward(
        self,
        curr: torch.Tensor,
        curr_pos: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        memory_slots: torch.Tensor,
        obj_ptrs: torch.Tensor,
        obj_ptr_rel_pos: torch.Tensor,
    ) -> torch.Tensor:
        ma, c = self.attention, self.model.config
        batch = memory.shape[1]
        tpos = self.model.maskmem_tpos_enc[memory_slots]  # (F, 1, 1, mem): the slot of each frame
        memory_pos = (memory_pos.reshape(-1, self.hw, batch, c.mem_dim) + tpos).reshape(-1, batch, c.mem_dim)
        ptr, ptr_pos = self._pointer_tokens(obj_ptrs, obj_ptr_rel_pos)
        output = curr + 0.1 * curr_pos if ma.pos_enc_at_input else curr
        output, curr_pos = output.transpose(0, 1), curr_pos.transpose(0, 1)
        mem, mem_pos = memory.transpose(0, 1), memory_pos.transpose(0, 1)
        ptr, ptr_pos = ptr.transpose(0, 1), ptr_pos.transpose(0, 1)
        all_mem = torch.cat((mem, ptr), dim=1)
        for module in ma.layers:
            layer = cast(MemoryAttentionLayer, module)
            x = layer.norm1(output)
            q = x + curr_pos if layer.pos_enc_at_attn else x
            output = output + self._attend(layer.self_attn, q, q, None, x)
            output = output.expand(batch, -1, -1)
            curr_pos = curr_pos.expand(batch, -1, -1)
            x = layer.norm2(output)
            q = x + curr_pos if layer.pos_enc_at_cross_attn_queries else x
            if layer.pos_enc_at_cross_attn_keys:
                k_sp, k_ptr = mem + mem_pos, ptr + ptr_pos
            else:
                k_sp, k_ptr = mem, ptr
            output = output + self._attend(layer.cross_attn_image, q, k_sp, k_ptr, all_mem)
            x = layer.linear2(layer.activation(layer.linear1(layer.norm3(output))))
            output = output + x
        out = ma.norm(output)  # (B, hw, C)
        e = c.embedding_size
        return out.transpose(1, 2).reshape(batch, -1, e, e)


class MemoryEncoderExport(nn.Module):
    """Frame features (B, C, h, w) + high-res mask logits (B, 1, S, S) -> memory and its position.

    ``binarize`` (1,) is 1 to encode the mask as (logits > 0) (masks from clicks, when the model
    says so) and 0 to encode sigmoid(logits).
    """

    def __init__(self, model: Sam2Model) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        pix_feat: torch.Tensor,
        mask_logits: torch.Tensor,
        object_score_logits: torch.Tensor,
        binarize: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        m, c = self.model, self.model.config
        bin_ = binarize.reshape(1, 1, 1, 1)
        mask = bin_ * (mask_logits > 0).float() + (1 - bin_) * torch.sigmoid(mask_logits)
        if c.sigmoid_scale_for_mem_enc != 1.0:
            mask = mask * c.sigmoid_scale_for_mem_enc
        if c.sigmoid_bias_for_mem_enc != 0.0:
            mask = mask + c.sigmoid_bias_for_mem_enc
        enc = m.memory_encoder
        x = enc.pix_feat_proj(pix_feat) + enc.mask_downsampler(mask)
        for module in enc.fuser.layers:  # CXBlock.forward with a constant LayerNorm shape
            block = cast(CXBlock, module)
            y = block.dwconv(x).permute(0, 2, 3, 1)
            y = F.layer_norm(y, (block.dwconv.out_channels,), block.norm.weight, block.norm.bias, block.norm.eps)
            y = block.pwconv2(block.act(block.pwconv1(y)))
            if block.gamma is not None:
                y = block.gamma * y
            x = x + y.permute(0, 3, 1, 2)
        features = enc.out_proj(x)
        position = enc.position_encoding(features).to(features.dtype)
        if c.no_obj_embed_spatial:
            absent = 1 - (object_score_logits > 0).float()
            features = features + absent[..., None, None] * m.no_obj_embed_spatial[..., None, None]
        return features, position


class NoMemoryExport(nn.Module):
    """Features (B, C, h, w) of a frame without memory (an image, a first frame) + the no-memory embedding."""

    def __init__(self, model: Sam2Model) -> None:
        super().__init__()
        self.model = model

    def forward(self, vision_features: torch.Tensor) -> torch.Tensor:
        return vision_features + self.model.no_mem_embed.reshape(1, -1, 1, 1)


class MaskPromptExport(nn.Module):
    """A given mask (B, 1, S, S) -> the decoder's mask prompt (mask_downsample), and the no-object pointer.

    For ``use_mask_as_output``: a video frame prompted with a mask instead of clicks.
    """

    def __init__(self, model: Sam2Model) -> None:
        super().__init__()
        self.model = model

    def forward(self, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.model
        no_obj = m.no_obj_ptr if m.config.pred_obj_scores else torch.zeros(1, m.config.hidden_dim)
        return m.mask_downsample(mask), no_obj + mask[:1, 0, 0, :1] * 0
