"""Export wrapper of the prompt encoder + mask decoder, with every mask token's logits and pointer."""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from ..model import Sam2Model
from ..model.prompt_encoder import PAD_LABEL


class DecoderExport(nn.Module):
    """Prompt encoder + mask decoder for B prompt sets of N points, with every mask token's output.

    The image inputs may have batch 1 (one image, B objects) or B. ``has_mask_input`` (1,) is 1
    to use ``mask_input`` as a dense prompt and 0 to ignore it.
    """

    def __init__(self, model: Sam2Model) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        image_embed: torch.Tensor,
        high_res_feats_0: torch.Tensor,
        high_res_feats_1: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        m = self.model
        pe, dec = m.sam_prompt_encoder, m.sam_mask_decoder
        batch = point_coords.shape[0]
        # sparse tokens: the points, then one padding point (the model is prompted without boxes)
        coords = torch.cat((point_coords + 0.5, point_coords[:, :1] * 0), dim=1)
        labels = torch.cat((point_labels, point_labels[:, :1] * 0 + PAD_LABEL), dim=1).unsqueeze(-1)
        tokens = pe.pe_layer.forward_with_coords(coords, pe.input_image_size)
        tokens = torch.where(labels == PAD_LABEL, pe.not_a_point_embed.weight.expand_as(tokens), tokens)
        for value, embedding in enumerate(pe.point_embeddings):
            tokens = torch.where(labels == value, tokens + cast(nn.Embedding, embedding).weight, tokens)
        no_mask = pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        has = has_mask_input.reshape(1, 1, 1, 1)
        dense = has * pe.mask_downscaling(mask_input) + (1 - has) * no_mask

        parts = [dec.iou_token.weight, dec.mask_tokens.weight]
        if dec.pred_obj_scores:
            parts.insert(0, dec.obj_score_token.weight)
        first = 1 if dec.pred_obj_scores else 0
        output_tokens = torch.cat(parts).unsqueeze(0).expand(batch, -1, -1)
        tokens = torch.cat((output_tokens, tokens), dim=1)
        src = image_embed.expand(batch, -1, -1, -1) + dense
        image_pe = pe.get_dense_pe()
        b, c, h, w = src.shape
        hs, src = dec.transformer(src, image_pe.expand(batch, -1, -1, -1), tokens)
        iou_token_out = hs[:, first]
        mask_tokens_out = hs[:, first + 1 : first + 1 + dec.num_mask_tokens]
        src = src.transpose(1, 2).reshape(b, c, h, w)
        if dec.use_high_res_features:
            up1, norm, act1, up2, act2 = dec.output_upscaling
            upscaled = act1(norm(up1(src) + high_res_feats_1))
            upscaled = act2(up2(upscaled) + high_res_feats_0)
        else:
            upscaled = dec.output_upscaling(src)
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(dec.output_hypernetworks_mlps)], dim=1
        )
        _, uc, uh, uw = upscaled.shape
        masks = (hyper_in @ upscaled.reshape(b, uc, uh * uw)).reshape(b, -1, uh, uw)
        iou = dec.iou_prediction_head(iou_token_out)
        if dec.pred_obj_scores:
            object_logits = dec.pred_obj_score_head(hs[:, 0])
        else:
            object_logits = iou[:, :1] * 0 + 10.0
        obj_ptr = m.obj_ptr_proj(mask_tokens_out)  # (B, M, C): the pointer of each mask token
        if m.config.pred_obj_scores:
            appearing = torch.sigmoid(object_logits) if m.config.soft_no_obj_ptr else (object_logits > 0).float()
            appearing = appearing.unsqueeze(-1)
            if m.config.fixed_no_obj_ptr:
                obj_ptr = appearing * obj_ptr
            obj_ptr = obj_ptr + (1 - appearing) * m.no_obj_ptr
        return masks, iou, obj_ptr, object_logits
