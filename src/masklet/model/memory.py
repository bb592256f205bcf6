"""Video memory: the memory encoder (frame + mask -> memory) and memory attention (frame <- memories)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .attention import RoPEAttention
from .common import LayerNorm2d, activation_fn, map_rows
from .config import MemoryAttentionConfig, MemoryEncoderConfig
from .gemm import Linear
from .position import PositionEmbeddingSine


class MemoryAttentionLayer(nn.Module):
    """Pre-norm layer: RoPE self-attention, RoPE cross-attention to memories, feed-forward.

    It runs in two halves (:meth:`attend_self`, then :meth:`attend_memory`) so that objects
    sharing a frame can share the first self-attention (see :class:`MemoryAttention`).
    """

    def __init__(self, config: MemoryAttentionConfig, d_model: int, kv_dim: int, feat_size: int) -> None:
        super().__init__()
        c = config
        sizes = (feat_size, feat_size)
        self.self_attn = RoPEAttention(
            d_model, c.num_heads, dropout=c.dropout, rope_theta=c.rope_theta, feat_sizes=sizes
        )
        self.cross_attn_image = RoPEAttention(
            d_model,
            c.num_heads,
            dropout=c.dropout,
            kv_in_dim=kv_dim,
            rope_theta=c.rope_theta,
            rope_k_repeat=c.rope_k_repeat,
            feat_sizes=sizes,
        )
        self.linear1 = Linear(d_model, c.dim_feedforward)
        self.dropout = nn.Dropout(c.dropout)
        self.linear2 = Linear(c.dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(c.dropout)
        self.dropout2 = nn.Dropout(c.dropout)
        self.dropout3 = nn.Dropout(c.dropout)
        self.activation = activation_fn(c.activation)
        self.pos_enc_at_attn = c.pos_enc_at_attn
        self.pos_enc_at_cross_attn_queries = c.pos_enc_at_cross_attn_queries
        self.pos_enc_at_cross_attn_keys = c.pos_enc_at_cross_attn_keys

    def attend_self(self, tgt: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        """The self-attention block (residual included)."""
        x = self.norm1(tgt)
        q = x + query_pos if self.pos_enc_at_attn else x
        return tgt + self.dropout1(self.self_attn(q, q, x))

    def attend_memory(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        pos: torch.Tensor,
        query_pos: torch.Tensor,
        num_k_exclude_rope: int = 0,
    ) -> torch.Tensor:
        """The cross-attention to memories and the feed-forward blocks (residuals included)."""
        x = self.norm2(tgt)
        x = self.cross_attn_image(
            x + query_pos if self.pos_enc_at_cross_attn_queries else x,
            memory + pos if self.pos_enc_at_cross_attn_keys else memory,
            memory,
            num_k_exclude_rope=num_k_exclude_rope,
        )
        tgt = tgt + self.dropout2(x)
        x = map_rows(lambda r: self.linear2(self.dropout(self.activation(self.linear1(self.norm3(r))))), tgt)
        return tgt + self.dropout3(x)


class MemoryAttention(nn.Module):
    """Conditions the current frame's features on memories and object pointers."""

    def __init__(self, config: MemoryAttentionConfig, d_model: int, kv_dim: int, feat_size: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            MemoryAttentionLayer(config, d_model, kv_dim, feat_size) for _ in range(config.num_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.pos_enc_at_input = config.pos_enc_at_input

    def forward(
        self,
        curr: torch.Tensor,
        memory: torch.Tensor,
        curr_pos: torch.Tensor,
        memory_pos: torch.Tensor,
        num_obj_ptr_tokens: int = 0,
    ) -> torch.Tensor:
        """Sequence-first inputs: curr (N, B, C), memory (M, B, C_mem); returns (N, B, C).

        ``curr`` (and ``curr_pos``) may have batch 1 for one frame shared by the B objects: the
        first self-attention then runs once instead of B times.
        """
        output = curr + 0.1 * curr_pos if self.pos_enc_at_input else curr
        output, curr_pos = output.transpose(0, 1), curr_pos.transpose(0, 1)
        # batch-first and contiguous once: every layer projects them (and reads them as values)
        memory, memory_pos = memory.transpose(0, 1).contiguous(), memory_pos.transpose(0, 1).contiguous()
        batch = memory.shape[0]
        layers: list[MemoryAttentionLayer] = list(self.layers)  # type: ignore[arg-type]  # nn.ModuleList is typed as holding Module
        for layer in layers:
            output = layer.attend_self(output, curr_pos)
            if output.shape[0] != batch:
                output, curr_pos = output.expand(batch, -1, -1), curr_pos.expand(batch, -1, -1)
            output = layer.attend_memory(output, memory, memory_pos, curr_pos, num_k_exclude_rope=num_obj_ptr_tokens)
        return self.norm(output).transpose(0, 1)


class MaskDownSampler(nn.Module):
    """Strided convs (with LayerNorm2d + GELU) taking a mask down by ``total_stride``."""

    def __init__(self, embed_dim: int, kernel_size: int, stride: int, padding: int, total_stride: int) -> None:
        super().__init__()
        num_layers = int(math.log2(total_stride) // math.log2(stride))
        if stride**num_layers != total_stride:
            raise ValueError(f"total_stride {total_stride} is not a power of stride {stride}")
        layers: list[nn.Module] = []
        chans = 1
        for _ in range(num_layers):
            out = chans * stride**2
            layers += [nn.Conv2d(chans, out, kernel_size, stride, padding), LayerNorm2d(out), nn.GELU()]
            chans = out
        layers.append(nn.Conv2d(chans, embed_dim, kernel_size=1))
        self.encoder = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


class CXBlock(nn.Module):
    """ConvNeXt block: depthwise conv, LayerNorm, pointwise MLP, layer scale, residual."""

    def __init__(
        self, dim: int, kernel_size: int, padding: int, layer_scale_init_value: float, use_dwconv: bool
    ) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=padding, groups=dim if use_dwconv else 1)
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.pwconv1 = Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = Linear(4 * dim, dim)
        self.gamma = nn.Parameter(layer_scale_init_value * torch.ones(dim)) if layer_scale_init_value > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = map_rows(self._pointwise, self.dwconv(x).permute(0, 2, 3, 1))
        if self.gamma is not None:
            y = self.gamma * y
        return x + y.permute(0, 3, 1, 2)

    def _pointwise(self, y: torch.Tensor) -> torch.Tensor:
        """Channels-last LayerNorm (the normalisation of LayerNorm2d) and the pointwise MLP."""
        y = F.layer_norm(y, y.shape[-1:], self.norm.weight, self.norm.bias, self.norm.eps)
        return self.pwconv2(self.pwconv1.forward_activated(y, self.act))


class Fuser(nn.Module):
    """A stack of CXBlocks."""

    def __init__(self, config: MemoryEncoderConfig, dim: int) -> None:
        super().__init__()
        c = config
        self.layers = nn.ModuleList(
            CXBlock(dim, c.fuser_kernel_size, c.fuser_padding, c.fuser_layer_scale_init_value, c.fuser_use_dwconv)
            for _ in range(c.fuser_num_layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    """Fuses pixel features with a downsampled mask into a memory map and its position encoding."""

    def __init__(self, config: MemoryEncoderConfig, in_dim: int) -> None:
        super().__init__()
        c = config
        self.mask_downsampler = MaskDownSampler(
            in_dim, c.mask_kernel_size, c.mask_stride, c.mask_padding, c.mask_total_stride
        )
        self.pix_feat_proj = nn.Conv2d(in_dim, in_dim, kernel_size=1)
        self.fuser = Fuser(c, in_dim)
        self.position_encoding = PositionEmbeddingSine(c.out_dim)
        self.out_proj = nn.Conv2d(in_dim, c.out_dim, kernel_size=1) if c.out_dim != in_dim else nn.Identity()

    def forward(
        self, pix_feat: torch.Tensor, masks: torch.Tensor, skip_mask_sigmoid: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """pix_feat (B, C, h, w), masks (B, 1, H, W) -> memory (B, C_mem, h, w) and its encoding."""
        if not skip_mask_sigmoid:
            masks = torch.sigmoid(masks)
        masks = self.mask_downsampler(masks)
        x = self.pix_feat_proj(pix_feat.to(masks.device)) + masks
        x = self.out_proj(self.fuser(x))
        return x, self.position_encoding(x).to(x.dtype)
