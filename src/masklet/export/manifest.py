"""What an ONNX export folder holds: file names, every part's inputs and outputs, ``manifest.json``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..model import Sam2Model
from ..transforms import PIXEL_MEAN, PIXEL_STD

#: Manifest format; version 2 moved the memory bank's temporal encodings into memory_attention.onnx.
FORMAT = "masklet-onnx/2"
MANIFEST = "manifest.json"
#: CLI parts and the exported models each one writes.
PARTS = {
    "encoder": ("encoder", "no_memory"),
    "decoder": ("decoder",),
    "memory": ("memory_attention", "memory_encoder", "mask_prompt"),
}
FILES = {
    "encoder": "image_encoder.onnx",
    "decoder": "prompt_decoder.onnx",
    "memory_attention": "memory_attention.onnx",
    "memory_encoder": "memory_encoder.onnx",
    "no_memory": "no_memory.onnx",
    "mask_prompt": "mask_prompt.onnx",
}

Spec = dict[str, Any]


def spec(name: str, shape: Sequence[Any], dtype: str = "float32", doc: str = "") -> Spec:
    """One input or output: name, shape (ints, or names of dynamic axes), dtype and meaning."""
    return {"name": name, "shape": list(shape), "dtype": dtype, "doc": doc}


def _image_specs(model: Sam2Model) -> dict[str, dict[str, list[Spec]]]:
    c = model.config
    s, e, ch = c.image_size, c.embedding_size, c.hidden_dim
    m = c.decoder.num_multimask_outputs + 1
    hr0, hr1 = high_res_shapes(model)
    pix_doc = "RGB resized to SxS (bilinear, no aspect kept), /255, minus mean, over std"
    return {
        "encoder": {
            "inputs": [spec("pixels", ["batch", 3, s, s], doc=pix_doc)],
            "outputs": [
                spec("high_res_feats_0", ["batch", *hr0], doc="finest features, conv_s0 applied"),
                spec("high_res_feats_1", ["batch", *hr1], doc="middle features, conv_s1 applied"),
                spec(
                    "image_embed", ["batch", ch, e, e], doc="embedding for image prompting (no-memory embedding added)"
                ),
                spec("vision_features", ["batch", ch, e, e], doc="raw lowest-resolution features, for video"),
                spec("vision_pos_enc", [1, ch, e, e], doc="their sine position encoding (the same for every image)"),
            ],
        },
        "decoder": {
            "inputs": [
                spec(
                    "image_embed",
                    ["image_batch", ch, e, e],
                    doc="image_batch is 1 (shared by all objects) or num_objects",
                ),
                spec("high_res_feats_0", ["image_batch", *hr0]),
                spec("high_res_feats_1", ["image_batch", *hr1]),
                spec(
                    "point_coords",
                    ["num_objects", "num_points", 2],
                    doc="x, y in pixels of the SxS model frame; box = 2 points",
                ),
                spec(
                    "point_labels",
                    ["num_objects", "num_points"],
                    "int32",
                    doc="-1 pad, 0 negative, 1 positive, 2/3 box corners",
                ),
                spec("mask_input", ["num_objects", 1, 4 * e, 4 * e], doc="low-res logits of a previous prediction"),
                spec("has_mask_input", [1], doc="1 to use mask_input, 0 to ignore it"),
            ],
            "outputs": [
                spec(
                    "masks",
                    ["num_objects", m, 4 * e, 4 * e],
                    doc="low-res logits of every mask token: 0 single, 1.. multimask",
                ),
                spec("iou_predictions", ["num_objects", m]),
                spec(
                    "obj_ptr",
                    ["num_objects", m, ch],
                    doc="object pointer of each mask token (no-object mixing applied)",
                ),
                spec("object_score_logits", ["num_objects", 1]),
            ],
        },
    }


def _video_specs(model: Sam2Model) -> dict[str, dict[str, list[Spec]]]:
    c = model.config
    s, e, ch, cm = c.image_size, c.embedding_size, c.hidden_dim, c.mem_dim
    return {
        "memory_attention": {
            "inputs": [
                spec(
                    "curr",
                    [e * e, "frame_batch", ch],
                    doc="vision_features as (hw, B, C); frame_batch 1 or num_objects",
                ),
                spec("curr_pos", [e * e, "frame_batch", ch]),
                spec(
                    "memory",
                    ["num_memory_tokens", "num_objects", cm],
                    doc="maskmem_features of the selected frames, (hw, B, C) each, concatenated",
                ),
                spec("memory_pos", ["num_memory_tokens", "num_objects", cm], doc="their maskmem_pos_enc, as stored"),
                spec(
                    "memory_slots",
                    ["num_memory_frames"],
                    "int64",
                    doc="slot of each frame in maskmem_tpos_enc: num_maskmem - 1 - t_pos",
                ),
                spec("obj_ptrs", ["num_ptrs", "num_objects", ch], doc="object pointers of the selected frames"),
                spec("obj_ptr_rel_pos", ["num_ptrs"], doc="their frame distance / (max pointers - 1)"),
            ],
            "outputs": [spec("pix_feat", ["num_objects", ch, e, e], doc="memory-conditioned features for the decoder")],
        },
        "memory_encoder": {
            "inputs": [
                spec("pix_feat", ["num_objects", ch, e, e], doc="raw vision_features of the frame"),
                spec("mask_logits", ["num_objects", 1, s, s], doc="high-res mask logits"),
                spec("object_score_logits", ["num_objects", 1]),
                spec("binarize", [1], doc="1: encode logits > 0 (masks from clicks); 0: sigmoid"),
            ],
            "outputs": [
                spec("maskmem_features", ["num_objects", cm, e, e]),
                spec("maskmem_pos_enc", ["num_objects", cm, e, e]),
            ],
        },
        "no_memory": {
            "inputs": [spec("vision_features", ["batch", ch, e, e], doc="features of a frame tracked without memory")],
            "outputs": [spec("pix_feat", ["batch", ch, e, e], doc="the same + the no-memory embedding")],
        },
        "mask_prompt": {
            "inputs": [spec("mask", ["num_objects", 1, s, s], doc="a given binary mask as 0/1 floats")],
            "outputs": [
                spec(
                    "mask_input", ["num_objects", 1, s // 4, s // 4], doc="the decoder's mask prompt (mask_downsample)"
                ),
                spec("no_obj_ptr", [1, ch], doc="the pointer mixed in for an empty mask"),
            ],
        },
    }


def high_res_shapes(model: Sam2Model) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(C, h, w) of the two high-resolution levels (1x1x1 placeholders for models without them)."""
    c = model.config
    ch, e = c.hidden_dim, c.embedding_size
    if c.use_high_res_features_in_sam:
        return (ch // 8, 4 * e, 4 * e), (ch // 4, 2 * e, 2 * e)
    return (1, 1, 1), (1, 1, 1)


def part_specs(model: Sam2Model) -> dict[str, dict[str, list[Spec]]]:
    """Names, shapes (ints or axis names), dtypes and meaning of every part's inputs and outputs."""
    return {**_image_specs(model), **_video_specs(model)}


def examples(model: Sam2Model, part: str, batch: int = 2, points: int = 3) -> tuple[torch.Tensor, ...]:
    """Example inputs for tracing (deliberately not of size 1 where an axis is dynamic)."""
    c = model.config
    s, e = c.image_size, c.embedding_size
    g = torch.Generator().manual_seed(0)
    sizes = {
        "batch": batch,
        "image_batch": batch,
        "num_objects": batch,
        "frame_batch": batch,
        "num_points": points,
        "num_memory_tokens": 2 * e * e,
        "num_memory_frames": 2,
        "num_ptrs": 3,
    }
    out = []
    for item in part_specs(model)[part]["inputs"]:
        shape: list[int] = [sizes[d] if isinstance(d, str) else int(d) for d in item["shape"]]
        if item["name"] == "memory_slots":
            out.append(torch.tensor([c.num_maskmem - 1, 0][: shape[0]], dtype=torch.int64))
        elif item["dtype"] == "int32":
            out.append(torch.randint(0, 4, shape, generator=g, dtype=torch.int32))
        elif item["name"] in ("has_mask_input", "binarize"):
            out.append(torch.ones(shape))
        elif item["name"] == "point_coords":
            out.append(torch.rand(*shape, generator=g) * s)
        elif item["name"] in ("obj_ptr_rel_pos", "mask"):
            out.append(
                torch.rand(*shape, generator=g).round() if item["name"] == "mask" else torch.rand(*shape, generator=g)
            )
        else:
            out.append(torch.randn(*shape, generator=g))
    return tuple(out)


def manifest(model: Sam2Model, parts: dict[str, Any], opset: int, dtype: str, source: str | None) -> dict[str, Any]:
    """The ``manifest.json`` of an export: pre-processing, the config the glue needs, every part."""
    c = model.config
    return {
        "format": FORMAT,
        "source": source,
        "opset": opset,
        "dtype": dtype,
        "io_dtype": "float32",
        "preprocess": {
            "image_size": c.image_size,
            "resize": "antialiased bilinear (float32) to image_size x image_size, aspect ratio not kept",
            "scale": 1 / 255,
            "mean": list(PIXEL_MEAN),
            "std": list(PIXEL_STD),
            "layout": "NCHW RGB",
            "point_coords": "original pixels * (image_size / original width, image_size / original height)",
        },
        "config": {
            "hidden_dim": c.hidden_dim,
            "mem_dim": c.mem_dim,
            "embedding_size": c.embedding_size,
            "num_maskmem": c.num_maskmem,
            "max_obj_ptrs_in_encoder": c.max_obj_ptrs_in_encoder,
            "num_mask_tokens": c.decoder.num_multimask_outputs + 1,
            "max_memory_tokens": c.num_maskmem * c.embedding_size**2 if c.num_maskmem else 0,
            "max_ptrs": c.max_obj_ptrs_in_encoder,
            "use_high_res_features": c.use_high_res_features_in_sam,
            "multimask_output_in_sam": c.multimask_output_in_sam,
            "multimask_output_for_tracking": c.multimask_output_for_tracking,
            "use_multimask_token_for_obj_ptr": c.use_multimask_token_for_obj_ptr,
            "binarize_mask_from_pts_for_mem_enc": c.binarize_mask_from_pts_for_mem_enc,
            "no_object_logit": -1024.0,
        },
        "parts": parts,
    }
