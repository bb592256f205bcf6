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
(differences are float rounding, ~1e-6). ``dtype=torch.bfloat16`` holds the image side (the
cached image tensors, the image tokens, the upscaling) in bfloat16 for oneDNN's bfloat16 GEMMs,
while the few prompt tokens, their small products, every softmax and the heads stay in float32
(at least): on a CPU those are faster there (bfloat16 element-wise passes and 8-row products cost
2-4x their float32 time) and they keep the masks closer to float32.
Mask prompts change the image tokens, so they are not handled here (the caller falls back).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .model import Sam2Model, gemm
from .model.attention import Attention
from .model.common import LayerNorm2d
from .model.gemm import flush_subnormals_, matmul
from .model.mask_decoder import MaskDecoder, TwoWayAttentionBlock

__all__ = ["DecoderImageCache", "FastMaskDecoder", "head_table", "untile_masks"]


@dataclass
class DecoderImageCache:
    """Image-only tensors of one image for :meth:`FastMaskDecoder.decode` (all batch 1).

    ``keys`` / ``key_pe``: (1, hw, C) image tokens (no-mask embedding added) and positions;
    ``k0`` (1, heads, d, hw) / ``v0`` (1, heads, hw, d): the first block's token-to-image keys
    (pre-scaled, transposed per head) and values; ``q0`` (1, hw, inner): its image-to-token queries
    (pre-scaled); ``feat_s1`` / ``feat_s0``: high-resolution features plus the upscaling biases in
    the tiled layout of the GEMM upscaling (the biases alone, broadcast, without high-res features).
    """

    keys: torch.Tensor
    key_pe: torch.Tensor
    k0: torch.Tensor
    v0: torch.Tensor
    q0: torch.Tensor
    feat_s1: torch.Tensor
    feat_s0: torch.Tensor
    hw: tuple[int, int]


@dataclass(frozen=True)
class _HeadWeights:
    """One attention's projections split per head, as the folded products read them.

    ``q`` / ``k`` / ``v``: (heads, d, C) rows of the input projections; ``o``: (heads, d, C) columns of
    the output projection; ``bq`` / ``bv``: (heads, 1, d) biases; ``bo_share``: output bias / heads.
    """

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    o: torch.Tensor
    bq: torch.Tensor
    bv: torch.Tensor
    bo_share: torch.Tensor
    heads: int
    scale: float


def _head_weights(attn: Attention) -> _HeadWeights:
    h, inner = attn.num_heads, attn.internal_dim
    d = inner // h

    def rows(lin: nn.Linear) -> torch.Tensor:
        return lin.weight.reshape(h, d, -1)

    return _HeadWeights(
        q=rows(attn.q_proj),
        k=rows(attn.k_proj),
        v=rows(attn.v_proj),
        o=attn.out_proj.weight.reshape(-1, h, d).permute(1, 2, 0).contiguous(),
        bq=attn.q_proj.bias.reshape(h, 1, d),
        bv=attn.v_proj.bias.reshape(h, 1, d),
        bo_share=attn.out_proj.bias / h,
        heads=h,
        scale=d**-0.5,
    )


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    b, n, c = x.shape
    return x.reshape(b, n, num_heads, c // num_heads).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def head_table(weight: torch.Tensor, positions: torch.Tensor, heads: int) -> torch.Tensor:
    """(H, d, N): a projection's ``weight`` (H*d, C), no bias, of ``positions`` (N, C), per head; added
    to scores through a view, it stands in for projecting keys + positions (no (N, C) sum formed)."""
    return (weight @ positions.t()).reshape(heads, -1, positions.shape[0]).contiguous()


def _token_to_image(
    attn: Attention, w: _HeadWeights, q_in: torch.Tensor, keys: torch.Tensor, pe_keys: torch.Tensor
) -> torch.Tensor:
    """Few tokens attend many image tokens, without projecting the image tokens.

    Scores: ``(q_h W_k,h) keys^T + q_h (W_k,h pe^T)`` (the key bias adds a per-query constant, which
    softmax ignores; ``pe_keys`` (H, d, hw) is the per-head table of the positions' keys, so no
    (hw, C) sum is formed); output: ``(P keys) W_v,h^T + b_v,h`` (softmax rows sum to one).
    (B, n, C) tokens, (B|1, hw, C) image tokens -> (B, n, C), out_proj included.
    """
    b, n, _ = q_in.shape
    q = _heads(attn.q_proj(q_in), w.heads) * w.scale  # (B, H, n, d)
    a = (q @ w.k).reshape(b, w.heads * n, -1).to(keys.dtype)  # (B, H*n, C)
    scores = matmul(a, keys.transpose(1, 2)).to(q.dtype)  # (B, H*n, hw)
    scores.view(b, w.heads, n, -1).add_(q @ pe_keys)
    p = flush_subnormals_(torch.softmax(scores, dim=-1))
    g = matmul(p.to(keys.dtype), keys).to(q.dtype).reshape(b, w.heads, n, -1)  # (B, H, n, C)
    return attn.out_proj(_merge(g @ w.v.transpose(1, 2) + w.bv))


def _image_to_token(
    w: _HeadWeights, scores: torch.Tensor, v_tokens: torch.Tensor, keys: torch.Tensor, keys_scratch: bool
) -> torch.Tensor:
    """``keys`` plus the image-to-token attention output, from (B, H*n, hw) scores and (B, H, n, d) values;
    ``keys_scratch``: ``keys`` is a temporary that may hold the result (not the cached tokens).

    The scores are token-major, so the softmax over a few tokens runs along whole rows of image
    tokens (PyTorch vectorises it there; over a last dimension of 8 it takes 4x longer). The
    output projection (bias shared over the heads, whose softmax rows each sum to one) is folded
    into the values, so the image side is one GEMM with the residual add: (B, hw, C).
    """
    b, _, hw = scores.shape
    h, n = v_tokens.shape[1], v_tokens.shape[2]
    p = flush_subnormals_(torch.softmax(scores.view(b, h, n, hw), dim=2, dtype=v_tokens.dtype)).to(keys.dtype)
    vw = (v_tokens @ w.o + w.bo_share).reshape(b, h * n, -1)  # (B, H*n, C)
    p = p.view(b, h * n, hw).transpose(1, 2)  # (B, hw, H*n), a view
    if keys.dtype is torch.float32 and gemm.float32_on_onednn():  # oneDNN's GEMM on a copy beats MKL's strided one
        return matmul(p.contiguous(), vw, keys, add_is_scratch=keys_scratch)
    # low precision (oneDNN) and MKL on Intel read the view in place (MKL: 0.79 against 1.0-1.2 ms with the copy)
    if gemm.accumulates_into(keys, keys_scratch, (b, hw, keys.shape[-1])):
        return keys.baddbmm_(p, vw.to(keys.dtype))  # no copy of the addend
    return torch.baddbmm(keys, p, vw.to(keys.dtype))


def _layer_norm(x: torch.Tensor, norm: nn.LayerNorm | LayerNorm2d) -> torch.Tensor:
    """``norm`` (a LayerNorm or LayerNorm2d over the last dim) of image tokens in the image side's
    dtype: float32 parameters as they are on a CPU (its mixed-dtype kernel), cast elsewhere."""
    weight: torch.Tensor = norm.weight
    bias: torch.Tensor = norm.bias
    if x.device.type != "cpu" and weight.dtype != x.dtype:
        weight, bias = weight.to(x.dtype), bias.to(x.dtype)
    return F.layer_norm(x, x.shape[-1:], weight, bias, norm.eps)


def _deconv_as_linear(conv: nn.ConvTranspose2d, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """A kernel-2 stride-2 transposed convolution as a (C_in, 4 C_out) matrix to (ky, kx, C_out) per
    input pixel, and its bias."""
    w = conv.weight  # (C_in, C_out, 2, 2)
    weight = w.permute(0, 2, 3, 1).reshape(w.shape[0], -1).to(dtype).contiguous()
    assert conv.bias is not None
    return weight, conv.bias.repeat(4)


class FastMaskDecoder:
    """Decodes clicks against cached image tensors; see the module docstring."""

    def __init__(self, model: Sam2Model, dtype: torch.dtype = torch.float32) -> None:
        decoder = model.sam_mask_decoder
        # the token side runs in float32 at least (a bfloat16 model's decoder is copied up)
        self.token_dtype = torch.promote_types(next(decoder.parameters()).dtype, torch.float32)
        if next(decoder.parameters()).dtype != self.token_dtype:
            decoder = copy.deepcopy(decoder).to(self.token_dtype)
        self.decoder: MaskDecoder = decoder
        self.dtype = dtype  # of the image side
        self.prompt_encoder = model.sam_prompt_encoder
        transformer = decoder.transformer
        self.layers: list[TwoWayAttentionBlock] = list(transformer.layers)  # type: ignore[arg-type]  # ModuleList iterates as Module
        if not self.layers or not self.layers[0].skip_first_layer_pe:
            raise ValueError("FastMaskDecoder expects the first two-way block to skip the query PE")
        up1, _, _, up2, _ = decoder.output_upscaling
        assert isinstance(up1, nn.ConvTranspose2d)
        assert isinstance(up2, nn.ConvTranspose2d)
        with torch.no_grad():
            self.up1 = _deconv_as_linear(up1, dtype)
            self.up2 = _deconv_as_linear(up2, dtype)
            self.t2i = [_head_weights(layer.cross_attn_token_to_image) for layer in self.layers]
            self.i2t = [_head_weights(layer.cross_attn_image_to_token) for layer in self.layers]
            self.final = _head_weights(transformer.final_attn_token_to_image)
        self._pe_tables: dict[tuple[int, tuple[int, int], torch.device], torch.Tensor] = {}

    # ------------------------------------------------------------------ image

    def prepare(self, image_embed: torch.Tensor, high_res: list[torch.Tensor] | None) -> DecoderImageCache:
        """Image-only work of one image: (1, C, h, w) embedding and the decoder's high-res features."""
        d = self.decoder
        h, w = image_embed.shape[-2:]
        dense = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        keys = (image_embed.to(dense.dtype) + dense).to(self.token_dtype).flatten(2).transpose(1, 2)
        key_pe = self.prompt_encoder.get_dense_pe().to(self.token_dtype).flatten(2).transpose(1, 2)
        first = self.layers[0]
        t2i, i2t = first.cross_attn_token_to_image, first.cross_attn_image_to_token
        kp = keys + key_pe
        low = self.dtype  # image-side tensors are computed in the decoder's dtype, then stored in this
        k0 = (_heads(t2i.k_proj(kp), t2i.num_heads) * self.t2i[0].scale).transpose(2, 3).to(low).contiguous()
        v0 = _heads(t2i.v_proj(keys), t2i.num_heads).to(low).contiguous()
        q0 = (i2t.q_proj(kp) * self.i2t[0].scale).to(low)
        keys, key_pe = keys.to(low).contiguous(), key_pe.to(low).contiguous()
        b1, b2 = self.up1[1], self.up2[1]
        hw = h * w
        if d.use_high_res_features:
            assert high_res is not None
            s0, s1 = (f.to(self.token_dtype) for f in high_res)
            c1, c0 = s1.shape[1], s0.shape[1]
            # (1, C, 2h, 2w) -> (1, h, w, ky, kx, C); (1, C, 4h, 4w) -> (1, h, w, ky, kx, ky2, kx2, C)
            feat_s1 = s1.reshape(1, c1, h, 2, w, 2).permute(0, 2, 4, 3, 5, 1).reshape(1, hw, 4 * c1) + b1
            feat_s0 = s0.reshape(1, c0, h, 2, 2, w, 2, 2).permute(0, 2, 5, 3, 6, 4, 7, 1).reshape(1, 4 * hw, 4 * c0)
            feat_s0 = feat_s0 + b2
        else:
            feat_s1 = b1.reshape(1, 1, -1).expand(1, hw, -1)
            feat_s0 = b2.reshape(1, 1, -1).expand(1, 4 * hw, -1)
        feat_s1, feat_s0 = feat_s1.to(low).contiguous(), feat_s0.to(low).contiguous()
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
        tokens = torch.cat((torch.cat(parts).unsqueeze(0).expand(batch, -1, -1), sparse.to(self.token_dtype)), dim=1)

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
        """The two-way transformer; returns tokens (B, N, C) and image tokens (B|1, hw, C).

        Image tokens are never projected: attention products are folded into (C, heads x tokens)
        matrices built from the few tokens (see :func:`_token_to_image`, :func:`_image_to_token`).
        """
        batch, n, _ = tokens.shape
        keys = cache.keys
        queries = tokens
        for index, layer in enumerate(self.layers):
            t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
            wt, wi = self.t2i[index], self.i2t[index]
            if layer.skip_first_layer_pe:
                queries = layer.self_attn(queries, queries, queries)
            else:
                q = queries + tokens
                queries = queries + layer.self_attn(q, q, queries)
            queries = layer.norm1(queries)
            if index == 0:  # cached keys / values of the image tokens
                q = _heads(t2i.q_proj(queries + tokens), wt.heads)
                p = flush_subnormals_(torch.softmax(q.to(self.dtype) @ cache.k0, dim=-1, dtype=q.dtype))
                attended = (p.to(self.dtype) @ cache.v0).to(q.dtype)  # (B, H, n, d)
                queries = layer.norm2(queries + t2i.out_proj(_merge(attended)))
            else:
                pe_keys = self._pe_table(cache, t2i.k_proj, wt.heads)
                queries = layer.norm2(queries + _token_to_image(t2i, wt, queries + tokens, keys, pe_keys))
            queries = layer.norm3(queries + layer.mlp(queries))
            k_tok = _heads(i2t.k_proj(queries + tokens), wi.heads)  # (B, H, n, d)
            v_tok = _heads(i2t.v_proj(queries), wi.heads)
            # scores (B, H*n, hw), token-major
            if index == 0:  # cached queries: block-diagonal keys, one (H*n, inner) x (inner, hw) GEMM
                blocks = k_tok.new_zeros(batch, wi.heads, n, wi.heads, k_tok.shape[-1])
                torch.diagonal(blocks, dim1=1, dim2=3).copy_(k_tok.permute(0, 2, 3, 1))
                scores = matmul(blocks.reshape(batch, wi.heads * n, -1).to(self.dtype), cache.q0.transpose(1, 2))
            else:  # queries folded: (W_q,h^T k_h) keys + k_h (W_q,h pe) + b_q,h . k_h
                ks = k_tok * wi.scale
                fold = (ks @ wi.q).reshape(batch, wi.heads * n, -1)  # (B, H*n, C)
                shift = (ks * wi.bq).sum(-1).reshape(batch, wi.heads * n, 1)
                scores = matmul(fold.to(self.dtype), keys.transpose(1, 2)).to(shift.dtype).add_(shift)
                scores.view(batch, wi.heads, n, -1).add_(ks @ self._pe_table(cache, i2t.q_proj, wi.heads))
            keys = _layer_norm(_image_to_token(wi, scores, v_tok, keys, keys is not cache.keys), layer.norm4)
        final = self.decoder.transformer.final_attn_token_to_image
        pe_keys = self._pe_table(cache, final.k_proj, self.final.heads)
        out = _token_to_image(final, self.final, queries + tokens, keys, pe_keys)
        return self.decoder.transformer.norm_final_attn(queries + out), keys

    def _pe_table(self, cache: DecoderImageCache, proj: nn.Linear, heads: int) -> torch.Tensor:
        """(H, d, hw): ``proj`` (no bias) of the image positions, per head, in the token dtype. The
        positions depend on the feature size only, so each table is made once per size."""
        key = (id(proj), cache.hw, cache.key_pe.device)
        table = self._pe_tables.get(key)
        if table is None:
            with torch.no_grad():
                table = head_table(proj.weight.to(self.token_dtype), cache.key_pe[0].to(self.token_dtype), heads)
            self._pe_tables[key] = table
        return table

    def _masks(self, cache: DecoderImageCache, keys: torch.Tensor, hyper: torch.Tensor) -> torch.Tensor:
        """Upscale image tokens with GEMMs in the tiled layout, then the hypernetwork product.

        (B|1, hw, C) tokens and (B, M, C/8) hypernetwork outputs -> (B, M, 4h, 4w) logits. The
        high-resolution features (biases included) enter as the GEMMs' addends.
        """
        d = self.decoder
        _, norm, act1, _, act2 = d.output_upscaling
        b = hyper.shape[0]
        h, w = cache.hw
        x = matmul(keys, self.up1[0][None], cache.feat_s1)
        if x.shape[0] != b:
            x = x.expand(b, -1, -1)
        x = x.reshape(b, h * w * 4, -1)
        assert isinstance(norm, LayerNorm2d)
        assert isinstance(act1, nn.GELU)
        assert isinstance(act2, nn.GELU)
        x = torch.ops.aten.gelu_(_layer_norm(x, norm), approximate=act1.approximate)
        x = matmul(x.reshape(b, h * w * 4, -1), self.up2[0][None], cache.feat_s0)
        x = torch.ops.aten.gelu_(x, approximate=act2.approximate)
        masks = matmul(hyper.to(x.dtype), x.reshape(b, h * w * 16, -1).transpose(1, 2))  # (B, M, tiled pixels)
        return untile_masks(masks, h, w)


#: An integer as wide as two elements of each dtype, to move pairs of them as one element.
_PAIR_DTYPES = {torch.bfloat16: torch.int32, torch.float16: torch.int32, torch.float32: torch.int64}


def untile_masks(masks: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, M, 16 h w) logits in the tiled order of the GEMM upscaling, (y, x, ky, kx, ky2, kx2), ->
    (B, M, 4h, 4w) at (4y + 2ky + ky2, 4x + 2kx + kx2).

    Each kx2 pair is adjacent on both sides, so it moves as one element of twice the width: a copy
    whose innermost runs are two elements long takes about 10x longer.
    """
    b, m = masks.shape[:2]
    pair = _PAIR_DTYPES.get(masks.dtype)
    if pair is None or not masks.is_contiguous():
        tiles = masks.reshape(b, m, h, w, 2, 2, 2, 2).permute(0, 1, 2, 4, 6, 3, 5, 7)
        return tiles.reshape(b, m, 4 * h, 4 * w)
    tiles = masks.view(pair).reshape(b, m, h, w, 2, 2, 2).permute(0, 1, 2, 4, 6, 3, 5)
    return tiles.reshape(b, m, 4 * h, 2 * w).view(masks.dtype)
