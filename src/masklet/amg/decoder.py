"""The grid decoder: SAM's mask decoder for a grid of single-point prompts on one image.

:class:`GridDecoder` computes what ``Sam2Model``'s mask decoder computes (within float rounding) for
many prompts at once, sharing the prompt-independent work between them and running the mask tokens
and the mask upscaling only on request (see its docstring for the algebra).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..fast_decoder import head_table, untile_masks
from ..model import Sam2Model
from ..model.gemm import flush_subnormals_, matmul, softmax_flushed_

__all__ = ["POINTS_PER_BATCH", "DecoderState", "GridDecoder", "prompts_per_chunk"]

#: Point prompts the automatic mask generator decodes at once by default (``points_per_batch``).
POINTS_PER_BATCH = 64

#: On a CPU, prompts are decoded (and their masks upscaled) a few at a time, so that the
#: per-prompt image tokens (4 MB each for a 1024 px model) stay in cache: that beats larger
#: batches there. GPUs take ``points_per_batch`` prompts at once.
_CPU_DECODE_BYTES = 16 << 20
_CPU_UPSCALE_BYTES = 24 << 20


def prompts_per_chunk(
    tokens: int, width: int, itemsize: int, device: torch.device, points_per_batch: int, upscale: bool
) -> int:
    """Prompts to decode (or upscale) at once for ``tokens`` image tokens of ``width`` channels:
    ``points_per_batch``, fewer on a CPU (the byte budgets above)."""
    if device.type != "cpu":
        return points_per_batch
    if upscale:  # the two upscaled feature maps of a prompt (4N x C/4 and 16N x C/8 values)
        per_prompt, budget = 3 * tokens * width * itemsize, _CPU_UPSCALE_BYTES
    else:
        per_prompt, budget = tokens * width * itemsize, _CPU_DECODE_BYTES
    return max(1, min(points_per_batch, budget // per_prompt))


class GridDecoder:
    """The SAM mask decoder for many single-point prompts on one image, sharing work between them.

    Same function as ``MaskDecoder`` (within float rounding), organised for a grid of prompts:

    * the first two-way block's projections of the image tokens do not depend on the prompt
      (without a mask prompt), so they are computed once per image;
    * attention between the ~8 prompt tokens and the 4096 image tokens never projects the image
      tokens: the queries (or keys) are pulled back through the projection instead, and the
      image->token output projection is applied to the 8 values before mixing;
    * the second block's image tokens are LN(shared + low rank): where that rank is small next
      to the width (wide models), its projections come from per-image tables and small
      per-prompt products (see :meth:`_prepare_second_block`); narrow models (masklet-nano)
      attend to the materialised tokens directly;
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
        # (1, N, C) token-major copies: what derives from them keeps their layout, and a strided
        # addend sends a batched product to PyTorch's slow path (24 against 1.5 ms on an Intel Xeon)
        self.key_pe = pe.get_dense_pe().to(image.dtype).flatten(2).transpose(1, 2).contiguous()
        self.image = image.flatten(2).transpose(1, 2).contiguous()
        self.keys0 = self.image + pe.no_mask_embed.weight.to(image.dtype)[:, None, :]
        layer0: Any = dec.transformer.layers[0]  # the two-way blocks are untyped nn.Modules
        both = self.keys0 + self.key_pe
        t2i, i2t = layer0.cross_attn_token_to_image, layer0.cross_attn_image_to_token
        self.t2i_k = _split_heads(t2i.k_proj(both), t2i.num_heads)  # (1, H, N, d)
        self.t2i_v = _split_heads(t2i.v_proj(self.keys0), t2i.num_heads)
        self.i2t_q = _split_heads(i2t.q_proj(both), i2t.num_heads)[0]  # (H, N, d)
        # the final attention's keys are the last block's tokens plus pe: the pe part per head, once
        final = dec.transformer.final_attn_token_to_image
        self.final_pe_table = head_table(final.k_proj.weight, self.key_pe[0], final.num_heads)  # (H, d, N)
        # the first block's image->token output lands on the shared tokens: add its bias once
        self.keys0_out = self.keys0 + i2t.out_proj.bias.to(image.dtype)
        parts = [dec.iou_token.weight, dec.mask_tokens.weight]
        if dec.pred_obj_scores:
            parts.insert(0, dec.obj_score_token.weight)
        self.first = 1 if dec.pred_obj_scores else 0  # index of the IoU token
        self.output_tokens = torch.cat(parts).to(image.dtype)
        layers: list[Any] = list(dec.transformer.layers)
        # the same for each block's token->image keys and image->token queries: the compiled pass
        # adds them to the scores instead of summing keys + pe (see _block)
        self.block_pe_tables = [self._pe_tables(layer) for layer in layers]
        self.factored = (
            len(layers) >= 2
            and layers[0].skip_first_layer_pe
            and not layers[1].skip_first_layer_pe
            and self._low_rank_pays(layers[1].cross_attn_image_to_token)
        )
        if self.factored:
            self._prepare_second_block(layer0, dec.transformer.layers[1])
        self._upscaling_ready = False

    def _pe_tables(self, layer: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(H, d, N) per-head tables of the positions' token->image keys and image->token queries."""
        t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
        pe = self.key_pe[0]
        return head_table(t2i.k_proj.weight, pe, t2i.num_heads), head_table(i2t.q_proj.weight, pe, i2t.num_heads)

    def _low_rank_pays(self, attn) -> bool:
        """Whether the second block's factored form does less work: its image tokens are shared
        plus rank R = heads x tokens + 1 (a point prompt and its padding point), which saves
        work when R is at most half the width C; narrower models take the direct form."""
        rank = attn.num_heads * (self.output_tokens.shape[0] + 2) + 1
        return 2 * rank <= self.keys0.shape[-1]

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
        n, c = self.keys0.shape[1:]
        return prompts_per_chunk(n, c, self.keys0.element_size(), self.keys0.device, points_per_batch, upscale)

    # ---------------------------------------------------------------- transformer

    def decode(
        self, coords: torch.Tensor, labels: torch.Tensor, mask_input: torch.Tensor | None
    ) -> tuple[torch.Tensor, DecoderState]:
        """IoU predictions (B, M) of all mask tokens, and the state :meth:`masks` needs.

        Where the model has a compiled pass (``compile_model(..., automatic_masks=True)``), point
        prompts without a mask prompt go through it, two or more at a time (one prompt would
        specialise a new graph); the rest runs eagerly."""
        compiled = getattr(self.model, "compiled_grid_decode", None)  # absent on models pickled before it
        if compiled is not None and mask_input is None and coords.shape[0] > 1:
            return compiled(self, coords, labels, None)
        return self.decode_eager(coords, labels, mask_input)

    def decode_eager(
        self, coords: torch.Tensor, labels: torch.Tensor, mask_input: torch.Tensor | None
    ) -> tuple[torch.Tensor, DecoderState]:
        """:meth:`decode` in eager PyTorch (what ``compile_model`` compiles)."""
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
            queries, keys = self._block(tr.layers[i], queries, keys, tokens, shared and i == 0, self.block_pe_tables[i])
        # Each token attends to the image on its own in the last attention, and only the IoU
        # token decides whether a prompt needs masks: the mask tokens wait for masks().
        state = DecoderState(queries, tokens, keys)
        iou = self.dec.iou_prediction_head(self._final_tokens(state, [self.first])[:, 0])
        return iou, state

    def _final_tokens(self, state: DecoderState, rows: Sequence[int]) -> torch.Tensor:
        """Outputs (B, len(rows), C) of the final token->image attention for token ``rows``."""
        tr = self.dec.transformer
        q = state.queries[:, rows]
        out = self._token_to_image(tr.final_attn_token_to_image, q + state.tokens[:, rows], state.keys)
        return tr.norm_final_attn(q + out)

    def _block(
        self,
        layer: Any,
        q: torch.Tensor,
        k: torch.Tensor,
        qpe: torch.Tensor,
        shared: bool,
        pe_tables: tuple[torch.Tensor, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One two-way block: token queries (B, T, C) and image tokens (B, N, C) updated; ``pe_tables``:
        its attentions' per-head position tables (token->image keys, image->token queries)."""
        if layer.skip_first_layer_pe:
            q = layer.self_attn(q, q, q)
        else:
            x = q + qpe
            q = q + layer.self_attn(x, x, q)
        q = layer.norm1(q)
        if shared:
            q = layer.norm2(q + self._token_to_image_shared(layer.cross_attn_token_to_image, q + qpe))
            q = layer.norm3(q + layer.mlp(q))
            weights, rows = self._image_to_token_shared(layer.cross_attn_image_to_token, q + qpe, q)
            x = matmul(weights.transpose(1, 2), rows, self.keys0_out)
        else:  # k is this decode's own (the previous block's output): the image->token update lands in it
            # Both attentions score against the image tokens plus their encoding. Eagerly that sum is
            # formed once (the tables made masklet-nano's 32x32 run 1.05x slower); in a compiled graph
            # the positional part comes from the per-head tables, as inductor writes the sum out a
            # second time in another layout (0.99x the compiled run's CPU time, 1 thread).
            kp = None if torch.compiler.is_compiling() else k + self.key_pe
            t2i_table, i2t_table = pe_tables
            q = layer.norm2(q + self._token_to_image(layer.cross_attn_token_to_image, q + qpe, k, kp, t2i_table))
            q = layer.norm3(q + layer.mlp(q))
            x = self._image_to_token(layer.cross_attn_image_to_token, k, q + qpe, q, kp, i2t_table)
        return q, layer.norm4(x)

    def _first_blocks(self, layer0, layer1, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The first two blocks without a mask prompt (shared image tokens)."""
        q = layer0.norm1(layer0.self_attn(tokens, tokens, tokens))  # skip_first_layer_pe
        q = layer0.norm2(q + self._token_to_image_shared(layer0.cross_attn_token_to_image, q + tokens))
        q = layer0.norm3(q + layer0.mlp(q))
        weights, rows = self._image_to_token_shared(layer0.cross_attn_image_to_token, q + tokens, q)
        rows = self._bias_row(layer0.cross_attn_image_to_token, rows)
        a = torch.cat((weights, weights.new_ones(weights.shape[0], 1, weights.shape[2])), 1)  # (B, R, N)
        y = matmul(a.transpose(1, 2), rows, self.keys0)  # (B, N, C)
        norm = layer0.norm4
        k1, mu, rstd = torch.native_layer_norm(y, (y.shape[-1],), norm.weight, norm.bias, norm.eps)
        stats = (a, rows, mu.transpose(1, 2), rstd.transpose(1, 2))  # mu, rstd: (B, 1, N)
        x = q + tokens
        q = layer1.norm1(q + layer1.self_attn(x, x, q))
        q = layer1.norm2(q + self._token_to_image_factored(layer1.cross_attn_token_to_image, q + tokens, stats))
        q = layer1.norm3(q + layer1.mlp(q))
        weights, rows1 = self._image_to_token_factored(layer1.cross_attn_image_to_token, q + tokens, q, stats)
        ones = weights.new_ones(weights.shape[0], 1, weights.shape[2])
        x = matmul(torch.cat((weights, ones), 1).transpose(1, 2), rows1, k1)
        return q, layer1.norm4(x)

    @staticmethod
    def _add_per_head_(scores: torch.Tensor, x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """scores (B, H*T, N) += x (B, T, H, d) against a per-head table (H, d, N), in place (the
        head-major product is added through a view: no transposed copy)."""
        b, t, h, d = x.shape
        out = matmul(x.permute(2, 0, 1, 3).reshape(h, b * t, d), table)  # (H, B*T, N)
        scores.view(b, h, t, -1).add_(out.view(h, b, t, -1).transpose(0, 1))
        return scores

    def _factored_scores(self, x: torch.Tensor, w: torch.Tensor, zt: torch.Tensor, pt: torch.Tensor, stats) -> tuple:
        """x (B, T, H, d) . (W_h (K1_n + pe_n)) for all n -> (B, H*T, N), plus the pulled-back x."""
        a, rows, mu, rstd = stats
        b, t, h, d = x.shape
        xw = torch.einsum("bthd,hdc->bhtc", x, w.reshape(h, d, -1))  # x pulled back to model width
        xg = (xw * self.g).reshape(b, h * t, -1)
        low_rank = matmul(torch.bmm(xg, rows.transpose(1, 2)), a)  # (B, HT, N)
        scores = self._add_per_head_(low_rank, x, zt).sub_(mu * xg.sum(-1, keepdim=True)).mul_(rstd)
        return self._add_per_head_(scores, x, pt), xw.reshape(b, h * t, -1)

    def _token_to_image_factored(self, attn, q_in: torch.Tensor, stats) -> torch.Tensor:
        a, rows, mu, rstd = stats
        b, t, _ = q_in.shape
        h = attn.num_heads
        q = attn.q_proj(q_in)
        d = q.shape[-1] // h
        q = q.view(b, t, h, d)
        scores, _ = self._factored_scores(q, attn.k_proj.weight, self.f_zk, self.f_pk, stats)
        p = flush_subnormals_(scores.mul_(1.0 / math.sqrt(d)).softmax(-1)).mul_(rstd)  # (B, HT, N), scaled by rstd
        n = p.shape[-1]
        # sum_n p_n W_v,h K1_n = sum_n p_n rstd_n W_v,h (g (keys0_n + A_n^T M - mu_n)) + W_v beta
        out = matmul(p.view(b, h, t, n).transpose(0, 1).reshape(h, b * t, n), self.f_zv)  # (H, BT, d)
        out = out.view(h, b, t, d).permute(1, 2, 0, 3)
        mv = ((rows * self.g) @ attn.v_proj.weight.t()).view(b, -1, h, d)  # (B, R, H, d)
        pa = matmul(p, a.transpose(1, 2)).view(b, h, t, -1)  # (B, H, T, R)
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
        return flush_subnormals_(weights), self._bias_row(attn, self._value_rows(attn, v))

    def _token_to_image_shared(self, attn, q_in: torch.Tensor) -> torch.Tensor:
        b, t, _ = q_in.shape
        h = attn.num_heads
        q = attn.q_proj(q_in)
        d = q.shape[-1] // h
        q = q.reshape(b * t, h, d).transpose(0, 1).unsqueeze(0)  # all prompts' tokens as one sequence
        out = F.scaled_dot_product_attention(q, self.t2i_k, self.t2i_v)[0]  # (H, B*T, d)
        return attn.out_proj(out.transpose(0, 1).reshape(b, t, h * d))

    def _token_to_image(
        self,
        attn,
        q_in: torch.Tensor,
        k: torch.Tensor,
        k_pe: torch.Tensor | None = None,
        pe_table: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attention of the tokens over image tokens ``k`` (values), keys k + pe: ``k_pe`` where the
        caller has the sum; else the pe part from the per-head table ``pe_table`` (default: the final
        attention's)."""
        b, t, c = q_in.shape
        h = attn.num_heads
        q = attn.q_proj(q_in)
        d = q.shape[-1] // h
        # q . (W_k x + b_k) = (q W_k) . x + const: the constant drops out of the softmax.
        q4 = q.reshape(b, t, h, d).mul_(1.0 / math.sqrt(d))  # the softmax scale rides on the queries
        qw = torch.einsum("bthd,hdc->bhtc", q4, attn.k_proj.weight.reshape(h, d, c))
        scores = matmul(qw.reshape(b, h * t, c), (k if k_pe is None else k_pe).transpose(1, 2))
        if k_pe is None:
            self._add_per_head_(scores, q4, self.final_pe_table if pe_table is None else pe_table)
        mixed = matmul(flush_subnormals_(scores.softmax(-1)), k).reshape(b, h, t, c)  # softmax rows sum to 1
        out = torch.einsum("bhtc,hdc->bthd", mixed, attn.v_proj.weight.reshape(h, d, c))
        out = out + attn.v_proj.bias.reshape(h, d)
        return attn.out_proj(out.reshape(b, t, h * d))

    @staticmethod
    def _value_rows(attn, v: torch.Tensor) -> torch.Tensor:
        """Values (B, T, H, d) through the output projection (without its bias): (B, H*T, C)."""
        b, t, h, d = v.shape
        wo = attn.out_proj.weight.reshape(-1, h, d).permute(1, 2, 0)  # (H, d, C)
        return torch.einsum("bthd,hdc->bhtc", v, wo).reshape(b, h * t, -1)

    @staticmethod
    def _bias_row(attn, rows: torch.Tensor) -> torch.Tensor:
        """(B, R, C) value rows with the output projection's bias as one more row (weight 1)."""
        return torch.cat((rows, attn.out_proj.bias.to(rows.dtype).expand(rows.shape[0], 1, -1)), 1)

    def _image_to_token_shared(self, attn, k_in: torch.Tensor, v_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention weights (B, H*T, N) of the shared image tokens over the prompt tokens, and
        the projected values (B, H*T, C) without the output bias."""
        b, t, _ = k_in.shape
        h = attn.num_heads
        k = attn.k_proj(k_in)
        d = k.shape[-1] // h
        k = k.reshape(b * t, h, d).transpose(0, 1)  # (H, B*T, d)
        v = attn.v_proj(v_in).reshape(b, t, h, d)
        n = self.i2t_q.shape[1]
        scores = matmul(k, self.i2t_q.transpose(1, 2)).mul_(1.0 / math.sqrt(d))  # (H, B*T, N)
        weights = softmax_flushed_(scores.view(h, b, t, n), 2).transpose(0, 1).reshape(b, h * t, n)
        return weights, self._value_rows(attn, v)

    def _image_to_token(
        self,
        attn,
        k0: torch.Tensor,
        k_in: torch.Tensor,
        v_in: torch.Tensor,
        k0_pe: torch.Tensor | None,
        pe_table: torch.Tensor,
    ) -> torch.Tensor:
        """k0 (B, N, C) plus the attention of the image tokens k0 + pe over the prompt tokens,
        accumulated into ``k0``: queries from ``k0_pe`` where the caller has that sum, else from k0
        and the per-head table ``pe_table`` of the positions' queries."""
        b, t, c = k_in.shape
        h = attn.num_heads
        k = attn.k_proj(k_in)
        d = k.shape[-1] // h
        k = k.reshape(b, t, h, d).mul_(1.0 / math.sqrt(d))  # the softmax scale rides on the keys
        v = attn.v_proj(v_in).reshape(b, t, h, d)
        # (W_q (x + pe) + b_q) . k = x . (W_q^T k) + (W_q pe) . k + b_q . k
        kw = torch.einsum("bthd,hdc->bhtc", k, attn.q_proj.weight.reshape(h, d, c)).reshape(b, h * t, c)
        const = torch.einsum("bthd,hd->bht", k, attn.q_proj.bias.reshape(h, d)).reshape(b, h * t, 1)
        scores = matmul(kw, (k0 if k0_pe is None else k0_pe).transpose(1, 2))
        if k0_pe is None:
            self._add_per_head_(scores, k, pe_table)
        n = k0.shape[1]
        scores = scores.add_(const).view(b, h, t, n)
        weights = flush_subnormals_(scores.softmax(2)).view(b, h * t, n)
        # each head's weights over the tokens sum to one: the output bias rides on the rows, 1/H each
        rows = self._value_rows(attn, v).add_(attn.out_proj.bias.to(k0.dtype) / h)
        return matmul(weights.transpose(1, 2), rows, k0, add_is_scratch=True)

    # ---------------------------------------------------------------- masks

    def _prepare_upscaling(self) -> None:
        dec = self.dec
        self._channels_last = bool(dec.use_high_res_features)
        if self._channels_last:
            h, w = self.hw
            up1, _, _, up2, _ = list[Any](dec.output_upscaling)
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

    def masks(self, state: DecoderState, which: Sequence[int]) -> torch.Tensor:
        """Low-resolution logits (B, len(which), 4h, 4w) of the mask tokens ``which``."""
        if not self._upscaling_ready:
            self._prepare_upscaling()
        dec = self.dec
        keys = state.keys
        b = keys.shape[0]
        h, w = self.hw
        mask_tokens = self._final_tokens(state, [self.first + 1 + i for i in which])
        # (B, K, C/8), contiguous: with both operands transposed the batched product takes 10x longer
        hyper = torch.stack([dec.output_hypernetworks_mlps[i](mask_tokens[:, j]) for j, i in enumerate(which)], 1)
        k = hyper.shape[1]
        if self._channels_last:
            _, norm, act1, _, act2 = list[Any](dec.output_upscaling)
            n = h * w
            u = matmul(keys, self.w1[None]).add_(self.bias1)  # (B, N, 4*c1), order (y, x, dy, dx, c)
            u = act1(F.layer_norm(u.view(b, 4 * n, self.c1), (self.c1,), norm.weight, norm.bias, norm.eps))
            u = matmul(u, self.w2[None]).add_(self.bias2)  # (B, 4N, 4*c2)
            u = act2(u).view(b, 16 * n, self.c2)
            m = matmul(hyper, u.transpose(1, 2))  # (B, K, 16N), pixels (y, x, dy, dx, dy2, dx2)
            return untile_masks(m, h, w)
        src = keys.transpose(1, 2).reshape(b, -1, h, w)
        up = dec.output_upscaling(src)
        c = up.shape[1]
        return (hyper @ up.reshape(b, c, -1)).reshape(b, k, *up.shape[-2:])


@dataclass
class DecoderState:
    """Decoder state of B prompts before the final attention: token queries and their
    positional part (B, T, C), image tokens (B, N, C)."""

    queries: torch.Tensor
    tokens: torch.Tensor
    keys: torch.Tensor

    def __getitem__(self, index) -> DecoderState:
        return DecoderState(self.queries[index], self.tokens[index], self.keys[index])

    def __len__(self) -> int:
        return self.keys.shape[0]


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, c = x.shape
    return x.reshape(b, n, heads, c // heads).transpose(1, 2)
