"""Mask decoder for repeated clicks on one image: the image-side work is done once per image.

The SAM2 mask decoder spends most of a click on 4096 image tokens. Part of that depends on the
image alone: the image tokens plus the no-mask embedding, the dense positional encoding, and in
the first two-way block the keys / values of token-to-image attention and the queries of
image-to-token attention. :class:`FastMaskDecoder` computes those once per image
(:meth:`FastMaskDecoder.prepare`) and then decodes each click from them. It also runs the two
transposed convolutions as plain GEMMs in a tiled token-major layout (the cached high-resolution
features are stored in that layout), so no layout copies happen until the final low-resolution
masks, and only the mask tokens whose masks are returned go through the hypernetwork product.

The float32 path computes the same function as :class:`masklet.model.mask_decoder.MaskDecoder`
(differences are float rounding, ~1e-6); ``dtype=torch.bfloat16`` runs the whole click in
bfloat16 on a bfloat16 copy of the decoder weights (oneDNN's bfloat16 GEMMs), returning float32.
Mask prompts change the image tokens, so they are not handled here (the caller falls back).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .model import Sam2Model
from .model.attention import Attention
from .model.common import LayerNorm2d
from .model.mask_decoder import MaskDecoder, TwoWayAttentionBlock

__all__ = ["DecoderImageCache", "FastMaskDecoder"]


@dataclass
class DecoderImageCache:
    """Image-only tensors of one image for :meth:`FastMaskDecoder.decode` (all batch 1).

    ``keys`` / ``key_pe``: (1, hw, C) image tokens (no-mask embedding added) and positions;
    ``k0`` / ``v0`` / ``q0``: (1, heads, hw, d) first-block projections; ``feat_s1`` /
    ``feat_s0``: high-resolution features in the tiled layout of the GEMM upscaling, or None.
    """

    keys: torch.Tensor
    key_pe: torch.Tensor
    k0: torch.Tensor
    v0: torch.Tensor
    q0: torch.Tensor
    feat_s1: torch.Tensor | None
    feat_s0: torch.Tensor | None
    hw: tuple[int, int]


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    b, n, c = x.shape
    return x.reshape(b, n, num_heads, c // num_heads).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def _attention(attn: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``attn`` on already projected (B, heads, N, d) q / k / v, output projection included."""
    if k.shape[0] != q.shape[0]:
        k, v = k.expand(q.shape[0], -1, -1, -1), v.expand(q.shape[0], -1, -1, -1)
    return attn.out_proj(_merge(F.scaled_dot_product_attention(q, k, v)))


def _deconv_as_linear(conv: nn.ConvTranspose2d) -> tuple[torch.Tensor, torch.Tensor]:
    """A kernel-2 stride-2 transposed convolution as a linear map to (ky, kx, C_out) per input pixel."""
    w = conv.weight  # (C_in, C_out, 2, 2)
    weight = w.permute(2, 3, 1, 0).reshape(-1, w.shape[0]).contiguous()
    assert conv.bias is not None
    return weight, conv.bias.repeat(4)


class FastMaskDecoder:
    """Decodes clicks against cached image tensors; see the module docstring."""

    def __init__(self, model: Sam2Model, dtype: torch.dtype = torch.float32) -> None:
        decoder = model.sam_mask_decoder
        if dtype != next(decoder.parameters()).dtype:
            decoder = copy.deepcopy(decoder).to(dtype)
        self.decoder: MaskDecoder = decoder
        self.dtype = dtype
        self.prompt_encoder = model.sam_prompt_encoder
        transformer = decoder.transformer
        self.layers: list[TwoWayAttentionBlock] = list(transformer.layers)  # type: ignore[arg-type]  # ModuleList iterates as Module
        if not self.layers or not self.layers[0].skip_first_layer_pe:
            raise ValueError("FastMaskDecoder expects the first two-way block to skip the query PE")
        up1, _, _, up2, _ = decoder.output_upscaling
        assert isinstance(up1, nn.ConvTranspose2d)
        assert isinstance(up2, nn.ConvTranspose2d)
        with torch.no_grad():
            self.up1 = _deconv_as_linear(up1)
            self.up2 = _deconv_as_linear(up2)
            # layer >= 1: token->image keys and image->token queries read the same input: one GEMM
            self.kq = [
                (
                    torch.cat(
                        (layer.cross_attn_token_to_image.k_proj.weight, layer.cross_attn_image_to_token.q_proj.weight)
                    ),
                    torch.cat(
                        (layer.cross_attn_token_to_image.k_proj.bias, layer.cross_attn_image_to_token.q_proj.bias)
                    ),
                )
                for layer in self.layers
            ]

    # ------------------------------------------------------------------ image

    def prepare(self, image_embed: torch.Tensor, high_res: list[torch.Tensor] | None) -> DecoderImageCache:
        """Image-only work of one image: (1, C, h, w) embedding and the decoder's high-res features."""
        d = self.decoder
        h, w = image_embed.shape[-2:]
        dense = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        keys = (image_embed.to(dense.dtype) + dense).to(self.dtype).flatten(2).transpose(1, 2).contiguous()
        key_pe = self.prompt_encoder.get_dense_pe().to(self.dtype).flatten(2).transpose(1, 2).contiguous()
        first = self.layers[0]
        t2i, i2t = first.cross_attn_token_to_image, first.cross_attn_image_to_token
        kp = keys + key_pe
        k0 = _heads(t2i.k_proj(kp), t2i.num_heads)
        v0 = _heads(t2i.v_proj(keys), t2i.num_heads)
        q0 = _heads(i2t.q_proj(kp), i2t.num_heads)
        feat_s1 = feat_s0 = None
        if d.use_high_res_features:
            assert high_res is not None
            s0, s1 = (f.to(self.dtype) for f in high_res)
            c1, c0 = s1.shape[1], s0.shape[1]
            # (1, C, 2h, 2w) -> (1, h, w, ky, kx, C); (1, C, 4h, 4w) -> (1, h, w, ky, kx, ky2, kx2, C)
            feat_s1 = s1.reshape(1, c1, h, 2, w, 2).permute(0, 2, 4, 3, 5, 1).reshape(1, -1, c1)
            feat_s0 = s0.reshape(1, c0, h, 2, 2, w, 2, 2).permute(0, 2, 5, 3, 6, 4, 7, 1).reshape(1, -1, c0)
        return DecoderImageCache(keys, key_pe, k0, v0, q0, feat_s1, feat_s0, (h, w))

    # ----------------------------------------------------------------- clicks

    def decode(
        self, cache: DecoderImageCache, sparse: torch.Tensor, multimask_output: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, N, C) sparse prompt tokens -> float32 mask logits (B, M, 4h, 4w), IoU (B, M), object logits (B, 1).

        Same outputs as ``Sam2Model.decode_masks`` without a mask prompt.
        """
        d = self.decoder
        parts = [d.iou_token.weight, d.mask_tokens.weight]
        if d.pred_obj_scores:
            parts.insert(0, d.obj_score_token.weight)
        first = 1 if d.pred_obj_scores else 0
        batch = sparse.shape[0]
        tokens = torch.cat((torch.cat(parts).unsqueeze(0).expand(batch, -1, -1), sparse.to(self.dtype)), dim=1)

        queries, keys = self._transformer(cache, tokens)
        iou_pred = d.iou_prediction_head(queries[:, first])
        mask_tokens_out = queries[:, first + 1 : first + 1 + d.num_mask_tokens]
        if multimask_output:
            wanted = list(range(1, d.num_mask_tokens))
        elif d.dynamic_multimask_via_stability:
            wanted = list(range(d.num_mask_tokens))
        else:
            wanted = [0]
        hyper = torch.stack([d.output_hypernetworks_mlps[i](mask_tokens_out[:, i]) for i in wanted], dim=1)
        masks = self._masks(cache, keys, hyper).float()
        iou_pred = iou_pred.float()
        if multimask_output:
            iou_pred = iou_pred[:, 1:]
        elif d.dynamic_multimask_via_stability:
            masks, iou_pred = d.select_stable(masks, iou_pred)
        else:
            iou_pred = iou_pred[:, 0:1]
        if d.pred_obj_scores:
            object_logits = d.pred_obj_score_head(queries[:, 0]).float()
        else:
            object_logits = 10.0 * iou_pred.new_ones(batch, 1)
        return masks, iou_pred, object_logits

    def _transformer(self, cache: DecoderImageCache, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two-way transformer; returns tokens (B, N, C) and image tokens (B, hw, C)."""
        batch = tokens.shape[0]
        key_pe = cache.key_pe
        keys = cache.keys.expand(batch, -1, -1)
        queries = tokens
        for index, layer in enumerate(self.layers):
            t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
            if layer.skip_first_layer_pe:
                queries = layer.self_attn(queries, queries, queries)
            else:
                q = queries + tokens
                queries = queries + layer.self_attn(q, q, queries)
            queries = layer.norm1(queries)
            if index == 0:
                k_t2i, v_t2i, q_i2t = cache.k0, cache.v0, cache.q0
            else:
                kp = keys + key_pe
                kq = F.linear(kp, *self.kq[index])
                k_t2i = _heads(kq[..., : t2i.internal_dim], t2i.num_heads)
                q_i2t = _heads(kq[..., t2i.internal_dim :], i2t.num_heads)
                v_t2i = _heads(t2i.v_proj(keys), t2i.num_heads)
            q_t2i = _heads(t2i.q_proj(queries + tokens), t2i.num_heads)
            queries = layer.norm2(queries + _attention(t2i, q_t2i, k_t2i, v_t2i))
            queries = layer.norm3(queries + layer.mlp(queries))
            q = queries + tokens
            k_i2t, v_i2t = _heads(i2t.k_proj(q), i2t.num_heads), _heads(i2t.v_proj(queries), i2t.num_heads)
            if q_i2t.shape[0] != batch:
                q_i2t = q_i2t.expand(batch, -1, -1, -1)
            keys = layer.norm4(keys + i2t.out_proj(_merge(F.scaled_dot_product_attention(q_i2t, k_i2t, v_i2t))))
        final = self.decoder.transformer.final_attn_token_to_image
        out = final(queries + tokens, keys + key_pe, keys)
        return self.decoder.transformer.norm_final_attn(queries + out), keys

    def _masks(self, cache: DecoderImageCache, keys: torch.Tensor, hyper: torch.Tensor) -> torch.Tensor:
        """Upscale image tokens with GEMMs in the tiled layout, then the hypernetwork product.

        (B, hw, C) tokens and (B, M, C/8) hypernetwork outputs -> (B, M, 4h, 4w) logits.
        """
        d = self.decoder
        _, norm, act1, _, act2 = d.output_upscaling
        b = keys.shape[0]
        h, w = cache.hw
        x = F.linear(keys, *self.up1).reshape(b, h * w * 4, -1)  # (B, h*w*ky*kx, C/4)
        if cache.feat_s1 is not None:
            x = x + cache.feat_s1
        assert isinstance(norm, LayerNorm2d)
        x = act1(F.layer_norm(x, x.shape[-1:], norm.weight, norm.bias, norm.eps))
        x = F.linear(x, *self.up2).reshape(b, h * w * 16, -1)  # (B, h*w*ky*kx*ky2*kx2, C/8)
        if cache.feat_s0 is not None:
            x = x + cache.feat_s0
        x = act2(x)
        masks = hyper @ x.transpose(1, 2)  # (B, M, tiled pixels)
        m = masks.shape[1]
        # tiled (y, x, ky, kx, ky2, kx2) -> (4y + 2ky + ky2, 4x + 2kx + kx2)
        masks = masks.reshape(b, m, h, w, 2, 2, 2, 2).permute(0, 1, 2, 4, 6, 3, 5, 7)
        return masks.reshape(b, m, 4 * h, 4 * w)
