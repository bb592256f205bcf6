"""ONNX Runtime backend: a :class:`Sam2Model` whose encoder, decoder and video step run exported ONNX models.

``OrtSam2Model`` sends every evaluation of a network or a learned parameter to ONNX Runtime and
keeps only parameter-free glue in PyTorch tensor ops (prompt validation, choosing the bank entries
a frame attends to and concatenating them, bilinear resizing of logits, best-mask selection, the
non-overlap constraint), so ``ImagePredictor``, ``MaskGenerator``, ``VideoPredictor`` and
``StreamTracker`` accept it unchanged and a tracking loop calls no PyTorch module.
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
from ..model.common import to_maps, to_sequence
from ..model.outputs import MemoryBank
from ..model.sam2 import NO_OBJ_SCORE, ImageFeatures, Sam2Model, SamOutput, non_overlapping
from ..transforms import upscale_masks
from .manifest import FILES, FORMAT, MANIFEST, high_res_shapes
from .onnx import export_onnx


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
        self.folder = folder
        manifest = folder / MANIFEST
        if not manifest.is_file():
            raise InvalidInputError(f"onnx_dir: {folder} has no {MANIFEST}; write one with masklet export onnx")
        self.manifest = json.loads(manifest.read_text())
        if self.manifest.get("format") != FORMAT:
            raise InvalidInputError(
                f"onnx_dir: {folder} holds a {self.manifest.get('format')} export; this masklet reads {FORMAT}: "
                "export again with masklet export onnx"
            )
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
        self.input_names = {name: {i.name for i in s.get_inputs()} for name, s in self.sessions.items()}
        # sine encodings of the finer levels: constant, computed once here, never on the hot path
        self._positions: dict[tuple[int, ...], torch.Tensor] = {}
        if self.config.use_high_res_features_in_sam:
            with torch.no_grad():
                for shape in high_res_shapes(self):
                    enc = self.image_encoder.neck.position_encoding
                    self._positions[shape] = enc(torch.zeros(1, *shape))

    def _require(self, part: str) -> None:
        if part not in self.sessions:
            raise InvalidInputError(f"the ONNX export has no {part} model; export it with --parts including it")

    def _run(self, part: str, **inputs: torch.Tensor) -> list[torch.Tensor]:
        """Run one exported model on torch tensors (inputs the graph dropped as unused are left out)."""
        self._require(part)
        names = self.input_names[part]
        feed = {
            k: (v.detach().cpu().numpy() if v.dtype in (torch.int32, torch.int64) else _np(v))
            for k, v in inputs.items()
            if k in names
        }
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
        return self._positions[tuple(level.shape[1:])].expand(level.shape[0], -1, -1, -1)

    def image_embeddings(self, features: ImageFeatures) -> list[torch.Tensor]:
        """Per-level maps for single-image prompting: the no-memory embedding is added in ONNX Runtime."""
        levels = list(features.levels)
        if self.config.directly_add_no_mem_embed:
            (levels[-1],) = self._run("no_memory", vision_features=levels[-1])
        return levels

    def _decode(
        self,
        image_embed: torch.Tensor,
        high_res: list[torch.Tensor] | None,
        coords: torch.Tensor,
        labels: torch.Tensor,
        mask_input: torch.Tensor | None,
    ) -> list[torch.Tensor]:
        """The exported decoder: logits, IoU and pointers of every mask token, object logits."""
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

    def decode_masks(
        self,
        image_embed: torch.Tensor,
        high_res: list[torch.Tensor] | None,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        mask_input: torch.Tensor | None,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if points is None:
            raise InvalidInputError("the ONNX Runtime backend decodes prompts with points or a box; add one")
        masks, ious, _, object_logits = self._decode(image_embed, high_res, points[0], points[1], mask_input)
        masks, ious = self._select(masks, ious, multimask_output)
        return masks, ious, object_logits

    def _select(self, masks: torch.Tensor, ious: torch.Tensor, multimask: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The multimask tokens, or the single one (switched to the best multimask one when unstable)."""
        dec = self.sam_mask_decoder
        if multimask:
            return masks[:, 1:], ious[:, 1:]
        if dec.dynamic_multimask_via_stability:
            return dec.select_stable(masks, ious)  # parameter-free: areas above and below a margin
        return masks[:, :1], ious[:, :1]

    # ------------------------------------------------------------ SAM heads

    def forward_sam_heads(
        self,
        backbone_features: torch.Tensor,
        point_inputs: dict[str, torch.Tensor] | None = None,
        mask_inputs: torch.Tensor | None = None,
        high_res_features: list[torch.Tensor] | None = None,
        multimask_output: bool = False,
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

    def use_mask_as_output(
        self, backbone_features: torch.Tensor, high_res_features: list[torch.Tensor] | None, mask_inputs: torch.Tensor
    ) -> SamOutput:
        """A given mask as the output: the downsampling convolution runs in ONNX Runtime (``mask_prompt``)."""
        c = self.config
        scale, bias = 20.0, -10.0
        mask = mask_inputs.float()
        high_res = mask * scale + bias
        size = (high_res.shape[-2] // 4, high_res.shape[-1] // 4)
        low_res = F.interpolate(high_res, size=size, mode="bilinear", align_corners=False, antialias=True)
        appearing = (mask.flatten(1) > 0).any(dim=1, keepdim=True).float()
        if c.use_obj_ptrs_in_encoder:
            prompt, no_obj_ptr = self._run("mask_prompt", mask=mask)
            obj_ptr = self.forward_sam_heads(
                backbone_features, mask_inputs=prompt, high_res_features=high_res_features
            ).obj_ptr
            if c.pred_obj_scores:
                kept = appearing * obj_ptr if c.fixed_no_obj_ptr else obj_ptr
                obj_ptr = kept + (1 - appearing) * no_obj_ptr
        else:
            obj_ptr = torch.zeros(mask.shape[0], c.hidden_dim)
        ious = mask.new_ones(mask.shape[0], 1)
        return SamOutput(low_res, high_res, ious, low_res, high_res, obj_ptr, scale * appearing + bias)

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
        frame_idx: int,
        is_init_cond_frame: bool,
        vision_feat: torch.Tensor,
        vision_pos: torch.Tensor,
        feat_size: tuple[int, int],
        memory_frames: MemoryBank,
        num_frames: int | None,
        track_in_reverse: bool = False,
    ) -> torch.Tensor:
        """Memory attention in ONNX Runtime over the raw bank entries the frame attends to."""
        c = self.config
        b = vision_feat.shape[1]
        shared = b > 1 and vision_feat.stride(1) == 0 and vision_pos.stride(1) == 0
        if shared:  # one frame expanded over the objects: computed once
            vision_feat, vision_pos = vision_feat[:, :1], vision_pos[:, :1]
        if c.num_maskmem == 0:
            return to_maps(vision_feat, feat_size).expand(b, -1, -1, -1)
        if not c.directly_add_no_mem_embed:
            raise InvalidInputError("the ONNX Runtime backend needs a model with directly_add_no_mem_embed")
        if is_init_cond_frame:
            (out,) = self._run("no_memory", vision_features=to_maps(vision_feat, feat_size))
            return out.expand(b, -1, -1, -1)
        self._require("memory_attention")
        entries, pointers, max_ptrs = self.select_memory(frame_idx, memory_frames, num_frames, track_in_reverse)
        memories, positions = [], []
        for _, entry in entries:
            assert entry.maskmem_features is not None and entry.maskmem_pos_enc is not None
            memories.append(to_sequence(entry.maskmem_features))
            positions.append(to_sequence(entry.maskmem_pos_enc))
        slots = torch.tensor([c.num_maskmem - t_pos - 1 for t_pos, _ in entries], dtype=torch.int64)
        if pointers:
            obj_ptrs = torch.stack([p for _, p in pointers])  # (P, B, C)
            rel = torch.tensor([t for t, _ in pointers], dtype=torch.float32) / (max_ptrs - 1)
        else:
            obj_ptrs, rel = torch.zeros(0, b, c.hidden_dim), torch.zeros(0)
        (out,) = self._run(
            "memory_attention",
            curr=vision_feat,
            curr_pos=vision_pos,
            memory=torch.cat(memories),
            memory_pos=torch.cat(positions),
            memory_slots=slots,
            obj_ptrs=obj_ptrs,
            obj_ptr_rel_pos=rel,
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

    def __getitem__(self, index: Any) -> _OrtDecoded:
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

    def decode(
        self, coords: torch.Tensor, labels: torch.Tensor, mask_input: torch.Tensor | None
    ) -> tuple[torch.Tensor, _OrtDecoded]:
        high_res = self.levels[:-1] or None
        masks, ious, _, _ = self.model._decode(self.levels[-1], high_res, coords, labels, mask_input)
        return ious, _OrtDecoded(masks)

    def masks(self, state: _OrtDecoded, which: Any) -> torch.Tensor:
        return state.keys[:, list(which)]


def ort_model(model: Sam2Model, onnx_dir: str | Path | None = None, threads: int | None = None) -> OrtSam2Model:
    """The ONNX Runtime version of ``model``: from ``onnx_dir`` (exported first into a temporary folder if None)."""
    if onnx_dir is None:
        onnx_dir = export_onnx(model, tempfile.mkdtemp(prefix="masklet-onnx-"))
    return OrtSam2Model(model, onnx_dir, threads)
