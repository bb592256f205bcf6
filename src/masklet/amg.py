"""Automatic mask generation: segment everything in an image from a grid of point prompts.

:class:`MaskGenerator` is masklet's version of the official ``SAM2AutomaticMaskGenerator``: the
same options with the same defaults, the same records in the same order, and the
``min_mask_region_area`` clean-up of the first Segment Anything really applied. It gets there
with much less work:

* the mask decoder runs on the whole grid with the work that does not depend on the prompt done
  once per crop, and with the attention projections of the image tokens folded into the few
  prompt tokens (the same algebra, far fewer flops);
* the predicted-IoU filter needs no masks: the decoder's last attention first runs for the IoU
  token alone, and the mask tokens and the mask upscaling only run for prompts with at least
  one mask above ``pred_iou_thresh``;
* stability scores and boxes are computed exactly, but from the low-resolution logits: a
  full-resolution pixel is a bilinear blend of four low-resolution logits, so every pixel of a
  low-resolution cell whose four corners are all clearly above (or all clearly below) a
  threshold is decided at once and only cells straddling a threshold are evaluated pixel by
  pixel. Full-resolution masks are only built for the masks that survive every filter.

Full-resolution logits are evaluated with PyTorch's bilinear formula (``align_corners=False``,
the source indices and weights of ``F.interpolate``) in float32; a value can differ from
``F.interpolate``'s in the last bit (as its own CPU kernels differ from each other and from
CUDA), which only matters for a pixel whose logit lies within a few ulps of a threshold.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import product
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InvalidInputError
from .io import ImageSource, load_image
from .masks import (
    batched_nms,
    encode_rle,
    encode_uncompressed_rle,
    fill_holes_and_remove_sprinkles,
    masks_to_boxes,
    remove_small_regions,
)
from .model import Sam2Model
from .precision import inference
from .transforms import preprocess, to_model_coords

__all__ = [
    "OUTPUT_MODES",
    "MaskGenerator",
    "build_all_layer_point_grids",
    "build_point_grid",
    "generate_crop_boxes",
]

#: Accepted values of ``output_mode``.
OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")

#: Distance (in pixels) under which a box edge counts as touching a crop or image edge.
_EDGE_TOLERANCE = 20.0
#: On a CPU, prompts are decoded (and their masks upscaled) a few at a time, so that the
#: per-prompt image tokens (4 MB each for a 1024 px model) stay in cache: that beats larger
#: batches there. GPUs take ``points_per_batch`` prompts at once.
_CPU_DECODE_BYTES = 16 << 20
_CPU_UPSCALE_BYTES = 24 << 20
#: Masks whose stability and box are computed together (bounds the memory of the cell maps).
_MASK_CHUNK = 32
#: A mask is evaluated in full when its straddling cells hold more than this share of its pixels
#: (noisy masks); smooth masks only evaluate the cells along their contours.
_CELL_WORK_LIMIT = 0.3
#: Below this many output pixels masks are always evaluated in full.
_CELL_MIN_PIXELS = 1 << 18
#: Elements per row block when logits are evaluated in full (keeps the passes in cache).
_FULL_BLOCK_ELEMENTS = 1 << 17


# ---------------------------------------------------------------------------------------------
# grids and crops (same values as the official sam2.utils.amg)
# ---------------------------------------------------------------------------------------------


def build_point_grid(n_per_side: int) -> np.ndarray:
    """(n*n, 2) points evenly spaced in [0, 1]^2, x fastest: the centres of an n x n grid."""
    offset = 1 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    xs = np.tile(side[None, :], (n_per_side, 1))
    ys = np.tile(side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> list[np.ndarray]:
    """One grid per crop layer, with ``n_per_side / scale_per_layer**i`` points per side in layer i."""
    return [build_point_grid(int(n_per_side / (scale_per_layer**i))) for i in range(n_layers + 1)]


def generate_crop_boxes(
    im_size: tuple[int, int], n_layers: int, overlap_ratio: float
) -> tuple[list[list[int]], list[int]]:
    """XYXY crop boxes and their layer: the whole image, then (2**i)**2 overlapping crops in layer i."""
    im_h, im_w = im_size
    short_side = min(im_h, im_w)
    boxes, layers = [[0, 0, im_w, im_h]], [0]

    def crop_len(orig_len: int, n_crops: int, overlap: int) -> int:
        return math.ceil((overlap * (n_crops - 1) + orig_len) / n_crops)

    for i_layer in range(n_layers):
        n_crops_per_side = 2 ** (i_layer + 1)
        overlap = int(overlap_ratio * short_side * (2 / n_crops_per_side))
        crop_w = crop_len(im_w, n_crops_per_side, overlap)
        crop_h = crop_len(im_h, n_crops_per_side, overlap)
        x0s = [int((crop_w - overlap) * i) for i in range(n_crops_per_side)]
        y0s = [int((crop_h - overlap) * i) for i in range(n_crops_per_side)]
        for x0, y0 in product(x0s, y0s):
            boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
            layers.append(i_layer + 1)
    return boxes, layers


# ---------------------------------------------------------------------------------------------
# the grid decoder
# ---------------------------------------------------------------------------------------------


class _GridDecoder:
    """The SAM mask decoder for many single-point prompts on one image, sharing work between them.

    Same function as ``MaskDecoder`` (within float rounding), organised for a grid of prompts:

    * the first two-way block's projections of the image tokens do not depend on the prompt
      (without a mask prompt), so they are computed once per image;
    * attention between the ~8 prompt tokens and the 4096 image tokens never projects the image
      tokens: the queries (or keys) are pulled back through the projection instead, and the
      image->token output projection is applied to the 8 values before mixing;
    * the second block's image tokens are LN(shared + low rank): its projections come from
      per-image tables and small per-prompt products (see :meth:`_prepare_second_block`);
    * the final token->image attention runs per token, first for the IoU token only;
    * masks are upscaled only on request, in a channels-last layout (each transposed 2x2
      convolution is a per-token matrix product).
    """

    def __init__(self, model: Sam2Model, levels: list[torch.Tensor]) -> None:
        self.model = model
        dec = self.dec = model.sam_mask_decoder
        pe = model.sam_prompt_encoder
        image = levels[-1]  # (1, C, h, w), no-memory embedding included
        self.dtype = image.dtype
        self.hw = tuple(image.shape[-2:])
        self.high_res = list(levels[:-1])
        self.key_pe = pe.get_dense_pe().to(image.dtype).flatten(2).transpose(1, 2)  # (1, N, C)
        self.image = image.flatten(2).transpose(1, 2)  # (1, N, C)
        self.keys0 = self.image + pe.no_mask_embed.weight.to(image.dtype)[:, None, :]
        layer0 = dec.transformer.layers[0]
        both = self.keys0 + self.key_pe
        t2i, i2t = layer0.cross_attn_token_to_image, layer0.cross_attn_image_to_token
        self.t2i_k = _split_heads(t2i.k_proj(both), t2i.num_heads)  # (1, H, N, d)
        self.t2i_v = _split_heads(t2i.v_proj(self.keys0), t2i.num_heads)
        self.i2t_q = _split_heads(i2t.q_proj(both), i2t.num_heads)[0]  # (H, N, d)
        self._pe_tables: dict[int, torch.Tensor] = {}
        layers = dec.transformer.layers
        self.factored = len(layers) >= 2 and layers[0].skip_first_layer_pe and not layers[1].skip_first_layer_pe
        if self.factored:
            self._prepare_second_block(layer0, dec.transformer.layers[1])
        parts = [dec.iou_token.weight, dec.mask_tokens.weight]
        if dec.pred_obj_scores:
            parts.insert(0, dec.obj_score_token.weight)
        self.first = 1 if dec.pred_obj_scores else 0  # index of the IoU token
        self.output_tokens = torch.cat(parts).to(image.dtype)
        self._upscaling_ready = False

    def _prepare_second_block(self, layer0, layer1) -> None:
        """Per-image products for the second block, whose image tokens are LN(keys0 + A^T M).

        With K1 = g * (Y - mu) * rstd + beta and Y = keys0 + A^T M (A: the first block's
        image->token attention, M: its projected values), every projection of K1 splits into
        a product with the shared keys0 (computed here once) and small per-prompt terms."""
        norm = layer0.norm4
        self.g, self.beta = norm.weight, norm.bias
        k0g = (self.keys0 * self.g)[0]  # (N, C)
        pe = self.key_pe[0]
        t2i, i2t = layer1.cross_attn_token_to_image, layer1.cross_attn_image_to_token

        def heads(x: torch.Tensor, h: int) -> torch.Tensor:  # (N, H*d) -> (H, d, N)
            return x.t().reshape(h, -1, x.shape[0]).contiguous()

        ht, hi = t2i.num_heads, i2t.num_heads
        self.f_zk = heads(k0g @ t2i.k_proj.weight.t(), ht)
        self.f_pk = heads(pe @ t2i.k_proj.weight.t(), ht)
        self.f_zv = heads(k0g @ t2i.v_proj.weight.t(), ht).transpose(1, 2).contiguous()  # (H, N, d)
        self.f_v_const = t2i.v_proj.weight @ self.beta + t2i.v_proj.bias  # (Ci,)
        self.f_v_g = t2i.v_proj.weight @ self.g  # (Ci,)
        self.f_zq = heads(k0g @ i2t.q_proj.weight.t(), hi)
        self.f_pq = heads(pe @ i2t.q_proj.weight.t(), hi)

    def chunk(self, points_per_batch: int, upscale: bool) -> int:
        """Prompts to decode (or upscale) at once: ``points_per_batch``, fewer on a CPU."""
        if self.keys0.device.type != "cpu":
            return points_per_batch
        n, c = self.keys0.shape[1:]
        size = self.keys0.element_size()
        if upscale:  # the two upscaled feature maps of a prompt (4N x C/4 and 16N x C/8 values)
            per_prompt, budget = 3 * n * c * size, _CPU_UPSCALE_BYTES
        else:
            per_prompt, budget = n * c * size, _CPU_DECODE_BYTES
        return max(1, min(points_per_batch, budget // per_prompt))

    # ---------------------------------------------------------------- transformer

    def decode(self, coords: torch.Tensor, labels: torch.Tensor, mask_input: torch.Tensor | None) -> tuple[torch.Tensor, _Decoded]:
        """IoU predictions (B, M) of all mask tokens, and the state :meth:`masks` needs."""
        pe = self.model.sam_prompt_encoder
        sparse, dense = pe((coords, labels), None, mask_input)
        b = sparse.shape[0]
        tokens = torch.cat((self.output_tokens.unsqueeze(0).expand(b, -1, -1), sparse.to(self.dtype)), 1)
        shared = mask_input is None
        tr = self.dec.transformer
        if shared and self.factored:
            queries, keys = self._first_blocks(tr.layers[0], tr.layers[1], tokens)
            start = 2
        else:
            keys = self.keys0 if shared else self.image + dense.to(self.dtype).flatten(2).transpose(1, 2)
            queries, start = tokens, 0
        for i in range(start, len(tr.layers)):
            queries, keys = self._block(tr.layers[i], queries, keys, tokens, shared and i == 0)
        # Each token attends to the image on its own in the last attention, and only the IoU
        # token decides whether a prompt needs masks: the mask tokens wait for masks().
        state = _Decoded(queries, tokens, keys)
        iou = self.dec.iou_prediction_head(self._final_tokens(state, [self.first])[:, 0])
        return iou, state

    def _final_tokens(self, state: _Decoded, rows: Sequence[int]) -> torch.Tensor:
        """Outputs (B, len(rows), C) of the final token->image attention for token ``rows``."""
        tr = self.dec.transformer
        q = state.queries[:, rows]
        out = self._token_to_image(tr.final_attn_token_to_image, q + state.tokens[:, rows], state.keys, None)
        return tr.norm_final_attn(q + out)

    def _block(self, layer, q, k, qpe, shared: bool):
        if layer.skip_first_layer_pe:
            q = layer.self_attn(q, q, q)
        else:
            x = q + qpe
            q = q + layer.self_attn(x, x, q)
        q = layer.norm1(q)
        kk = None
        if shared:
            out = self._token_to_image_shared(layer.cross_attn_token_to_image, q + qpe)
        else:
            kk = k + self.key_pe
            out = self._token_to_image(layer.cross_attn_token_to_image, q + qpe, k, kk)
        q = layer.norm2(q + out)
        q = layer.norm3(q + layer.mlp(q))
        if shared:
            x = self._mix(k, *self._image_to_token_shared(layer.cross_attn_image_to_token, q + qpe, q))
        else:
            x = self._image_to_token(layer.cross_attn_image_to_token, kk, k, q + qpe, q)
        return q, layer.norm4(x)

    def _first_blocks(self, layer0, layer1, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The first two blocks without a mask prompt (shared image tokens)."""
        q = layer0.norm1(layer0.self_attn(tokens, tokens, tokens))  # skip_first_layer_pe
        q = layer0.norm2(q + self._token_to_image_shared(layer0.cross_attn_token_to_image, q + tokens))
        q = layer0.norm3(q + layer0.mlp(q))
        weights, rows = self._image_to_token_shared(layer0.cross_attn_image_to_token, q + tokens, q)
        a = torch.cat((weights, weights.new_ones(weights.shape[0], 1, weights.shape[2])), 1)  # (B, R, N)
        # (B, N, C); baddbmm with a broadcast input would copy it twice
        y = self.keys0.expand(a.shape[0], -1, -1).contiguous().baddbmm_(a.transpose(1, 2), rows)
        norm = layer0.norm4
        k1, mu, rstd = torch.native_layer_norm(y, (y.shape[-1],), norm.weight, norm.bias, norm.eps)
        stats = (a, rows, mu.transpose(1, 2), rstd.transpose(1, 2))  # mu, rstd: (B, 1, N)
        x = q + tokens
        q = layer1.norm1(q + layer1.self_attn(x, x, q))
        q = layer1.norm2(q + self._token_to_image_factored(layer1.cross_attn_token_to_image, q + tokens, stats))
        q = layer1.norm3(q + layer1.mlp(q))
        weights, rows1 = self._image_to_token_factored(layer1.cross_attn_image_to_token, q + tokens, q, stats)
        ones = weights.new_ones(weights.shape[0], 1, weights.shape[2])
        x = k1.baddbmm_(torch.cat((weights, ones), 1).transpose(1, 2), rows1)  # k1 is not needed anymore
        return q, layer1.norm4(x)

    def _pe_table(self, attn) -> torch.Tensor:
        """(H, d, N): the key projection (no bias) of the image positional encoding, per head."""
        key = id(attn)
        if key not in self._pe_tables:
            proj = self.key_pe[0] @ attn.k_proj.weight.t()  # (N, H*d)
            self._pe_tables[key] = proj.t().reshape(attn.num_heads, -1, proj.shape[0]).contiguous()
        return self._pe_tables[key]

    @staticmethod
    def _per_head(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """x (B, T, H, d) against a per-head table (H, d, N) -> (B, H*T, N)."""
        b, t, h, d = x.shape
        out = torch.bmm(x.permute(2, 0, 1, 3).reshape(h, b * t, d), table)  # (H, B*T, N)
        return out.view(h, b, t, -1).transpose(0, 1).reshape(b, h * t, -1)

    def _factored_scores(self, x: torch.Tensor, w: torch.Tensor, zt: torch.Tensor, pt: torch.Tensor, stats) -> tuple:
        """x (B, T, H, d) . (W_h (K1_n + pe_n)) for all n -> (B, H*T, N), plus the pulled-back x."""
        a, rows, mu, rstd = stats
        b, t, h, d = x.shape
        xw = torch.einsum("bthd,hdc->bhtc", x, w.reshape(h, d, -1))  # x pulled back to model width
        xg = (xw * self.g).reshape(b, h * t, -1)
        low_rank = torch.bmm(torch.bmm(xg, rows.transpose(1, 2)), a)  # (B, HT, N)
        scores = low_rank.add_(self._per_head(x, zt)).sub_(mu * xg.sum(-1, keepdim=True)).mul_(rstd)
        return scores.add_(self._per_head(x, pt)), xw.reshape(b, h * t, -1)

    def _token_to_image_factored(self, attn, q_in: torch.Tensor, stats) -> torch.Tensor:
        a, rows, mu, rstd = stats
        b, t, _ = q_in.shape
        h = attn.num_heads
        q = attn.q_proj(q_in)
        d = q.shape[-1] // h
        q = q.view(b, t, h, d)
        scores, _ = self._factored_scores(q, attn.k_proj.weight, self.f_zk, self.f_pk, stats)
        p = scores.mul_(1.0 / math.sqrt(d)).softmax(-1).mul_(rstd)  # (B, HT, N), scaled by rstd
        n = p.shape[-1]
        # sum_n p_n W_v,h K1_n = sum_n p_n rstd_n W_v,h (g (keys0_n + A_n^T M - mu_n)) + W_v beta
        out = torch.bmm(p.view(b, h, t, n).transpose(0, 1).reshape(h, b * t, n), self.f_zv)  # (H, BT, d)
        out = out.view(h, b, t, d).permute(1, 2, 0, 3)
        mv = ((rows * self.g) @ attn.v_proj.weight.t()).view(b, -1, h, d)  # (B, R, H, d)
        pa = torch.bmm(p, a.transpose(1, 2)).view(b, h, t, -1)  # (B, H, T, R)
        out = out + torch.einsum("bhtr,brhd->bthd", pa, mv)
        pm = (p * mu).sum(-1).view(b, h, t).transpose(1, 2)  # (B, T, H)
        out = out - pm[..., None] * self.f_v_g.view(h, d) + self.f_v_const.view(h, d)
        return attn.out_proj(out.reshape(b, t, h * d))

    def _image_to_token_factored(self, attn, k_in: torch.Tensor, v_in: torch.Tensor, stats):
        b, t, _ = k_in.shape
        h = attn.num_heads
        k = attn.k_proj(k_in)
        d = k.shape[-1] // h
        k = k.view(b, t, h, d)
        v = attn.v_proj(v_in).view(b, t, h, d)
        scores, kw = self._factored_scores(k, attn.q_proj.weight, self.f_zq, self.f_pq, stats)
        # (W_q K1_n + b_q) . k = ... + beta . (W_q^T k) + b_q . k: constant in n, not across tokens
        const = (kw * self.beta).sum(-1, keepdim=True)
        const = const + torch.einsum("bthd,hd->bht", k, attn.q_proj.bias.view(h, d)).reshape(b, h * t, 1)
        n = scores.shape[-1]
        weights = scores.add_(const).mul_(1.0 / math.sqrt(d)).view(b, h, t, n).softmax(2).view(b, h * t, n)
        return weights, self._value_rows(attn, v)

    def _token_to_image_shared(self, attn, q_in: torch.Tensor) -> torch.Tensor:
        b, t, _ = q_in.shape
        h = attn.num_heads
        q = attn.q_proj(q_in)
        d = q.shape[-1] // h
        q = q.reshape(b * t, h, d).transpose(0, 1).unsqueeze(0)  # all prompts' tokens as one sequence
        out = F.scaled_dot_product_attention(q, self.t2i_k, self.t2i_v)[0]  # (H, B*T, d)
        return attn.out_proj(out.transpose(0, 1).reshape(b, t, h * d))

    def _token_to_image(self, attn, q_in: torch.Tensor, k: torch.Tensor, kk: torch.Tensor | None) -> torch.Tensor:
        """Attention of the tokens over image tokens ``k`` (values) with keys ``kk`` = k + pe
        (``kk=None``: the pe part is taken from a per-image table instead of adding it)."""
        b, t, c = q_in.shape
        h = attn.num_heads
        q = attn.q_proj(q_in)
        d = q.shape[-1] // h
        # q . (W_k x + b_k) = (q W_k) . x + const: the constant drops out of the softmax.
        q4 = q.reshape(b, t, h, d)
        qw = torch.einsum("bthd,hdc->bhtc", q4, attn.k_proj.weight.reshape(h, d, c))
        if kk is None:
            scores = torch.bmm(qw.reshape(b, h * t, c), k.transpose(1, 2))
            scores.add_(self._per_head(q4, self._pe_table(attn)))
        else:
            scores = torch.bmm(qw.reshape(b, h * t, c), kk.transpose(1, 2))
        scores.mul_(1.0 / math.sqrt(d))
        mixed = torch.bmm(scores.softmax(-1), k).reshape(b, h, t, c)  # softmax rows sum to 1
        out = torch.einsum("bhtc,hdc->bthd", mixed, attn.v_proj.weight.reshape(h, d, c))
        out = out + attn.v_proj.bias.reshape(h, d)
        return attn.out_proj(out.reshape(b, t, h * d))

    @staticmethod
    def _value_rows(attn, v: torch.Tensor) -> torch.Tensor:
        """Values (B, T, H, d) through the output projection: (B, H*T + 1, C), the bias last."""
        b, t, h, d = v.shape
        wo = attn.out_proj.weight.reshape(-1, h, d).permute(1, 2, 0)  # (H, d, C)
        rows = torch.einsum("bthd,hdc->bhtc", v, wo).reshape(b, h * t, -1)
        return torch.cat((rows, attn.out_proj.bias.to(rows.dtype).expand(b, 1, -1)), 1)

    @staticmethod
    def _mix(base: torch.Tensor, weights: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """base + weights^T rows, with weights (B, HT, N) and a row of ones added for the bias."""
        ones = weights.new_ones(weights.shape[0], 1, weights.shape[2])
        return torch.baddbmm(base, torch.cat((weights, ones), 1).transpose(1, 2), rows)

    def _image_to_token_shared(self, attn, k_in: torch.Tensor, v_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention weights (B, H*T, N) of the shared image tokens over the prompt tokens, and
        the projected values (B, H*T + 1, C)."""
        b, t, _ = k_in.shape
        h = attn.num_heads
        k = attn.k_proj(k_in)
        d = k.shape[-1] // h
        k = k.reshape(b * t, h, d).transpose(0, 1)  # (H, B*T, d)
        v = attn.v_proj(v_in).reshape(b, t, h, d)
        n = self.i2t_q.shape[1]
        scores = torch.bmm(k, self.i2t_q.transpose(1, 2)).mul_(1.0 / math.sqrt(d))  # (H, B*T, N)
        weights = scores.view(h, b, t, n).softmax(2).transpose(0, 1).reshape(b, h * t, n)
        return weights, self._value_rows(attn, v)

    def _image_to_token(self, attn, kk: torch.Tensor, k0: torch.Tensor, k_in: torch.Tensor, v_in: torch.Tensor) -> torch.Tensor:
        b, t, c = k_in.shape
        h = attn.num_heads
        k = attn.k_proj(k_in)
        d = k.shape[-1] // h
        k = k.reshape(b, t, h, d)
        v = attn.v_proj(v_in).reshape(b, t, h, d)
        # (W_q x + b_q) . k = x . (W_q^T k) + b_q . k
        kw = torch.einsum("bthd,hdc->bhtc", k, attn.q_proj.weight.reshape(h, d, c)).reshape(b, h * t, c)
        const = torch.einsum("bthd,hd->bht", k, attn.q_proj.bias.reshape(h, d)).reshape(b, h * t, 1)
        scores = torch.baddbmm(const, kw, kk.transpose(1, 2)).mul_(1.0 / math.sqrt(d))  # (B, HT, N)
        n = kk.shape[1]
        weights = scores.view(b, h, t, n).softmax(2).view(b, h * t, n)
        return self._mix(k0, weights, self._value_rows(attn, v))

    # ---------------------------------------------------------------- masks

    def _prepare_upscaling(self) -> None:
        dec = self.dec
        self._channels_last = bool(dec.use_high_res_features)
        if self._channels_last:
            h, w = self.hw
            up1, _, _, up2, _ = dec.output_upscaling
            c1, c2 = up1.out_channels, up2.out_channels
            # ConvTranspose2d(k=2, s=2): output (2y+dy, 2x+dx) = W[:, :, dy, dx]^T token(y, x) + b
            self.w1 = up1.weight.permute(0, 2, 3, 1).reshape(up1.in_channels, 4 * c1)
            self.w2 = up2.weight.permute(0, 2, 3, 1).reshape(c1, 4 * c2)
            s0, s1 = self.high_res
            s1 = s1[0].view(c1, h, 2, w, 2).permute(1, 3, 2, 4, 0).reshape(1, h * w, 4 * c1)
            self.bias1 = (s1 + up1.bias.repeat(4)).contiguous()
            s0 = s0[0].view(c2, h, 2, 2, w, 2, 2).permute(1, 4, 2, 5, 3, 6, 0).reshape(1, 4 * h * w, 4 * c2)
            self.bias2 = (s0 + up2.bias.repeat(4)).contiguous()
            self.c1, self.c2 = c1, c2
        self._upscaling_ready = True

    def masks(self, state: _Decoded, which: Sequence[int]) -> torch.Tensor:
        """Low-resolution logits (B, len(which), 4h, 4w) of the mask tokens ``which``."""
        if not self._upscaling_ready:
            self._prepare_upscaling()
        dec = self.dec
        keys = state.keys
        b = keys.shape[0]
        h, w = self.hw
        mask_tokens = self._final_tokens(state, [self.first + 1 + i for i in which])
        hyper = torch.stack([dec.output_hypernetworks_mlps[i](mask_tokens[:, j]) for j, i in enumerate(which)], 2)
        k = hyper.shape[-1]
        if self._channels_last:
            _, norm, act1, _, act2 = dec.output_upscaling
            n = h * w
            u = torch.matmul(keys, self.w1).add_(self.bias1)  # (B, N, 4*c1), order (y, x, dy, dx, c)
            u = act1(F.layer_norm(u.view(b, 4 * n, self.c1), (self.c1,), norm.weight, norm.bias, norm.eps))
            u = torch.matmul(u, self.w2).add_(self.bias2)  # (B, 4N, 4*c2)
            u = act2(u).view(b, 16 * n, self.c2)
            m = torch.bmm(hyper.transpose(1, 2), u.transpose(1, 2))  # (B, K, 16N), pixels (y, x, dy, dx, dy2, dx2)
            return m.view(b, k, h, w, 2, 2, 2, 2).permute(0, 1, 2, 4, 6, 3, 5, 7).reshape(b, k, 4 * h, 4 * w)
        src = keys.transpose(1, 2).reshape(b, -1, h, w)
        up = dec.output_upscaling(src)
        c = up.shape[1]
        return (hyper.transpose(1, 2) @ up.reshape(b, c, -1)).reshape(b, k, *up.shape[-2:])


@dataclass
class _Decoded:
    """Decoder state of B prompts before the final attention: token queries and their
    positional part (B, T, C), image tokens (B, N, C)."""

    queries: torch.Tensor
    tokens: torch.Tensor
    keys: torch.Tensor

    def __getitem__(self, index) -> _Decoded:
        return _Decoded(self.queries[index], self.tokens[index], self.keys[index])

    def __len__(self) -> int:
        return self.keys.shape[0]


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, c = x.shape
    return x.reshape(b, n, heads, c // heads).transpose(1, 2)


# ---------------------------------------------------------------------------------------------
# exact full-resolution statistics from low-resolution logits
# ---------------------------------------------------------------------------------------------


def _linear_map(n_in: int, n_out: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Source indices i0, i1 and weights w0, w1 of each output position (align_corners=False).

    The source coordinate is computed as PyTorch's CPU kernel does, with one rounding
    (``fma(scale, i + 0.5, -0.5)`` in float32, ``scale = float32(n_in / n_out)``).
    """
    if n_in == n_out:
        idx = torch.arange(n_out, device=device)
        return idx, idx, torch.ones(n_out, device=device), torch.zeros(n_out, device=device)
    scale = np.float32(n_in) / np.float32(n_out)
    src = (np.float64(scale) * (np.arange(n_out, dtype=np.float64) + 0.5) - 0.5).astype(np.float32)
    src = np.maximum(src, np.float32(0.0))
    i0 = np.minimum(src.astype(np.int64), n_in - 1)
    w1 = (src - i0.astype(np.float32)).astype(np.float32)
    w0 = (np.float32(1.0) - w1).astype(np.float32)
    i1 = np.where(i0 < n_in - 1, i0 + 1, i0)
    return tuple(torch.from_numpy(a).to(device) for a in (i0, i1, w0, w1))


class _Upsampler:
    """Bilinear upsampling of (n, h, w) logits to (H, W), and exact statistics of it.

    ``evaluate`` gives the full logits; ``stats`` gives, for thresholds t, the number of pixels
    above each t and the box of the pixels above ``box_t`` without building full masks: every
    output pixel lies in one low-resolution cell (its two source rows and columns), whose four
    corner logits bound it, so a cell is decided at once unless it straddles a threshold; only
    straddling cells are evaluated, with exactly the arithmetic of ``evaluate``.
    """

    def __init__(self, in_hw: tuple[int, int], out_hw: tuple[int, int], device: torch.device) -> None:
        (h, w), (H, W) = in_hw, out_hw
        self.in_hw, self.out_hw = (h, w), (H, W)
        self.y0, self.y1, self.wy0, self.wy1 = _linear_map(h, H, device)
        self.x0, self.x1, self.wx0, self.wx1 = _linear_map(w, W, device)
        # output rows / columns of each cell row / column (i0 is non-decreasing)
        self.row_start, self.row_count = _runs(self.y0, h)
        self.col_start, self.col_count = _runs(self.x0, w)
        self.max_rows = int(self.row_count.max())
        self.max_cols = int(self.col_count.max())
        self.cell_size = self.row_count[:, None] * self.col_count[None, :]  # (h, w) int64

    def _top(self, logits: torch.Tensor) -> torch.Tensor:
        """Horizontal pass: (n, h, w) -> (n, h, W)."""
        return logits.index_select(2, self.x0) * self.wx0 + logits.index_select(2, self.x1) * self.wx1

    def _rows(self, top: torch.Tensor, r0: int, r1: int) -> torch.Tensor:
        """Vertical pass for output rows r0:r1: (n, r1 - r0, W)."""
        y0, y1 = self.y0[r0:r1], self.y1[r0:r1]
        return top.index_select(1, y0) * self.wy0[r0:r1, None] + top.index_select(1, y1) * self.wy1[r0:r1, None]

    def _row_block(self, n: int) -> int:
        return max(1, _FULL_BLOCK_ELEMENTS // max(1, n * self.out_hw[1]))

    def evaluate(self, logits: torch.Tensor) -> torch.Tensor:
        """(n, h, w) -> (n, H, W) float32 logits."""
        return self._rows(self._top(logits), 0, self.out_hw[0])

    def binary(self, logits: torch.Tensor, threshold: float) -> torch.Tensor:
        """(n, h, w) -> (n, H, W) bool, logits > threshold (row blocks, same values as evaluate)."""
        top = self._top(logits)
        H = self.out_hw[0]
        step = self._row_block(logits.shape[0])
        return torch.cat([self._rows(top, r, min(r + step, H)) > threshold for r in range(0, H, step)], 1)

    def stats(self, logits: torch.Tensor, thresholds: Sequence[float], box_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Counts (n, len(thresholds)) int64 of pixels > t, and the XYXY int64 box (n, 4) of
        pixels > thresholds[box_index] ([0, 0, 0, 0] if none), for (n, h, w) logits.

        Masks with few straddling cells go through the cells; noisy ones are evaluated in full."""
        n = logits.shape[0]
        dev = logits.device
        pixels = self.out_hw[0] * self.out_hw[1]
        if pixels < _CELL_MIN_PIXELS:  # small crops: evaluating everything is cheaper
            return self._full_stats(logits, thresholds, box_index)
        a = logits
        b = torch.cat((logits[:, :, 1:], logits[:, :, -1:]), 2)  # corner (r, c + 1), clamped
        c = torch.cat((logits[:, 1:], logits[:, -1:]), 1)  # corner (r + 1, c)
        d = torch.cat((c[:, :, 1:], c[:, :, -1:]), 2)
        lo = torch.minimum(torch.minimum(a, b), torch.minimum(c, d))
        hi = torch.maximum(torch.maximum(a, b), torch.maximum(c, d))
        # float32 rounding of the blend stays far below 1e-6 of the corners' magnitude
        slack = (a.abs() + b.abs()).add_(c.abs()).add_(d.abs()).mul_(1e-6)
        has_pixels = self.cell_size > 0
        on_cells, unsure_cells = [], []
        for t in thresholds:
            margin = slack + (abs(t) * 1e-6 + 1e-30)
            on = lo > margin.add(t)
            unsure = (hi >= margin.neg_().add_(t)) & ~on & has_pixels
            on_cells.append(on)
            unsure_cells.append(unsure)
        any_unsure = unsure_cells[0]
        for u in unsure_cells[1:]:
            any_unsure = any_unsure | u
        work = any_unsure.flatten(1).sum(1) * (self.max_rows * self.max_cols)
        full = work > _CELL_WORK_LIMIT * pixels
        counts = torch.zeros(n, len(thresholds), dtype=torch.int64, device=dev)
        boxes = torch.zeros(n, 4, dtype=torch.int64, device=dev)
        if bool(full.any()):
            idx = torch.nonzero(full, as_tuple=True)[0]
            counts[idx], boxes[idx] = self._full_stats(logits[idx], thresholds, box_index)
        cells = torch.nonzero(~full, as_tuple=True)[0]
        if cells.numel():
            def sub(x):
                return x[cells]
            counts[cells], boxes[cells] = self._cell_stats(
                sub(a), sub(b), sub(c), sub(d), [sub(x) for x in on_cells], [sub(x) for x in unsure_cells],
                sub(any_unsure), thresholds, box_index,
            )
        return counts, boxes

    def _full_stats(self, logits, thresholds, box_index):
        n = logits.shape[0]
        H, W = self.out_hw
        top = self._top(logits)
        counts = torch.zeros(n, len(thresholds), dtype=torch.int64, device=logits.device)
        rows = torch.zeros(n, H, dtype=torch.bool, device=logits.device)
        cols = torch.zeros(n, W, dtype=torch.bool, device=logits.device)
        for i in range(n):  # one mask at a time: row blocks stay large and in cache
            one = top[i : i + 1]
            step = self._row_block(1)
            for r in range(0, H, step):
                values = self._rows(one, r, min(r + step, H))[0]
                for k, t in enumerate(thresholds):
                    above = values > t
                    counts[i, k] += above.sum()
                    if k == box_index:
                        rows[i, r : r + step] = above.any(1)
                        cols[i] |= above.any(0)
        return counts, _flags_to_boxes(rows, cols)

    def _cell_stats(self, a, b, c, d, on_cells, unsure_cells, any_unsure, thresholds, box_index):
        n = a.shape[0]
        dev = a.device
        counts = torch.zeros(n, len(thresholds), dtype=torch.int64, device=dev)
        # cell sizes are separable: rows per cell row x columns per cell column (exact in float64)
        row_count = self.row_count.to(torch.float64)
        col_count = self.col_count.to(torch.float32)
        for k, on in enumerate(on_cells):
            per_row = (on.to(torch.float32) @ col_count).to(torch.float64)  # (n, h), < 2**24
            counts[:, k] = (per_row @ row_count).round().to(torch.int64)
        on_box = on_cells[box_index]
        rows = (on_box & (self.col_count > 0)).any(2)[:, self.y0]  # (n, H)
        cols = (on_box & (self.row_count > 0)[:, None]).any(1)[:, self.x0]  # (n, W)
        m, r, q = torch.nonzero(any_unsure, as_tuple=True)
        if m.numel():
            # every pixel of the straddling cells: (K, R, C), padded to the largest cell
            R, C = self.max_rows, self.max_cols
            ar, ac = torch.arange(R, device=dev), torch.arange(C, device=dev)
            rvalid = ar < self.row_count[r][:, None]
            cvalid = ac < self.col_count[q][:, None]
            ri = torch.where(rvalid, self.row_start[r][:, None] + ar, 0)  # (K, R)
            ci = torch.where(cvalid, self.col_start[q][:, None] + ac, 0)  # (K, C)
            wx0, wx1 = self.wx0[ci], self.wx1[ci]
            top = a[m, r, q][:, None] * wx0 + b[m, r, q][:, None] * wx1  # (K, C)
            bot = c[m, r, q][:, None] * wx0 + d[m, r, q][:, None] * wx1
            values = top[:, None, :] * self.wy0[ri][:, :, None] + bot[:, None, :] * self.wy1[ri][:, :, None]
            values.masked_fill_(~(rvalid[:, :, None] & cvalid[:, None, :]), float("-inf"))
            for k, t in enumerate(thresholds):
                here = unsure_cells[k][m, r, q]  # cells already counted as sure for t add nothing
                hits = values > t
                counts[:, k].index_add_(0, m, hits.flatten(1).sum(1) * here)
                if k == box_index:
                    hit_rows = (hits.any(2) & here[:, None]).to(torch.int32)
                    hit_cols = (hits.any(1) & here[:, None]).to(torch.int32)
                    rows_i, cols_i = rows.to(torch.int32), cols.to(torch.int32)
                    rows_i.index_put_((m[:, None].expand_as(ri), ri), hit_rows, accumulate=True)
                    cols_i.index_put_((m[:, None].expand_as(ci), ci), hit_cols, accumulate=True)
                    rows, cols = rows_i > 0, cols_i > 0
        return counts, _flags_to_boxes(rows, cols)


def _runs(index: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """First position and length of each value 0..n-1 in a non-decreasing index tensor."""
    values = torch.arange(n, device=index.device)
    start = torch.searchsorted(index, values, right=False)
    end = torch.searchsorted(index, values, right=True)
    return start, end - start


def _flags_to_boxes(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """XYXY boxes from (n, H) / (n, W) occupancy flags, [0, 0, 0, 0] where empty."""
    H, W = rows.shape[1], cols.shape[1]
    r8, c8 = rows.to(torch.uint8), cols.to(torch.uint8)
    top = r8.argmax(1)
    bottom = H - 1 - r8.flip(1).argmax(1)
    left = c8.argmax(1)
    right = W - 1 - c8.flip(1).argmax(1)
    boxes = torch.stack([left, top, right, bottom], 1)
    return torch.where(rows.any(1, keepdim=True), boxes, torch.zeros_like(boxes))


# ---------------------------------------------------------------------------------------------
# the generator
# ---------------------------------------------------------------------------------------------


@dataclass
class _Found:
    """Masks of one crop that passed every per-mask filter (crop coordinates)."""

    logits: list[torch.Tensor] = field(default_factory=list)  # low-res logits (n, h, w)
    iou: list[torch.Tensor] = field(default_factory=list)
    stability: list[torch.Tensor] = field(default_factory=list)
    boxes: list[torch.Tensor] = field(default_factory=list)  # XYXY int64, crop frame
    points: list[torch.Tensor] = field(default_factory=list)  # (n, 2) float32, crop frame

    def add(self, logits, iou, stability, boxes, points) -> None:
        self.logits.append(logits)
        self.iou.append(iou)
        self.stability.append(stability)
        self.boxes.append(boxes)
        self.points.append(points)

    def cat(self) -> dict[str, torch.Tensor]:
        if not self.iou:
            return {}
        return {
            "logits": torch.cat(self.logits),
            "iou": torch.cat(self.iou),
            "stability": torch.cat(self.stability),
            "boxes": torch.cat(self.boxes),
            "points": torch.cat(self.points),
        }


class MaskGenerator:
    """Segment everything: masks from a grid of point prompts, filtered and de-duplicated.

    Same options, defaults, records and record order as the official
    ``SAM2AutomaticMaskGenerator`` (see :meth:`generate`), plus ``progress``:

    - ``points_per_side`` (int) or ``point_grids`` (list of (N, 2) arrays in [0, 1], one per
      crop layer): exactly one of them. ``points_per_batch``: prompts decoded at once (a memory
      knob; results do not depend on it).
    - ``pred_iou_thresh``, ``stability_score_thresh`` (in [0, 1]; 0 disables the filter),
      ``stability_score_offset``, ``mask_threshold``: mask quality filters; the stability score
      is the IoU of the full-resolution masks thresholded at ``mask_threshold +- offset``.
    - ``box_nms_thresh``: box IoU above which a lower-scored mask of the same crop is dropped.
    - ``crop_n_layers``, ``crop_nms_thresh``, ``crop_overlap_ratio``,
      ``crop_n_points_downscale_factor``: also segment overlapping crops (layer i has 4**i
      crops and ``points_per_side / factor**i`` points per side); masks touching a crop edge
      (but not the image edge) are dropped, and duplicates between crops are removed
      preferring smaller crops.
    - ``min_mask_region_area``: if > 0, fill holes and remove islands smaller than this area
      (pixels) in every mask, then remove the new duplicates, as the first Segment Anything
      does (the official SAM2 generator only passes it to its predictor, whose low-resolution
      clean-up needs a CUDA extension; masklet does that clean-up too, on any device).
    - ``output_mode``: "binary_mask", "uncompressed_rle" or "coco_rle".
    - ``use_m2m``: refine every mask once with its own low-resolution logits as mask prompt.
    - ``multimask_output``: three masks per point (else one, chosen by stability).
    - ``progress``: a callable ``progress(done, total)`` (prompts decoded) or True for a tqdm bar.
    - ``mask_nms_thresh`` (masklet option, default 0: off, the official results): if > 0, drop a
      mask whose mask IoU with a higher-scored kept mask exceeds it (copies of one shape that
      stray pixels keep apart under box NMS); see :func:`masklet.mask_nms.mask_iou_nms`.
    """

    def __init__(
        self,
        model: Sam2Model,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.8,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        mask_threshold: float = 0.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: Sequence[Any] | None = None,
        min_mask_region_area: float = 0,
        output_mode: str = "binary_mask",
        use_m2m: bool = False,
        multimask_output: bool = True,
        progress: bool | Callable[[int, int], Any] = False,
        mask_nms_thresh: float = 0.0,
    ) -> None:
        if not isinstance(model, Sam2Model):
            raise InvalidInputError(f"model: expected a masklet Sam2Model (see masklet.load_model), got {type(model).__name__}")
        _check_int(crop_n_layers, "crop_n_layers", 0)
        _check_int(crop_n_points_downscale_factor, "crop_n_points_downscale_factor", 1)
        _check_int(points_per_batch, "points_per_batch", 1)
        if (points_per_side is None) == (point_grids is None):
            raise InvalidInputError(
                "points_per_side, point_grids: give exactly one of them (points_per_side="
                f"{points_per_side!r}, point_grids={'None' if point_grids is None else 'given'}); "
                "to use point_grids, pass points_per_side=None"
            )
        if points_per_side is not None:
            _check_int(points_per_side, "points_per_side", None)
            if points_per_side < 1:
                raise InvalidInputError(
                    f"points_per_side: expected an int >= 1, got {points_per_side!r} (a grid of zero points)"
                )
            for i in range(crop_n_layers + 1):
                if int(points_per_side / (crop_n_points_downscale_factor**i)) == 0:
                    raise InvalidInputError(
                        f"crop_n_layers={crop_n_layers}, crop_n_points_downscale_factor="
                        f"{crop_n_points_downscale_factor}: crop layer {i} gets "
                        f"int({points_per_side} / {crop_n_points_downscale_factor}**{i}) = 0 points per side; "
                        "use fewer crop layers, a smaller factor or more points_per_side"
                    )
            grids = build_all_layer_point_grids(points_per_side, crop_n_layers, crop_n_points_downscale_factor)
        else:
            grids = _check_point_grids(point_grids, crop_n_layers)
        for name, value in (
            ("pred_iou_thresh", pred_iou_thresh),
            ("stability_score_thresh", stability_score_thresh),
            ("box_nms_thresh", box_nms_thresh),
            ("crop_nms_thresh", crop_nms_thresh),
            ("crop_overlap_ratio", crop_overlap_ratio),
        ):
            if not _is_real(value) or not 0.0 <= value <= 1.0:
                raise InvalidInputError(f"{name}: expected a number in [0, 1], got {value!r}")
        for name, value in (("stability_score_offset", stability_score_offset), ("mask_threshold", mask_threshold)):
            if not _is_real(value) or not math.isfinite(value):
                raise InvalidInputError(f"{name}: expected a finite number, got {value!r}")
        if not _is_real(min_mask_region_area) or not min_mask_region_area >= 0 or math.isinf(min_mask_region_area):
            raise InvalidInputError(f"min_mask_region_area: expected a number >= 0, got {min_mask_region_area!r}")
        if not _is_real(mask_nms_thresh) or not 0.0 <= mask_nms_thresh <= 1.0:
            raise InvalidInputError(f"mask_nms_thresh: expected a number in [0, 1] (0: off), got {mask_nms_thresh!r}")
        if output_mode not in OUTPUT_MODES:
            raise InvalidInputError(f"output_mode: expected one of {', '.join(OUTPUT_MODES)}, got {output_mode!r}")
        for name, value in (("use_m2m", use_m2m), ("multimask_output", multimask_output)):
            if not isinstance(value, (bool, np.bool_)):
                raise InvalidInputError(f"{name}: expected True or False, got {value!r}")
        if not (isinstance(progress, (bool, np.bool_)) or callable(progress)):
            raise InvalidInputError(f"progress: expected True, False or a callable progress(done, total), got {progress!r}")
        if progress is True:
            try:
                import tqdm  # noqa: F401
            except ImportError:
                raise InvalidInputError(
                    "progress=True draws a tqdm bar, but tqdm is not installed (pip install tqdm); "
                    "or pass a callable progress(done, total)"
                ) from None

        self.model = model
        self.point_grids = grids
        self.points_per_side = points_per_side
        self.points_per_batch = int(points_per_batch)
        self.pred_iou_thresh = float(pred_iou_thresh)
        self.stability_score_thresh = float(stability_score_thresh)
        self.stability_score_offset = float(stability_score_offset)
        self.mask_threshold = float(mask_threshold)
        self.box_nms_thresh = float(box_nms_thresh)
        self.crop_n_layers = int(crop_n_layers)
        self.crop_nms_thresh = float(crop_nms_thresh)
        self.crop_overlap_ratio = float(crop_overlap_ratio)
        self.crop_n_points_downscale_factor = int(crop_n_points_downscale_factor)
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        self.use_m2m = bool(use_m2m)
        self.multimask_output = bool(multimask_output)
        self.progress = progress
        self.mask_nms_thresh = float(mask_nms_thresh)

    # ------------------------------------------------------------------ public

    def generate(self, image: ImageSource) -> list[dict[str, Any]]:
        """Masks of everything in ``image`` (any input :func:`masklet.io.load_image` accepts).

        Returns a list of records, each a dict with

        - ``segmentation``: per ``output_mode``, an (H, W) bool array, an uncompressed RLE
          ``{"size": [H, W], "counts": [int, ...]}`` or a COCO RLE ``{"size", "counts": str}``;
        - ``area`` (int, pixels), ``bbox`` (XYWH floats, with w = x1 - x0 of the inclusive
          pixel bounds, as the official), ``predicted_iou`` (float), ``point_coords``
          (``[[x, y]]``, the prompt in image pixels), ``stability_score`` (float) and
          ``crop_box`` (XYWH floats of the crop the mask came from).

        Records are in the official order: by decreasing predicted IoU (one crop); with crops,
        smaller crops first; with ``min_mask_region_area``, masks it left unchanged first.
        """
        img = load_image(image)
        orig_h, orig_w = img.shape[:2]
        crop_boxes, layer_idxs = generate_crop_boxes((orig_h, orig_w), self.crop_n_layers, self.crop_overlap_ratio)
        for box in crop_boxes:
            if box[2] <= box[0] or box[3] <= box[1]:
                raise InvalidInputError(
                    f"crop_n_layers={self.crop_n_layers}, crop_overlap_ratio={self.crop_overlap_ratio}: "
                    f"the crop {box} (XYXY) of the {orig_w}x{orig_h} image is empty; use fewer crop layers "
                    "or a smaller overlap"
                )
        per_point = self._masks_per_point()
        total = sum(len(self.point_grids[i]) for i in layer_idxs) * (1 + (per_point if self.use_m2m else 0))
        reporter = _Progress(self.progress, total)
        try:
            with inference():
                crops = [
                    self._process_crop(img, box, layer, reporter) for box, layer in zip(crop_boxes, layer_idxs)
                ]
                records = self._finish(crops, crop_boxes, (orig_h, orig_w))
            if self.mask_nms_thresh > 0:
                from .mask_nms import mask_iou_nms

                records = mask_iou_nms(records, self.mask_nms_thresh)
            return records
        finally:
            reporter.close()

    # ------------------------------------------------------------------ crops

    def _masks_per_point(self) -> int:
        return 3 if self.multimask_output else 1

    def _process_crop(self, image: np.ndarray, crop_box: list[int], layer: int, reporter: _Progress) -> dict:
        model = self.model
        device = model.device
        x0, y0, x1, y1 = crop_box
        crop = np.ascontiguousarray(image[y0:y1, x0:x1])
        crop_h, crop_w = crop.shape[:2]
        size = model.image_size
        pixels = preprocess(crop, size, device, model.encoder_dtype)
        levels = model.image_embeddings(model.encode_image(pixels))
        decoder = model.grid_decoder(levels) if hasattr(model, "grid_decoder") else _GridDecoder(model, levels)
        low_hw = (4 * decoder.hw[0], 4 * decoder.hw[1])
        upsampler = _Upsampler(low_hw, (crop_h, crop_w), device)

        # The official scales the [0, 1] grid to crop pixels in float64, then works in float32.
        points = torch.as_tensor(self.point_grids[layer] * np.array([[crop_w, crop_h]]), dtype=torch.float32)
        points = points.to(device)
        found = _Found()
        chunk = decoder.chunk(self.points_per_batch, upscale=False)
        for start in range(0, points.shape[0], chunk):
            batch = points[start : start + chunk]
            self._process_points(decoder, upsampler, batch, (crop_h, crop_w), crop_box, image.shape[:2], found, reporter)
        data = found.cat()
        if not data:
            return {}
        keep = batched_nms(
            data["boxes"].float(), data["iou"], torch.zeros_like(data["boxes"][:, 0]), self.box_nms_thresh
        )
        data = {k: v[keep] for k, v in data.items()}
        offset = torch.tensor([x0, y0, x0, y0], device=data["boxes"].device)
        data["boxes"] = data["boxes"] + offset
        data["points"] = data["points"] + offset[:2]
        data["upsampler"] = upsampler
        return data

    def _process_points(
        self,
        decoder: _GridDecoder,
        upsampler: _Upsampler,
        points: torch.Tensor,
        crop_hw: tuple[int, int],
        crop_box: list[int],
        orig_hw: tuple[int, int],
        found: _Found,
        reporter: _Progress,
    ) -> None:
        """Decode a batch of points (crop pixels) and keep the masks passing every filter.

        Candidates are ordered point-major (the official order): M masks per point."""
        size = self.model.image_size
        model_points = to_model_coords(points, crop_hw, size)[:, None, :]
        labels = torch.ones(points.shape[0], 1, dtype=torch.int32, device=points.device)
        per_point = self._masks_per_point()
        iou, state = decoder.decode(model_points, labels, None)
        reporter.advance(points.shape[0])
        cand_points = points.repeat_interleave(per_point, dim=0)
        if self.use_m2m:
            # Every mask is refined once with its own low-res logits (clamped as the official
            # predictor returns them) as mask prompt, and a single output.
            if self.multimask_output:
                first = self._upscale(decoder, state, None, [1, 2, 3]).flatten(0, 1)
            else:
                first = self._single(decoder, iou, state, filter_iou=False)[2]
            first = first.clamp(-32.0, 32.0)
            refine_points = model_points.repeat_interleave(per_point, dim=0)
            refine_labels = labels.repeat_interleave(per_point, dim=0)
            parts = []
            step = decoder.chunk(self.points_per_batch, upscale=False)
            for s in range(0, refine_points.shape[0], step):
                sl = slice(s, s + step)
                r_iou, r_state = decoder.decode(refine_points[sl], refine_labels[sl], first[sl, None])
                parts.append(self._single(decoder, r_iou, r_state, filter_iou=True))
                reporter.advance(refine_points[sl].shape[0])
            iou, has, logits = (torch.cat(x) for x in zip(*parts))
        elif self.multimask_output:
            iou = iou[:, 1:]
            could_pass = (iou > self.pred_iou_thresh).any(1) if self.pred_iou_thresh > 0 else None
            logits = self._upscale(decoder, state, could_pass, [1, 2, 3]).flatten(0, 1)
            iou = iou.flatten()
            has = torch.ones_like(iou, dtype=torch.bool) if could_pass is None else could_pass.repeat_interleave(3)
        else:
            iou, has, logits = self._single(decoder, iou, state, filter_iou=True)
        self._filter_and_keep(iou, has, logits, cand_points, upsampler, crop_box, orig_hw, found)

    def _upscale(self, decoder: _GridDecoder, state: _Decoded, which_points, which_tokens) -> torch.Tensor:
        """Low-res logits (B', len(which_tokens), h, w) of the points in ``which_points`` (all if None)."""
        if which_points is not None:
            state = state[which_points]
        step = decoder.chunk(self.points_per_batch, upscale=True)
        outs = [decoder.masks(state[s : s + step], which_tokens).float() for s in range(0, len(state), step)]
        if not outs:
            h, w = decoder.hw
            return torch.zeros(0, len(which_tokens), 4 * h, 4 * w, device=state.keys.device)
        return torch.cat(outs)

    def _single(self, decoder: _GridDecoder, iou, state: _Decoded, filter_iou: bool):
        """Single-mask output, chosen as the official decoder does (by stability when its
        ``dynamic_multimask_via_stability`` is on, else the first mask token).

        Returns the chosen IoU (B,), which points have logits (B,) and their logits (B', h, w).
        With ``filter_iou``, logits are only computed where the chosen IoU can pass
        ``pred_iou_thresh``; the IoU of the other points is then some value not above it."""
        dec = decoder.dec
        dynamic = dec.dynamic_multimask_via_stability and not dec.training
        bound = torch.maximum(iou[:, 0], iou[:, 1:].max(1).values) if dynamic else iou[:, 0]
        has = bound > self.pred_iou_thresh if filter_iou and self.pred_iou_thresh > 0 else torch.ones_like(bound, dtype=torch.bool)
        which = has if not bool(has.all()) else None
        if dynamic:
            logits = self._upscale(decoder, state, which, [0, 1, 2, 3])
            chosen_logits, chosen_iou = dec._select_stable(logits, iou[has].to(logits.dtype))
            out_iou = iou[:, 0].clone()
            out_iou[has] = chosen_iou[:, 0].to(iou.dtype)
            return out_iou, has, chosen_logits[:, 0]
        logits = self._upscale(decoder, state, which, [0])
        return iou[:, 0], has, logits[:, 0]

    def _filter_and_keep(
        self,
        iou: torch.Tensor,
        has: torch.Tensor,
        logits: torch.Tensor,
        cand_points: torch.Tensor,
        upsampler: _Upsampler,
        crop_box: list[int],
        orig_hw: tuple[int, int],
        found: _Found,
    ) -> None:
        """IoU filter, low-res clean-up, stability filter, crop-edge filter; keep the survivors.

        ``iou`` and ``has`` (n,) per candidate; ``logits`` (has.sum(), h, w) in candidate order.
        Candidates without logits cannot pass the IoU filter."""
        device = iou.device
        cand = torch.nonzero(has, as_tuple=True)[0]
        keep = iou[cand] > self.pred_iou_thresh if self.pred_iou_thresh > 0 else torch.ones_like(cand, dtype=torch.bool)
        if not bool(keep.any()):
            return
        cand, logits = cand[keep], logits[keep]
        if self.min_mask_region_area > 0:
            # the official predictor's low-resolution hole / sprinkle clean-up (its mask_threshold is 0)
            logits = fill_holes_and_remove_sprinkles(
                logits[:, None], 0.0, self.min_mask_region_area, self.min_mask_region_area
            )[:, 0]
        t, off = self.mask_threshold, self.stability_score_offset
        counts, boxes = [], []
        for s in range(0, logits.shape[0], _MASK_CHUNK):
            c, b = upsampler.stats(logits[s : s + _MASK_CHUNK], (t + off, t - off, t), box_index=2)
            counts.append(c)
            boxes.append(b)
        counts, boxes = torch.cat(counts), torch.cat(boxes)
        # the official sums in int16 / int32 and divides in float32: 0 / 0 gives NaN, as there
        stability = counts[:, 0].to(torch.int32) / counts[:, 1].to(torch.int32)
        keep = torch.ones(cand.shape[0], dtype=torch.bool, device=device)
        if self.stability_score_thresh > 0:
            keep &= stability >= self.stability_score_thresh
        keep &= ~_near_crop_edge(boxes, crop_box, [0, 0, orig_hw[1], orig_hw[0]])
        if not bool(keep.any()):
            return
        found.add(logits[keep], iou[cand[keep]], stability[keep], boxes[keep], cand_points[cand[keep]])

    # ------------------------------------------------------------------ merge and records

    def _finish(self, crops: list[dict], crop_boxes: list[list[int]], orig_hw: tuple[int, int]) -> list[dict[str, Any]]:
        parts = [(i, c) for i, c in enumerate(crops) if c]
        if not parts:
            return []
        device = parts[0][1]["iou"].device
        crop_index = torch.cat([torch.full((c["iou"].shape[0],), i, dtype=torch.int64, device=device) for i, c in parts])
        boxes = torch.cat([c["boxes"] for _, c in parts])
        iou = torch.cat([c["iou"] for _, c in parts])
        stability = torch.cat([c["stability"] for _, c in parts])
        points = torch.cat([c["points"] for _, c in parts])
        local = torch.cat([torch.arange(c["iou"].shape[0], device=device) for _, c in parts])
        crop_tensor = torch.tensor(crop_boxes, dtype=torch.int64, device=device)[crop_index]
        if len(crop_boxes) > 1:
            # prefer masks from smaller crops
            area = (crop_tensor[:, 2] - crop_tensor[:, 0]) * (crop_tensor[:, 3] - crop_tensor[:, 1])
            keep = batched_nms(boxes.float(), 1 / area, torch.zeros_like(boxes[:, 0]), self.crop_nms_thresh)
            crop_index, boxes, iou, stability, points, local, crop_tensor = (
                t[keep] for t in (crop_index, boxes, iou, stability, points, local, crop_tensor)
            )
        masks = _FinalMasks(crops, crop_boxes, crop_index, local, orig_hw, self.mask_threshold)
        if self.min_mask_region_area > 0:
            boxes, order = self._remove_small_regions(masks, boxes)
            masks.reorder(order)
            iou, stability, points, crop_tensor = (t[order] for t in (iou, stability, points, crop_tensor))
        return self._records(masks, boxes, iou, stability, points, crop_tensor)

    def _remove_small_regions(self, masks: _FinalMasks, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The first Segment Anything's ``postprocess_small_regions``: fill small holes, drop
        small islands, recompute boxes, and NMS preferring masks that did not change.

        Changed masks replace the originals in ``masks``; returns the boxes and kept order."""
        area = self.min_mask_region_area
        scores, new_boxes = [], boxes.clone()
        for rows, chunk in masks.chunks(range(len(masks))):
            for i, mask in zip(rows, chunk.cpu().numpy()):
                mask, changed_holes = remove_small_regions(mask, area, mode="holes")
                mask, changed_islands = remove_small_regions(mask, area, mode="islands")
                changed = changed_holes or changed_islands
                scores.append(0.0 if changed else 1.0)
                if changed:
                    cleaned = torch.from_numpy(mask)
                    new_boxes[i] = masks_to_boxes(cleaned)
                    masks.replace(i, cleaned)
        keep = batched_nms(
            new_boxes.float().cpu(), torch.as_tensor(scores), torch.zeros(len(scores), dtype=torch.int64),
            max(self.box_nms_thresh, self.crop_nms_thresh),
        ).to(boxes.device)
        return new_boxes[keep], keep

    def _records(self, masks: _FinalMasks, boxes, iou, stability, points, crop_boxes) -> list[dict[str, Any]]:
        segmentations: list[Any] = []
        areas: list[int] = []
        for _, chunk in masks.chunks(range(len(masks))):
            areas += chunk.flatten(1).sum(1).tolist()
            if self.output_mode == "coco_rle":
                segmentations += encode_rle(chunk)
            elif self.output_mode == "uncompressed_rle":
                segmentations += encode_uncompressed_rle(chunk)
            else:
                segmentations += list(chunk.cpu().numpy())
        # the official converts everything to float32 numpy before writing records
        boxes_f = boxes.float().cpu()
        bbox = torch.cat([boxes_f[:, :2], boxes_f[:, 2:] - boxes_f[:, :2]], 1).tolist()
        crop_f = crop_boxes.float().cpu()
        crop_xywh = torch.cat([crop_f[:, :2], crop_f[:, 2:] - crop_f[:, :2]], 1).tolist()
        iou_l = iou.float().cpu().tolist()
        stab_l = stability.float().cpu().tolist()
        pts = points.float().cpu().tolist()
        return [
            {
                "segmentation": segmentations[i],
                "area": int(areas[i]),
                "bbox": bbox[i],
                "predicted_iou": iou_l[i],
                "point_coords": [pts[i]],
                "stability_score": stab_l[i],
                "crop_box": crop_xywh[i],
            }
            for i in range(len(masks))
        ]


class _FinalMasks:
    """The kept masks, built at full image size only when needed, a few at a time."""

    def __init__(self, crops, crop_boxes, crop_index, local, orig_hw, threshold: float) -> None:
        self.crops, self.crop_boxes, self.orig_hw, self.threshold = crops, crop_boxes, orig_hw, threshold
        self.crop_index, self.local = crop_index.tolist(), local.tolist()
        self.replaced: dict[int, np.ndarray] = {}  # position -> bit-packed (H, W) mask

    def __len__(self) -> int:
        return len(self.crop_index)

    def replace(self, i: int, mask: torch.Tensor) -> None:
        self.replaced[i] = np.packbits(mask.cpu().numpy())

    def reorder(self, order: torch.Tensor) -> None:
        order = order.tolist()
        self.crop_index = [self.crop_index[i] for i in order]
        self.local = [self.local[i] for i in order]
        self.replaced = {new: self.replaced[old] for new, old in enumerate(order) if old in self.replaced}

    def chunks(self, rows: Sequence[int], size: int = 8):
        """(rows, (k, H, W) bool masks) for consecutive groups of ``rows``."""
        rows = list(rows)
        for s in range(0, len(rows), size):
            yield rows[s : s + size], self.build(rows[s : s + size])

    def build(self, rows: Sequence[int]) -> torch.Tensor:
        H, W = self.orig_hw
        any_crop = next(iter(c for c in self.crops if c))
        device = any_crop["logits"].device
        out = torch.zeros(len(rows), H, W, dtype=torch.bool, device=device)
        by_crop: dict[int, list[int]] = {}
        for j, i in enumerate(rows):
            if i in self.replaced:
                flat = np.unpackbits(self.replaced[i], count=H * W).astype(bool)
                out[j] = torch.from_numpy(flat.reshape(H, W)).to(device)
            else:
                by_crop.setdefault(self.crop_index[i], []).append(j)
        for ci, js in by_crop.items():
            crop = self.crops[ci]
            x0, y0, x1, y1 = self.crop_boxes[ci]
            logits = crop["logits"][[self.local[rows[j]] for j in js]]
            out[js, y0:y1, x0:x1] = crop["upsampler"].binary(logits, self.threshold)
        return out


def _near_crop_edge(boxes: torch.Tensor, crop_box: list[int], orig_box: list[int]) -> torch.Tensor:
    """Boxes (crop frame) touching the crop's edge where that edge is not the image's."""
    x0, y0 = crop_box[0], crop_box[1]
    crop_t = torch.as_tensor(crop_box, dtype=torch.float32, device=boxes.device)
    orig_t = torch.as_tensor(orig_box, dtype=torch.float32, device=boxes.device)
    shifted = (boxes + torch.tensor([x0, y0, x0, y0], device=boxes.device)).float()
    near_crop = torch.isclose(shifted, crop_t[None], atol=_EDGE_TOLERANCE, rtol=0)
    near_image = torch.isclose(shifted, orig_t[None], atol=_EDGE_TOLERANCE, rtol=0)
    return (near_crop & ~near_image).any(1)


class _Progress:
    def __init__(self, progress: bool | Callable[[int, int], Any], total: int) -> None:
        self.total, self.done = total, 0
        self.callback: Callable[[int, int], Any] | None = None
        self.bar = None
        if progress is True:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="prompt", desc="masklet amg")
        elif callable(progress):
            self.callback = progress

    def advance(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        if self.callback is not None:
            self.callback(self.done, self.total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------------------------


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _check_int(value: Any, name: str, minimum: int | None) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)):
        raise InvalidInputError(f"{name}: expected an int, got {value!r}")
    if minimum is not None and value < minimum:
        raise InvalidInputError(f"{name}: expected an int >= {minimum}, got {value!r}")


def _check_point_grids(point_grids: Any, crop_n_layers: int) -> list[np.ndarray]:
    if isinstance(point_grids, (np.ndarray, torch.Tensor)) or not isinstance(point_grids, Sequence):
        raise InvalidInputError(
            f"point_grids: expected a list of (N, 2) arrays (one per crop layer), got {type(point_grids).__name__}"
        )
    if len(point_grids) < crop_n_layers + 1:
        raise InvalidInputError(
            f"point_grids: crop_n_layers={crop_n_layers} needs {crop_n_layers + 1} grids (one per crop layer), "
            f"got {len(point_grids)}"
        )
    grids = []
    for i, grid in enumerate(point_grids):
        try:
            arr = np.asarray(grid.detach().cpu() if isinstance(grid, torch.Tensor) else grid, dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidInputError(f"point_grids[{i}]: expected an (N, 2) array of numbers, got {type(grid).__name__}") from None
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise InvalidInputError(f"point_grids[{i}]: expected shape (N, 2) of normalised (x, y), got {arr.shape}")
        if arr.shape[0] == 0:
            raise InvalidInputError(f"point_grids[{i}]: a grid of zero points; give at least one point")
        if not np.isfinite(arr).all() or (arr < 0).any() or (arr > 1).any():
            raise InvalidInputError(f"point_grids[{i}]: points are normalised to [0, 1]; got values outside")
        grids.append(arr)
    return grids
