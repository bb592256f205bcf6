"""The SAM2 model: encode an image, decode prompts into masks, and track one video frame with memory.

Module and parameter names match the official implementation one-to-one, so official state dicts
load strictly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..transforms import upscale_masks
from .common import MLP, to_maps, to_sequence
from .config import Sam2Config
from .gemm import Linear
from .image_encoder import ImageEncoder
from .mask_decoder import MaskDecoder
from .memory import MemoryAttention, MemoryEncoder
from .outputs import ImageFeatures, MemoryBank, MemoryEntry, SamOutput, TrackStepOutput
from .position import sine_1d
from .prompt_encoder import PromptEncoder

#: Logit given to masks of frames where the object is predicted absent.
NO_OBJ_SCORE = -1024.0

__all__ = [
    "NO_OBJ_SCORE",
    "ImageFeatures",
    "MemoryBank",
    "MemoryEntry",
    "Sam2Model",
    "SamOutput",
    "TrackStepOutput",
    "non_overlapping",
    "select_closest_cond_frames",
]


class Sam2Model(nn.Module):
    """SAM2 / SAM2.1 with every module of the official model; built from a :class:`Sam2Config`."""

    def __init__(self, config: Sam2Config) -> None:
        super().__init__()
        config.validate()
        self.config = c = config
        hidden, mem = c.hidden_dim, c.mem_dim
        emb = c.embedding_size

        self.image_encoder = ImageEncoder(c.trunk, c.neck)
        self.memory_attention = MemoryAttention(c.memory_attention, hidden, mem, emb)
        self.memory_encoder = MemoryEncoder(c.memory_encoder, hidden)
        self.num_feature_levels = 3 if c.use_high_res_features_in_sam else 1

        if c.use_obj_ptrs_in_encoder:
            self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(c.num_maskmem, 1, 1, mem))
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, hidden))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, hidden))
        if c.pred_obj_scores and c.use_obj_ptrs_in_encoder:
            self.no_obj_ptr = nn.Parameter(torch.zeros(1, hidden))
        if c.no_obj_embed_spatial:
            self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, mem))

        self.sam_prompt_encoder = PromptEncoder(
            hidden, (emb, emb), (c.image_size, c.image_size), c.decoder.mask_in_chans
        )
        self.sam_mask_decoder = MaskDecoder(
            hidden,
            c.decoder,
            use_high_res_features=c.use_high_res_features_in_sam,
            iou_prediction_use_sigmoid=c.iou_prediction_use_sigmoid,
            pred_obj_scores=c.pred_obj_scores,
            pred_obj_scores_mlp=c.pred_obj_scores_mlp,
            use_multimask_token_for_obj_ptr=c.use_multimask_token_for_obj_ptr,
        )
        self.obj_ptr_proj: nn.Module
        if c.use_obj_ptrs_in_encoder:
            self.obj_ptr_proj = MLP(hidden, hidden, hidden, 3) if c.use_mlp_for_obj_ptr_proj else Linear(hidden, hidden)
        else:
            self.obj_ptr_proj = nn.Identity()
        self.obj_ptr_tpos_proj = Linear(hidden, mem) if c.proj_tpos_enc_in_obj_ptrs else nn.Identity()
        self._init_embeddings()
        #: The automatic-mask grid decoder's compiled pass (``masklet.compiled.compile_model(...,
        #: automatic_masks=True)``); None runs it eagerly. Not pickled or copied: copies run eagerly.
        self.compiled_grid_decode: Callable[..., Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["compiled_grid_decode"] = None
        return state

    def _init_embeddings(self) -> None:
        for name in ("maskmem_tpos_enc", "no_mem_embed", "no_mem_pos_enc", "no_obj_ptr", "no_obj_embed_spatial"):
            if hasattr(self, name):
                nn.init.trunc_normal_(getattr(self, name), std=0.02)

    @property
    def device(self) -> torch.device:
        return self.no_mem_embed.device

    @property
    def dtype(self) -> torch.dtype:
        return self.no_mem_embed.dtype

    @property
    def encoder_dtype(self) -> torch.dtype:
        """Dtype of the image encoder, which may differ from the heads' (see ``weights.load_model``)."""
        return self.image_encoder.trunk.pos_embed.dtype

    @property
    def image_size(self) -> int:
        return self.config.image_size

    # ----------------------------------------------------------------- images

    def encode_image(self, images: torch.Tensor) -> ImageFeatures:
        """(B, 3, S, S) normalised images -> features of the levels the SAM heads use.

        The encoder runs in :attr:`encoder_dtype`; its outputs come back in the heads' dtype.
        """
        then = None
        if self.config.use_high_res_features_in_sam:  # the decoder's projections of the finest levels
            first = len(self.image_encoder.neck.convs) - self.image_encoder.scalp - self.num_feature_levels
            then = {first: self.sam_mask_decoder.conv_s0, first + 1: self.sam_mask_decoder.conv_s1}
        features, positions = self.image_encoder(images.to(self.encoder_dtype), then)
        features = [f.to(self.dtype) for f in features[-self.num_feature_levels :]]
        positions = [p.to(self.dtype) for p in positions[-self.num_feature_levels :]]
        # Trunk outputs are channels-last views; the decoder is far faster on contiguous maps.
        return ImageFeatures(levels=[f.contiguous() for f in features], positions=list(positions))

    def image_embeddings(self, features: ImageFeatures) -> list[torch.Tensor]:
        """Per-level maps for single-image prompting: the no-memory embedding is added to the last."""
        levels = list(features.levels)
        if self.config.directly_add_no_mem_embed:
            levels[-1] = levels[-1] + self.no_mem_embed.reshape(1, -1, 1, 1)
        return levels

    def decode_masks(
        self,
        image_embed: torch.Tensor,
        high_res: list[torch.Tensor] | None,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        mask_input: torch.Tensor | None,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decode B prompt sets against one image: mask logits (B, M, 4h, 4w), IoU (B, M), object logits (B, 1).

        ``points`` are (B, N, 2) model-frame pixels and (B, N) labels, box corners included
        (labels 2, 3); ``mask_input`` is (B, 1, 4h, 4w) logits.
        """
        sparse, dense = self.sam_prompt_encoder(points, None, mask_input)
        sparse, dense = sparse.to(image_embed.dtype), dense.to(image_embed.dtype)
        batch = sparse.shape[0]
        masks, ious, _, object_logits = self.sam_mask_decoder(
            image_embeddings=image_embed,
            image_pe=self.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
            repeat_image=batch > 1 and image_embed.shape[0] == 1,
            high_res_features=high_res,
        )
        return masks, ious, object_logits

    # ------------------------------------------------------------ SAM heads

    def forward_sam_heads(
        self,
        backbone_features: torch.Tensor,
        point_inputs: dict[str, torch.Tensor] | None = None,
        mask_inputs: torch.Tensor | None = None,
        high_res_features: list[torch.Tensor] | None = None,
        multimask_output: bool = False,
    ) -> SamOutput:
        """Prompt encoder + mask decoder on (B, C, h, w) features, as used while tracking."""
        b = backbone_features.shape[0]
        device = backbone_features.device
        if point_inputs is not None:
            coords, labels = point_inputs["point_coords"], point_inputs["point_labels"]
        else:
            coords = torch.zeros(b, 1, 2, device=device)
            labels = -torch.ones(b, 1, dtype=torch.int32, device=device)
        mask_prompt = None
        if mask_inputs is not None:
            mask_prompt = mask_inputs
            if mask_inputs.shape[-2:] != self.sam_prompt_encoder.mask_input_size:
                mask_prompt = F.interpolate(
                    mask_inputs.float(),
                    size=self.sam_prompt_encoder.mask_input_size,
                    mode="bilinear",
                    align_corners=False,
                    antialias=True,
                )
            mask_prompt = mask_prompt.to(backbone_features.dtype)
        sparse, dense = self.sam_prompt_encoder((coords, labels), None, mask_prompt)
        low_res_multimasks, ious, sam_tokens, object_logits = self.sam_mask_decoder(
            image_embeddings=backbone_features,
            image_pe=self.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse.to(backbone_features.dtype),
            dense_prompt_embeddings=dense.to(backbone_features.dtype),
            multimask_output=multimask_output,
            repeat_image=False,
            high_res_features=high_res_features,
        )
        if self.config.pred_obj_scores:
            appearing = object_logits > 0
            low_res_multimasks = torch.where(appearing[:, None, None], low_res_multimasks, NO_OBJ_SCORE)
        low_res_multimasks = low_res_multimasks.float()
        high_res_multimasks = upscale_masks(low_res_multimasks, self.image_size)

        sam_token = sam_tokens[:, 0]
        if multimask_output:
            best = ious.argmax(dim=-1)
            rows = torch.arange(b, device=device)
            low_res_masks = low_res_multimasks[rows, best].unsqueeze(1)
            high_res_masks = high_res_multimasks[rows, best].unsqueeze(1)
            if sam_tokens.shape[1] > 1:
                sam_token = sam_tokens[rows, best]
        else:
            low_res_masks, high_res_masks = low_res_multimasks, high_res_multimasks

        obj_ptr = self.obj_ptr_proj(sam_token)
        if self.config.pred_obj_scores:
            weight = torch.sigmoid(object_logits) if self.config.soft_no_obj_ptr else appearing.float()
            obj_ptr = self._mix_no_obj_ptr(obj_ptr, weight)
        return SamOutput(
            low_res_multimasks, high_res_multimasks, ious, low_res_masks, high_res_masks, obj_ptr, object_logits
        )

    def _mix_no_obj_ptr(self, obj_ptr: torch.Tensor, appearing: torch.Tensor) -> torch.Tensor:
        if self.config.fixed_no_obj_ptr:
            obj_ptr = appearing * obj_ptr
        return obj_ptr + (1 - appearing) * self.no_obj_ptr

    def use_mask_as_output(
        self, backbone_features: torch.Tensor, high_res_features: list[torch.Tensor] | None, mask_inputs: torch.Tensor
    ) -> SamOutput:
        """Turn a given binary mask (B, 1, S, S) into output logits directly (no SAM decoding)."""
        scale, bias = 20.0, -10.0
        mask = mask_inputs.float()
        high_res = mask * scale + bias
        low_res = F.interpolate(
            high_res,
            size=(high_res.shape[-2] // 4, high_res.shape[-1] // 4),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        ious = mask.new_ones(mask.shape[0], 1)
        if self.config.use_obj_ptrs_in_encoder:
            obj_ptr = self.forward_sam_heads(
                backbone_features,
                mask_inputs=self.mask_downsample(mask.to(self.mask_downsample.weight.dtype)),
                high_res_features=high_res_features,
            ).obj_ptr
        else:
            obj_ptr = torch.zeros(mask.shape[0], self.config.hidden_dim, device=mask.device)
        appearing = (mask.flatten(1) > 0).any(dim=1, keepdim=True).float()
        object_logits = scale * appearing + bias
        if self.config.pred_obj_scores:
            obj_ptr = self._mix_no_obj_ptr(obj_ptr, appearing)
        return SamOutput(low_res, high_res, ious, low_res, high_res, obj_ptr, object_logits)

    # ---------------------------------------------------------------- memory

    def encode_memory(
        self,
        pix_feat: torch.Tensor,
        pred_masks_high_res: torch.Tensor,
        object_score_logits: torch.Tensor,
        is_mask_from_pts: bool,
        binarize_mask_from_pts: bool | None = None,
        non_overlap: bool | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory features (B, C_mem, h, w) and position encoding of a frame and its masks.

        ``binarize_mask_from_pts`` / ``non_overlap`` override the config's
        ``binarize_mask_from_pts_for_mem_enc`` / ``non_overlap_masks_for_mem_enc`` when given.
        """
        c = self.config
        binarize = c.binarize_mask_from_pts_for_mem_enc if binarize_mask_from_pts is None else binarize_mask_from_pts
        non_overlap = c.non_overlap_masks_for_mem_enc if non_overlap is None else non_overlap
        if non_overlap and not self.training:
            pred_masks_high_res = non_overlapping(pred_masks_high_res)
        if binarize and is_mask_from_pts and not self.training:
            mask = (pred_masks_high_res > 0).float()
        else:
            mask = torch.sigmoid(pred_masks_high_res)
        if c.sigmoid_scale_for_mem_enc != 1.0:
            mask = mask * c.sigmoid_scale_for_mem_enc
        if c.sigmoid_bias_for_mem_enc != 0.0:
            mask = mask + c.sigmoid_bias_for_mem_enc
        dtype = self.memory_encoder.pix_feat_proj.weight.dtype  # bfloat16 after load_model(memory_dtype=...)
        features, position = self.memory_encoder(pix_feat.to(dtype), mask.to(dtype), skip_mask_sigmoid=True)
        features, position = features.to(pix_feat.dtype), position.to(pix_feat.dtype)
        if c.no_obj_embed_spatial:
            absent = 1 - (object_score_logits > 0).float()
            features = features + absent[..., None, None] * self.no_obj_embed_spatial[..., None, None]
        return features, position

    def condition_on_memory(
        self,
        frame_idx: int,
        is_init_cond_frame: bool,
        vision_feat: torch.Tensor,
        vision_pos: torch.Tensor,
        feat_size: tuple[int, int],
        memory_frames: MemoryBank,
        num_frames: int | None,
        track_in_reverse: bool = False,
    ) -> torch.Tensor:
        """Fuse the frame's lowest-resolution features (hw, B, C) with its memories -> (B, C, h, w)."""
        c = self.config
        b = vision_feat.shape[1]
        h, w = feat_size

        def to_map(x: torch.Tensor) -> torch.Tensor:
            return to_maps(x, (h, w))

        if c.num_maskmem == 0:
            return to_map(vision_feat)
        if is_init_cond_frame:
            if c.directly_add_no_mem_embed:
                return to_map(vision_feat + self.no_mem_embed)
            memory = self.no_mem_embed.expand(1, b, c.mem_dim)
            memory_pos = self.no_mem_pos_enc.expand(1, b, c.mem_dim)
            num_ptr_tokens = 0
        else:
            memory, memory_pos, num_ptr_tokens = self._gather_memory(
                frame_idx, memory_frames, num_frames, track_in_reverse, b, vision_feat.device
            )
        dtype = self.memory_attention.norm.weight.dtype  # bfloat16 after load_model(dtype=...)
        if b > 1 and vision_feat.stride(1) == 0 and vision_pos.stride(1) == 0:
            # one frame expanded over the objects: memory attention shares its first self-attention
            vision_feat, vision_pos = vision_feat[:, :1], vision_pos[:, :1]
        out = self.memory_attention(
            curr=vision_feat.to(dtype),
            memory=memory.to(dtype),
            curr_pos=vision_pos.to(dtype),
            memory_pos=memory_pos.to(dtype),
            num_obj_ptr_tokens=num_ptr_tokens,
        )
        return to_map(out.to(vision_feat.dtype))

    def select_memory(
        self, frame_idx: int, bank: MemoryBank, num_frames: int | None, reverse: bool
    ) -> tuple[list[tuple[int, MemoryEntry]], list[tuple[int, torch.Tensor]], int]:
        """The bank entries a frame attends to: (t_pos, entry) of the spatial memories (0 for
        conditioning frames), (frame distance, pointer) of the object pointers, and the pointer limit."""
        c = self.config
        if not bank.cond:
            raise ValueError("tracking a non-conditioning frame needs at least one conditioning frame")
        selected, unselected = select_closest_cond_frames(frame_idx, bank.cond, c.max_cond_frames_in_attn)
        stride = 1 if self.training else c.memory_temporal_stride_for_eval
        entries: list[tuple[int, MemoryEntry]] = [(0, out) for out in selected.values()]
        for t_pos in range(1, c.num_maskmem):
            t_rel = c.num_maskmem - t_pos  # frames before the current one
            if t_rel == 1:
                prev = frame_idx + t_rel if reverse else frame_idx - t_rel
            elif not reverse:
                prev = ((frame_idx - 2) // stride) * stride - (t_rel - 2) * stride
            else:
                prev = -(-(frame_idx + 2) // stride) * stride + (t_rel - 2) * stride
            found = bank.non_cond.get(prev, unselected.get(prev))
            if found is not None:
                entries.append((t_pos, found))

        max_ptrs = c.max_obj_ptrs_in_encoder if num_frames is None else min(num_frames, c.max_obj_ptrs_in_encoder)
        pointers: list[tuple[int, torch.Tensor]] = []
        if c.use_obj_ptrs_in_encoder:
            if not self.training and c.only_obj_ptrs_in_the_past_for_eval:
                ptr_cond = {t: o for t, o in selected.items() if (t >= frame_idx if reverse else t <= frame_idx)}
            else:
                ptr_cond = selected
            sign = -1 if reverse else 1
            pointers = [
                ((frame_idx - t) * sign if c.use_signed_tpos_enc_to_obj_ptrs else abs(frame_idx - t), o.obj_ptr)
                for t, o in ptr_cond.items()
            ]
            for t_diff in range(1, max_ptrs):
                t = frame_idx + t_diff if reverse else frame_idx - t_diff
                if t < 0 or (num_frames is not None and t >= num_frames):
                    break
                found = bank.non_cond.get(t, unselected.get(t))
                if found is not None:
                    pointers.append((t_diff, found.obj_ptr))
        return entries, pointers, max_ptrs

    def _gather_memory(
        self,
        frame_idx: int,
        bank: MemoryBank,
        num_frames: int | None,
        reverse: bool,
        batch: int,
        device: torch.device,
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Spatial memories of the selected frames, then object pointers, sequence-first."""
        c = self.config
        entries, pointers, max_ptrs = self.select_memory(frame_idx, bank, num_frames, reverse)
        memories, positions = [], []
        for t_pos, out in entries:
            assert out.maskmem_features is not None and out.maskmem_pos_enc is not None  # tracked frames carry memory
            memories.append(to_sequence(out.maskmem_features.to(device)))
            pos = to_sequence(out.maskmem_pos_enc.to(device))
            positions.append(pos + self.maskmem_tpos_enc[c.num_maskmem - t_pos - 1])

        num_ptr_tokens = 0
        if pointers:
            pos_list, ptr_list = zip(*pointers)
            ptrs = torch.stack([p.to(device) for p in ptr_list])  # (P, B, C)
            if c.add_tpos_enc_to_obj_ptrs:
                tpos_dim = c.hidden_dim if c.proj_tpos_enc_in_obj_ptrs else c.mem_dim
                rel = torch.tensor(pos_list, device=device, dtype=torch.float32) / (max_ptrs - 1)
                ptr_pos = self.obj_ptr_tpos_proj(sine_1d(rel, tpos_dim).to(self.dtype))
                ptr_pos = ptr_pos.unsqueeze(1).expand(-1, batch, c.mem_dim)
            else:
                ptr_pos = ptrs.new_zeros(len(pos_list), batch, c.mem_dim)
            if c.mem_dim < c.hidden_dim:
                # Split each pointer into tokens of the memory width.
                split = c.hidden_dim // c.mem_dim
                ptrs = ptrs.reshape(-1, batch, split, c.mem_dim).permute(0, 2, 1, 3).flatten(0, 1)
                ptr_pos = ptr_pos.repeat_interleave(split, dim=0)
            memories.append(ptrs)
            positions.append(ptr_pos)
            num_ptr_tokens = ptrs.shape[0]
        return torch.cat(memories), torch.cat(positions), num_ptr_tokens

    def track_step(
        self,
        frame_idx: int,
        is_init_cond_frame: bool,
        current_vision_feats: list[torch.Tensor],
        current_vision_pos_embeds: list[torch.Tensor],
        feat_sizes: list[tuple[int, int]],
        point_inputs: dict[str, torch.Tensor] | None,
        mask_inputs: torch.Tensor | None,
        memory: MemoryBank,
        num_frames: int | None,
        track_in_reverse: bool = False,
        run_mem_encoder: bool = True,
        prev_sam_mask_logits: torch.Tensor | None = None,
        *,
        binarize_mask_from_pts: bool | None = None,
        non_overlap_memory: bool | None = None,
    ) -> TrackStepOutput:
        """One frame of tracking for B objects; features are sequence-first (hw, B, C), finest first.

        The two keyword options override the config when encoding memory (see :meth:`encode_memory`).
        """
        c = self.config
        high_res = None
        if len(current_vision_feats) > 1:
            high_res = [to_maps(x, s) for x, s in zip(current_vision_feats[:-1], feat_sizes[:-1])]
        if mask_inputs is not None and c.use_mask_input_as_output_without_sam:
            pix_feat = to_maps(current_vision_feats[-1], feat_sizes[-1])
            sam = self.use_mask_as_output(pix_feat, high_res, mask_inputs)
        else:
            pix_feat = self.condition_on_memory(
                frame_idx,
                is_init_cond_frame,
                current_vision_feats[-1],
                current_vision_pos_embeds[-1],
                feat_sizes[-1],
                memory,
                num_frames,
                track_in_reverse,
            )
            if prev_sam_mask_logits is not None:
                mask_inputs = prev_sam_mask_logits
            num_pts = 0 if point_inputs is None else point_inputs["point_labels"].shape[1]
            multimask = (
                c.multimask_output_in_sam
                and (is_init_cond_frame or c.multimask_output_for_tracking)
                and c.multimask_min_pt_num <= num_pts <= c.multimask_max_pt_num
            )
            sam = self.forward_sam_heads(pix_feat, point_inputs, mask_inputs, high_res, multimask)

        out = TrackStepOutput(
            point_inputs=point_inputs,
            mask_inputs=mask_inputs,
            pred_multimasks=sam.low_res_multimasks,
            ious=sam.ious,
            pred_masks=sam.low_res_masks,
            pred_masks_high_res=sam.high_res_masks,
            obj_ptr=sam.obj_ptr,
            object_score_logits=sam.object_score_logits,
        )
        if run_mem_encoder and c.num_maskmem > 0:
            raw_feat = to_maps(current_vision_feats[-1], feat_sizes[-1])
            out.maskmem_features, out.maskmem_pos_enc = self.encode_memory(
                raw_feat,
                sam.high_res_masks,
                sam.object_score_logits,
                point_inputs is not None,
                binarize_mask_from_pts,
                non_overlap_memory,
            )
        return out


def select_closest_cond_frames(
    frame_idx: int, cond_frames: Mapping[int, Any], max_cond_frames: int
) -> tuple[dict[int, Any], dict[int, Any]]:
    """Pick up to ``max_cond_frames`` conditioning frames: the nearest before, the nearest after,
    then the temporally closest others. Returns (selected, unselected)."""
    if max_cond_frames == -1 or len(cond_frames) <= max_cond_frames:
        return dict(cond_frames), {}
    if max_cond_frames < 2:
        raise ValueError("max_cond_frames_in_attn must be -1 or at least 2")
    selected: dict[int, Any] = {}
    before = max((t for t in cond_frames if t < frame_idx), default=None)
    if before is not None:
        selected[before] = cond_frames[before]
    after = min((t for t in cond_frames if t >= frame_idx), default=None)
    if after is not None:
        selected[after] = cond_frames[after]
    rest = sorted((t for t in cond_frames if t not in selected), key=lambda t: abs(t - frame_idx))
    for t in rest[: max_cond_frames - len(selected)]:
        selected[t] = cond_frames[t]
    unselected = {t: v for t, v in cond_frames.items() if t not in selected}
    return selected, unselected


def non_overlapping(pred_masks: torch.Tensor) -> torch.Tensor:
    """Keep, at each pixel, only the highest-scoring object's logit positive: (B, 1, H, W)."""
    if pred_masks.shape[0] == 1:
        return pred_masks
    winner = pred_masks.argmax(dim=0, keepdim=True)
    ids = torch.arange(pred_masks.shape[0], device=pred_masks.device)[:, None, None, None]
    return torch.where(winner == ids, pred_masks, pred_masks.clamp(max=-10.0))
