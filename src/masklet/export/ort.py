"""ONNX Runtime backend: a :class:`Sam2Model` whose encoder, decoder and video step run exported ONNX models.

``OrtSam2Model`` keeps masklet's small glue (prompt validation, memory selection, resizing) in
PyTorch and sends every network evaluation to ONNX Runtime, so ``ImagePredictor``,
``MaskGenerator``, ``VideoPredictor`` and ``StreamTracker`` accept it unchanged.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InvalidInputError
from ..model.sam2 import NO_OBJ_SCORE, ImageFeatures, Sam2Model, SamOutput, non_overlapping
from ..transforms import upscale_masks
from .onnx import FILES, MANIFEST, export_onnx


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().float().contiguous().cpu().numpy()


class OrtSam2Model(Sam2Model):
    """A Sam2Model running its networks in ONNX Runtime sessions built from an export folder."""

    def __init__(self, model: Sam2Model, onnx_dir: str | Path, threads: int | None = None) -> None:
        super().__init__(model.config)
        self.load_state_dict(model.state_dict())
        self.eval()
        import onnxruntime as ort

        folder = Path(onnx_dir)
        manifest = folder / MANIFEST
        if not manifest.is_file():
            raise InvalidInputError(f"onnx_dir: {folder} has no {MANIFEST}; write one with masklet export onnx")
        self.manifest = json.loads(manifest.read_text())
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only (shape-merge notes of the trunk are harmless)
        if threads is not None:
            options.intra_op_num_threads = threads
        self.sessions: dict[str, Any] = {}
        for name, file in FILES.items():
            if (folder / file).is_file():
                self.sessions[name] = ort.InferenceSession(
                    str(folder / file), options, providers=["CPUExecutionProvider"]
                )
        self._positions: dict[tuple, torch.Tensor] = {}

    def _require(self, part: str) -> None:
        if part not in self.sessions:
            raise InvalidInputError(f"the ONNX export has no {part} model; export it with --parts including it")

    def _run(self, part: str, **inputs: torch.Tensor) -> list[torch.Tensor]:
        self._require(part)
        feed = {k: (v.detach().cpu().numpy() if v.dtype == torch.int32 else _np(v)) for k, v in inputs.items()}
        return [torch.from_numpy(o) for o in self.sessions[part].run(None, feed)]

    # ----------------------------------------------------------------- images

    def encode_image(self, images: torch.Tensor) -> ImageFeatures:
        self._require("encoder")
        if self.sessions["encoder"].get_inputs()[0].shape[0] == 1:  # an export from before the dynamic batch
            outs = [self._run("encoder", pixels=images[i : i + 1]) for i in range(images.shape[0])]
            s0, s1, _, vision, pos = (torch.cat([o[j] for o in outs]) if j != 4 else outs[0][4] for j in range(5))
        else:
            s0, s1, _, vision, pos = self._run("encoder", pixels=images)  # the whole batch in one run
        b = images.shape[0]
        if self.config.use_high_res_features_in_sam:
            levels = [s0, s1, vision]
        else:
            levels = [vision]
        positions = [self._position(f) for f in levels[:-1]] + [pos.expand(b, -1, -1, -1)]
        return ImageFeatures(levels=levels, positions=positions)

    def _position(self, level: torch.Tensor) -> torch.Tensor:
        """Sine encoding of a finer level (constant per shape; the trackers never read it)."""
        key = tuple(level.shape)
        if key not in self._positions:
            with torch.inference_mode(False), torch.no_grad():
                enc = self.image_encoder.neck.position_encoding
                self._positions[key] = enc(torch.zeros(1, *key[1:])).expand(key[0], -1, -1, -1)
        return self._positions[key]

    def _decode(self, image_embed, high_res, coords, labels, mask_input):
        e = self.config.embedding_size
        b = coords.shape[0]
        if high_res is None:
            dummy = image_embed[:, :1, :1, :1] * 0
            high_res = [dummy, dummy]
        has = torch.ones(1) if mask_input is not None else torch.zeros(1)
        if mask_input is None:
            mask_input = torch.zeros(b, 1, 4 * e, 4 * e)
        return self._run(
            "decoder",
            image_embed=image_embed,
            high_res_feats_0=high_res[0],
            high_res_feats_1=high_res[1],
            point_coords=coords.float(),
            point_labels=labels.to(torch.int32),
            mask_input=mask_input.float(),
            has_mask_input=has,
        )

    def decode_masks(self, image_embed, high_res, points, mask_input, multimask_output):
        if points is None:
            raise InvalidInputError("the ONNX Runtime backend decodes prompts with points or a box; add one")
        masks, ious, _, object_logits = self._decode(image_embed, high_res, points[0], points[1], mask_input)
        masks, ious = self._select(masks, ious, multimask_output)
        return masks, ious, object_logits

    def _select(self, masks: torch.Tensor, ious: torch.Tensor, multimask: bool):
        dec = self.sam_mask_decoder
        if multimask:
            return masks[:, 1:], ious[:, 1:]
        if dec.dynamic_multimask_via_stability:
            return dec.select_stable(masks, ious)
        return masks[:, :1], ious[:, :1]

    # ------------------------------------------------------------ SAM heads

    def forward_sam_heads(
        self, backbone_features, point_inputs=None, mask_inputs=None, high_res_features=None, multimask_output=False
    ) -> SamOutput:
        b = backbone_features.shape[0]
        if point_inputs is not None:
            coords, labels = point_inputs["point_coords"], point_inputs["point_labels"]
        else:
            coords, labels = torch.zeros(b, 1, 2), -torch.ones(b, 1, dtype=torch.int32)
        mask_prompt = None
        if mask_inputs is not None:
            mask_prompt = mask_inputs.float()
            if mask_inputs.shape[-2:] != self.sam_prompt_encoder.mask_input_size:
                mask_prompt = F.interpolate(
                    mask_prompt,
                    size=self.sam_prompt_encoder.mask_input_size,
                    mode="bilinear",
                    align_corners=False,
                    antialias=True,
                )
        masks, ious, ptrs, object_logits = self._decode(
            backbone_features, high_res_features, coords, labels, mask_prompt
        )
        low_multi, ious = self._select(masks, ious, multimask_output)
        if self.config.pred_obj_scores:
            low_multi = torch.where((object_logits > 0)[:, None, None], low_multi, NO_OBJ_SCORE)
        size = (self.image_size, self.image_size)
        high_multi = upscale_masks(low_multi, size, dtype=None)
        obj_ptr = ptrs[:, 0]
        if multimask_output:
            best = ious.argmax(dim=-1)
            rows = torch.arange(b)
            low, high = low_multi[rows, best].unsqueeze(1), high_multi[rows, best].unsqueeze(1)
            if self.config.use_multimask_token_for_obj_ptr:
                obj_ptr = ptrs[rows, 1 + best]
        else:
            low, high = low_multi, high_multi
        return SamOutput(low_multi, high_multi, ious, low, high, obj_ptr, object_logits)

    # ---------------------------------------------------------------- memory

    def encode_memory(
        self,
        pix_feat,
        pred_masks_high_res,
        object_score_logits,
        is_mask_from_pts,
        binarize_mask_from_pts=None,
        non_overlap=None,
    ):
        c = self.config
        binarize = c.binarize_mask_from_pts_for_mem_enc if binarize_mask_from_pts is None else binarize_mask_from_pts
        non_overlap = c.non_overlap_masks_for_mem_enc if non_overlap is None else non_overlap
        if non_overlap:
            pred_masks_high_res = non_overlapping(pred_masks_high_res)
        flag = torch.ones(1) if binarize and is_mask_from_pts else torch.zeros(1)
        b = pred_masks_high_res.shape[0]
        features, position = self._run(
            "memory_encoder",
            pix_feat=pix_feat.expand(b, -1, -1, -1),
            mask_logits=pred_masks_high_res,
            object_score_logits=object_score_logits,
            binarize=flag,
        )
        return features, position

    def condition_on_memory(
        self,
        frame_idx,
        is_init_cond_frame,
        vision_feat,
        vision_pos,
        feat_size,
        memory_frames,
        num_frames,
        track_in_reverse=False,
    ):
        c = self.config
        if c.num_maskmem == 0 or is_init_cond_frame:
            if not c.directly_add_no_mem_embed and c.num_maskmem > 0:
                raise InvalidInputError("the ONNX Runtime backend needs a model with directly_add_no_mem_embed")
            return super().condition_on_memory(
                frame_idx,
                is_init_cond_frame,
                vision_feat,
                vision_pos,
                feat_size,
                memory_frames,
                num_frames,
                track_in_reverse,
            )
        self._require("memory_attention")
        b = vision_feat.shape[1]
        memory, memory_pos, num_ptr = self._gather_memory(
            frame_idx, memory_frames, num_frames, track_in_reverse, b, vision_feat.device
        )
        if b > 1 and vision_feat.stride(1) == 0 and vision_pos.stride(1) == 0:
            vision_feat, vision_pos = vision_feat[:, :1], vision_pos[:, :1]
        split = memory.shape[0] - num_ptr
        (out,) = self._run(
            "memory_attention",
            curr=vision_feat,
            curr_pos=vision_pos,
            memory=memory[:split],
            memory_pos=memory_pos[:split],
            obj_ptrs=memory[split:],
            obj_ptrs_pos=memory_pos[split:],
        )
        return out

    # ------------------------------------------------------------------- AMG

    def grid_decoder(self, levels: list[torch.Tensor]) -> OrtGridDecoder:
        """The decoder MaskGenerator uses for grids of single-point prompts."""
        return OrtGridDecoder(self, levels)


class _OrtDecoded:
    """Per-prompt decoder output: the low-res logits of every mask token (B, M, h, w)."""

    def __init__(self, masks: torch.Tensor) -> None:
        self.keys = masks

    def __getitem__(self, index) -> _OrtDecoded:
        return _OrtDecoded(self.keys[index])

    def __len__(self) -> int:
        return self.keys.shape[0]


class OrtGridDecoder:
    """``amg._GridDecoder``'s interface on the ONNX decoder (each call decodes every mask token)."""

    def __init__(self, model: OrtSam2Model, levels: list[torch.Tensor]) -> None:
        self.model = model
        self.dec = model.sam_mask_decoder
        self.levels = levels
        self.hw = tuple(levels[-1].shape[-2:])

    def chunk(self, points_per_batch: int, upscale: bool) -> int:
        return points_per_batch

    def decode(self, coords: torch.Tensor, labels: torch.Tensor, mask_input: torch.Tensor | None):
        high_res = self.levels[:-1] or None
        masks, ious, _, _ = self.model._decode(self.levels[-1], high_res, coords, labels, mask_input)
        return ious, _OrtDecoded(masks)

    def masks(self, state: _OrtDecoded, which) -> torch.Tensor:
        return state.keys[:, list(which)]


def ort_model(model: Sam2Model, onnx_dir: str | Path | None = None, threads: int | None = None) -> OrtSam2Model:
    """The ONNX Runtime version of ``model``: from ``onnx_dir`` (exported first into a temporary folder if None)."""
    if onnx_dir is None:
        onnx_dir = export_onnx(model, tempfile.mkdtemp(prefix="masklet-onnx-"))
    return OrtSam2Model(model, onnx_dir, threads)
