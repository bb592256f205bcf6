"""Mask decoder: a two-way transformer between prompt tokens and the image, then mask heads."""

from __future__ import annotations

import torch
from torch import nn

from .attention import Attention
from .common import MLP, LayerNorm2d
from .config import DecoderConfig
from .gemm import Linear


class TwoWayAttentionBlock(nn.Module):
    """Token self-attention, token->image attention, token MLP, then image->token attention."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, downsample_rate: int, skip_first_layer_pe: bool) -> None:
        super().__init__()
        self.self_attn = Attention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = Attention(dim, num_heads, downsample_rate=downsample_rate)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_dim, dim, num_layers=2, activation=nn.ReLU)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = Attention(dim, num_heads, downsample_rate=downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
        token_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``token_mask`` (B, N) bool: False for padding tokens, which no token or image position attends."""
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries, key_mask=token_mask)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries, key_mask=token_mask)
        queries = self.norm1(queries)

        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))
        queries = self.norm3(queries + self.mlp(queries))

        q, k = queries + query_pe, keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries, key_mask=token_mask))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """Stack of two-way blocks plus a final token->image attention."""

    def __init__(self, depth: int, dim: int, num_heads: int, mlp_dim: int, downsample_rate: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(dim, num_heads, mlp_dim, downsample_rate, skip_first_layer_pe=(i == 0))
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(dim, num_heads, downsample_rate=downsample_rate)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(
        self, image: torch.Tensor, image_pe: torch.Tensor, tokens: torch.Tensor, token_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image, image_pe: (B, C, h, w); tokens: (B, N, C), token_mask (B, N) or None -> tokens (B, N, C),
        image (B, hw, C). Masked-out (padding) tokens change nothing else; their own outputs are junk."""
        keys = image.flatten(2).transpose(1, 2)
        key_pe = image_pe.flatten(2).transpose(1, 2)
        queries = tokens
        for layer in self.layers:
            queries, keys = layer(queries, keys, tokens, key_pe, token_mask)
        out = self.final_attn_token_to_image(queries + tokens, keys + key_pe, keys)
        return self.norm_final_attn(queries + out), keys


class MaskDecoder(nn.Module):
    """Predicts mask logits at 4x the embedding resolution, IoU scores and an object score."""

    def __init__(
        self,
        dim: int,
        config: DecoderConfig,
        use_high_res_features: bool,
        iou_prediction_use_sigmoid: bool,
        pred_obj_scores: bool,
        pred_obj_scores_mlp: bool,
        use_multimask_token_for_obj_ptr: bool,
    ) -> None:
        super().__init__()
        c = config
        self.transformer = TwoWayTransformer(
            c.transformer_depth, dim, c.transformer_num_heads, c.transformer_mlp_dim, c.attention_downsample_rate
        )
        self.num_mask_tokens = c.num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.pred_obj_scores = pred_obj_scores
        if pred_obj_scores:
            self.obj_score_token = nn.Embedding(1, dim)
        self.use_multimask_token_for_obj_ptr = use_multimask_token_for_obj_ptr
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.use_high_res_features = use_high_res_features
        if use_high_res_features:
            self.conv_s0 = nn.Conv2d(dim, dim // 8, kernel_size=1)
            self.conv_s1 = nn.Conv2d(dim, dim // 4, kernel_size=1)
        self.output_hypernetworks_mlps = nn.ModuleList(MLP(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens))
        self.iou_prediction_head = MLP(
            dim,
            c.iou_head_hidden_dim,
            self.num_mask_tokens,
            c.iou_head_depth,
            sigmoid_output=iou_prediction_use_sigmoid,
        )
        if pred_obj_scores:
            self.pred_obj_score_head = MLP(dim, dim, 1, 3) if pred_obj_scores_mlp else Linear(dim, 1)
        self.dynamic_multimask_via_stability = c.dynamic_multimask_via_stability
        self.stability_delta = c.dynamic_multimask_stability_delta
        self.stability_thresh = c.dynamic_multimask_stability_thresh

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        repeat_image: bool,
        high_res_features: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns mask logits (B, M, 4h, 4w), IoU (B, M), SAM tokens (B, M', C), object logits (B, 1).

        M is 3 with ``multimask_output`` and 1 otherwise; ``repeat_image`` broadcasts one image
        over a batch of prompts.
        """
        masks, iou_pred, mask_tokens_out, object_score_logits = self.predict_masks(
            image_embeddings,
            image_pe,
            sparse_prompt_embeddings,
            dense_prompt_embeddings,
            repeat_image,
            high_res_features,
        )
        masks, iou_pred = self.select_outputs(masks, iou_pred, multimask_output)
        if multimask_output and self.use_multimask_token_for_obj_ptr:
            sam_tokens = mask_tokens_out[:, 1:]
        else:
            sam_tokens = mask_tokens_out[:, 0:1]
        return masks, iou_pred, sam_tokens, object_score_logits

    def select_outputs(
        self, masks: torch.Tensor, iou_pred: torch.Tensor, multimask_output: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All mask tokens' (B, 4, h, w) logits and (B, 4) IoU -> the 3 multimask outputs or the single one."""
        if multimask_output:
            return masks[:, 1:], iou_pred[:, 1:]
        if self.dynamic_multimask_via_stability and not self.training:
            return self.select_stable(masks, iou_pred)
        return masks[:, 0:1], iou_pred[:, 0:1]

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        repeat_image: bool,
        high_res_features: list[torch.Tensor] | None = None,
        sparse_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """All mask tokens' outputs, before choosing single or multi-mask output.

        ``sparse_mask`` (B, N) bool marks the real sparse tokens of prompts padded to a common
        length (the server's prompt batcher); padding then has no effect on the outputs."""
        parts = [self.iou_token.weight, self.mask_tokens.weight]
        if self.pred_obj_scores:
            parts.insert(0, self.obj_score_token.weight)
        first = 1 if self.pred_obj_scores else 0
        batch = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat(parts).unsqueeze(0).expand(batch, -1, -1)
        tokens = torch.cat((output_tokens, sparse_prompt_embeddings.to(output_tokens.dtype)), dim=1)

        if repeat_image:
            src = (
                image_embeddings.expand(batch, -1, -1, -1)
                if image_embeddings.shape[0] == 1
                else torch.repeat_interleave(image_embeddings, batch, dim=0)
            )
        else:
            if image_embeddings.shape[0] != batch:
                raise ValueError("image and prompt batch sizes differ; pass repeat_image=True")
            src = image_embeddings
        src = src + dense_prompt_embeddings
        pos_src = image_pe.to(src.dtype).expand(batch, -1, -1, -1)
        b, c, h, w = src.shape

        token_mask = None
        if sparse_mask is not None:  # the output tokens are always real
            token_mask = torch.cat((sparse_mask.new_ones(batch, output_tokens.shape[1]), sparse_mask), dim=1)
        hs, src = self.transformer(src, pos_src, tokens, token_mask)
        iou_token_out = hs[:, first]
        mask_tokens_out = hs[:, first + 1 : first + 1 + self.num_mask_tokens]

        src = src.transpose(1, 2).reshape(b, c, h, w)
        if self.use_high_res_features:
            up1, norm, act1, up2, act2 = self.output_upscaling
            assert high_res_features is not None  # checked at construction: the model passes them
            feat_s0, feat_s1 = high_res_features  # batch 1 broadcasts over repeated prompts
            upscaled = act1(norm(up1(src) + feat_s1))
            upscaled = act2(up2(upscaled) + feat_s0)
        else:
            upscaled = self.output_upscaling(src)

        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )  # (B, M, C/8)
        b, c, h, w = upscaled.shape
        masks = (hyper_in @ upscaled.reshape(b, c, h * w)).reshape(b, -1, h, w)

        iou_pred = self.iou_prediction_head(iou_token_out)
        if self.pred_obj_scores:
            object_score_logits = self.pred_obj_score_head(hs[:, 0])
        else:
            object_score_logits = 10.0 * iou_pred.new_ones(iou_pred.shape[0], 1)
        return masks, iou_pred, mask_tokens_out, object_score_logits

    def select_stable(self, masks: torch.Tensor, iou_pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keep the single-mask output if it is stable, else the best-scored multimask output.

        masks (B, 4, h, w) and iou_pred (B, 4) of all mask tokens -> (B, 1, h, w), (B, 1)."""
        multi_masks, multi_iou = masks[:, 1:], iou_pred[:, 1:]
        best = multi_iou.argmax(dim=-1)
        rows = torch.arange(masks.shape[0], device=masks.device)
        best_masks = multi_masks[rows, best].unsqueeze(1)
        best_iou = multi_iou[rows, best].unsqueeze(1)
        single_masks, single_iou = masks[:, 0:1], iou_pred[:, 0:1]
        flat = single_masks.flatten(-2)
        area_inner = (flat > self.stability_delta).sum(-1).float()
        area_outer = (flat > -self.stability_delta).sum(-1).float()
        stability = torch.where(area_outer > 0, area_inner / area_outer, 1.0)
        stable = stability >= self.stability_thresh  # (B, 1)
        return (
            torch.where(stable[..., None, None], single_masks, best_masks),
            torch.where(stable, single_iou, best_iou),
        )
