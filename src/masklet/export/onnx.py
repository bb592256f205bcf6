"""ONNX export of a masklet model: image encoder, prompt decoder, memory attention, memory encoder.

Each part is a small export-friendly wrapper around the model's own modules (same weights, same
maths; no data-dependent Python branches, RoPE as real cos/sin products instead of complex
numbers), traced with ``torch.onnx.export``. ``export_onnx`` also writes ``manifest.json``
describing every input and output, the pre-processing and how the parts chain into an image
predictor and a tracking loop. Needs the ``masklet[onnx]`` extra (onnx, onnxruntime).
"""

from __future__ import annotations

import argparse
import copy
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidInputError
from ..model import Sam2Model
from ..model.position import axial_rope_angles
from ..model.prompt_encoder import PAD_LABEL
from ..transforms import PIXEL_MEAN, PIXEL_STD

PARTS = ("encoder", "decoder", "memory")
FILES = {
    "encoder": "image_encoder.onnx",
    "decoder": "prompt_decoder.onnx",
    "memory_attention": "memory_attention.onnx",
    "memory_encoder": "memory_encoder.onnx",
}
DEFAULT_OPSET = 17
MANIFEST = "manifest.json"
#: Export precisions: the image encoder's weights and compute; the light heads (prompt decoder, video
#: step) stay float32, as in masklet's own low-precision models. Inputs and outputs are float32 always.
DTYPES = {"float32": torch.float32, "float16": torch.float16}
#: Precisions refused, with why: ONNX Runtime's CPU provider has no kernels for them.
REFUSED_DTYPES = {
    "bfloat16": "ONNX Runtime's CPU provider has no bfloat16 Conv or MatMul kernels (the model "
    "would not load); use --dtype float16 or float32, or masklet's PyTorch bfloat16 path"
}


# ------------------------------------------------------------------------------------ wrappers


class EncoderExport(nn.Module):
    """pixels (B, 3, S, S), normalised -> high-res features, image embedding, raw features, position.

    Traced with autograd on: the inference-only shortcuts of the PyTorch modules (row-chunked
    MLPs, in-place RoPE) loop over sizes in Python, which would bake the batch into the graph.
    """

    def __init__(self, model: Sam2Model) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        m = self.model
        with torch.enable_grad():
            features, positions = m.image_encoder(pixels)
        levels = features[-m.num_feature_levels :]
        vision = levels[-1]
        embed = vision + m.no_mem_embed.reshape(1, -1, 1, 1) if m.config.directly_add_no_mem_embed else vision
        if m.config.use_high_res_features_in_sam:
            s0 = m.sam_mask_decoder.conv_s0(levels[0])
            s1 = m.sam_mask_decoder.conv_s1(levels[1])
        else:  # placeholders so that every model has the same signature
            s0 = s1 = vision[:, :1, :1, :1] * 0
        return s0, s1, embed, vision, positions[-1][:1]


class CastExport(nn.Module):
    """A part computing in ``dtype`` behind float32 inputs and outputs (the manifest's contract)."""

    def __init__(self, part: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.part = part.to(dtype)
        self.dtype = dtype

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cast = [x.to(self.dtype) if x.is_floating_point() else x for x in inputs]
        return tuple(y.float() for y in self.part(*cast))


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
            tokens = torch.where(labels == value, tokens + embedding.weight, tokens)
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


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Axial RoPE of (B, heads, G, n, d) grids by (n, d/2) tables: pairs of channels turn by an angle."""
    shape = x.shape
    pairs = x.reshape(shape[0], shape[1], shape[2], shape[3], -1, 2)
    a, b = pairs[..., 0], pairs[..., 1]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).reshape(shape)


class MemoryAttentionExport(nn.Module):
    """Memory attention with the memory split into spatial memories (whole frames, rotated) and
    object-pointer tokens (not rotated). ``curr`` may have batch 1 (one frame shared by B objects)."""

    def __init__(self, model: Sam2Model) -> None:
        super().__init__()
        self.model = model
        self.attention = model.memory_attention
        self.hw = model.config.embedding_size**2
        first = self.attention.layers[0].self_attn
        head_dim = first.internal_dim // first.num_heads
        e = model.config.embedding_size
        angles = torch.view_as_real(axial_rope_angles(head_dim, e, e, first.rope_theta))
        self.register_buffer("rope_cos", angles[..., 0].contiguous(), persistent=False)
        self.register_buffer("rope_sin", angles[..., 1].contiguous(), persistent=False)

    def _attend(
        self, attn, q: torch.Tensor, k_spatial: torch.Tensor, k_ptr: torch.Tensor | None, v: torch.Tensor
    ) -> torch.Tensor:
        """RoPEAttention.forward with real rotations (queries: one grid; keys: grids then pointers)."""
        heads = attn.num_heads

        def split(x: torch.Tensor) -> torch.Tensor:
            b, n, ch = x.shape
            return x.reshape(b, n, heads, ch // heads).transpose(1, 2)

        q = split(attn.q_proj(q))
        bq, hq, nq, d = q.shape
        q = _rotate(q.reshape(bq, hq, 1, nq, d), self.rope_cos, self.rope_sin).reshape(bq, hq, nq, d)
        ks = split(attn.k_proj(k_spatial))
        bk, hk, nk, _ = ks.shape
        ks = _rotate(ks.reshape(bk, hk, -1, self.hw, d), self.rope_cos, self.rope_sin).reshape(bk, hk, nk, d)
        k = ks if k_ptr is None else torch.cat((ks, split(attn.k_proj(k_ptr))), dim=2)
        out = F.scaled_dot_product_attention(q, k, split(attn.v_proj(v)))
        b, h, n, dd = out.shape
        return attn.out_proj(out.transpose(1, 2).reshape(b, n, h * dd))

    def forward(
        self,
        curr: torch.Tensor,
        curr_pos: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        obj_ptrs: torch.Tensor,
        obj_ptrs_pos: torch.Tensor,
    ) -> torch.Tensor:
        ma = self.attention
        output = curr + 0.1 * curr_pos if ma.pos_enc_at_input else curr
        output, curr_pos = output.transpose(0, 1), curr_pos.transpose(0, 1)
        mem, mem_pos = memory.transpose(0, 1), memory_pos.transpose(0, 1)
        ptr, ptr_pos = obj_ptrs.transpose(0, 1), obj_ptrs_pos.transpose(0, 1)
        all_mem = torch.cat((mem, ptr), dim=1)
        batch = mem.shape[0]
        for layer in ma.layers:
            x = layer.norm1(output)
            q = x + curr_pos if layer.pos_enc_at_attn else x
            output = output + self._attend(layer.self_attn, q, q, None, x)
            output = output.expand(batch, -1, -1)
            curr_pos = curr_pos.expand(batch, -1, -1)
            x = layer.norm2(output)
            q = x + curr_pos if layer.pos_enc_at_cross_attn_queries else x
            if layer.pos_enc_at_cross_attn_keys:
                k_sp, k_ptr = mem + mem_pos, ptr + ptr_pos
            else:
                k_sp, k_ptr = mem, ptr
            output = output + self._attend(layer.cross_attn_image, q, k_sp, k_ptr, all_mem)
            x = layer.linear2(layer.activation(layer.linear1(layer.norm3(output))))
            output = output + x
        out = ma.norm(output)  # (B, hw, C)
        e = self.model.config.embedding_size
        return out.transpose(1, 2).reshape(batch, -1, e, e)


class MemoryEncoderExport(nn.Module):
    """Frame features (B, C, h, w) + high-res mask logits (B, 1, S, S) -> memory and its position.

    ``binarize`` (1,) is 1 to encode the mask as (logits > 0) (masks from clicks, when the model
    says so) and 0 to encode sigmoid(logits).
    """

    def __init__(self, model: Sam2Model) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        pix_feat: torch.Tensor,
        mask_logits: torch.Tensor,
        object_score_logits: torch.Tensor,
        binarize: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        m, c = self.model, self.model.config
        bin_ = binarize.reshape(1, 1, 1, 1)
        mask = bin_ * (mask_logits > 0).float() + (1 - bin_) * torch.sigmoid(mask_logits)
        if c.sigmoid_scale_for_mem_enc != 1.0:
            mask = mask * c.sigmoid_scale_for_mem_enc
        if c.sigmoid_bias_for_mem_enc != 0.0:
            mask = mask + c.sigmoid_bias_for_mem_enc
        enc = m.memory_encoder
        x = enc.pix_feat_proj(pix_feat) + enc.mask_downsampler(mask)
        for block in enc.fuser.layers:  # CXBlock.forward with a constant LayerNorm shape
            y = block.dwconv(x).permute(0, 2, 3, 1)
            y = F.layer_norm(y, (block.dwconv.out_channels,), block.norm.weight, block.norm.bias, block.norm.eps)
            y = block.pwconv2(block.act(block.pwconv1(y)))
            if block.gamma is not None:
                y = block.gamma * y
            x = x + y.permute(0, 3, 1, 2)
        features = enc.out_proj(x)
        position = enc.position_encoding(features).to(features.dtype)
        if c.no_obj_embed_spatial:
            absent = 1 - (object_score_logits > 0).float()
            features = features + absent[..., None, None] * m.no_obj_embed_spatial[..., None, None]
        return features, position


# ------------------------------------------------------------------------------------- export


def _spec(name: str, shape: Sequence[Any], dtype: str = "float32", doc: str = "") -> dict[str, Any]:
    return {"name": name, "shape": list(shape), "dtype": dtype, "doc": doc}


def _part_specs(model: Sam2Model) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Names, shapes (ints or axis names), dtypes and meaning of every part's inputs and outputs."""
    c = model.config
    s, e, ch, cm = c.image_size, c.embedding_size, c.hidden_dim, c.mem_dim
    m = c.decoder.num_multimask_outputs + 1
    hr0, hr1 = (
        ((ch // 8, 4 * e, 4 * e), (ch // 4, 2 * e, 2 * e)) if c.use_high_res_features_in_sam else ((1, 1, 1), (1, 1, 1))
    )
    return {
        "encoder": {
            "inputs": [
                _spec(
                    "pixels",
                    ["batch", 3, s, s],
                    doc="RGB resized to SxS (bilinear, no aspect kept), /255, minus mean, over std",
                )
            ],
            "outputs": [
                _spec("high_res_feats_0", ["batch", *hr0], doc="finest features, conv_s0 applied"),
                _spec("high_res_feats_1", ["batch", *hr1], doc="middle features, conv_s1 applied"),
                _spec(
                    "image_embed", ["batch", ch, e, e], doc="embedding for image prompting (no-memory embedding added)"
                ),
                _spec("vision_features", ["batch", ch, e, e], doc="raw lowest-resolution features, for video"),
                _spec("vision_pos_enc", [1, ch, e, e], doc="their sine position encoding (the same for every image)"),
            ],
        },
        "decoder": {
            "inputs": [
                _spec(
                    "image_embed",
                    ["image_batch", ch, e, e],
                    doc="image_batch is 1 (shared by all objects) or num_objects",
                ),
                _spec("high_res_feats_0", ["image_batch", *hr0]),
                _spec("high_res_feats_1", ["image_batch", *hr1]),
                _spec(
                    "point_coords",
                    ["num_objects", "num_points", 2],
                    doc="x, y in pixels of the SxS model frame; box = 2 points",
                ),
                _spec(
                    "point_labels",
                    ["num_objects", "num_points"],
                    "int32",
                    doc="-1 pad, 0 negative, 1 positive, 2/3 box corners",
                ),
                _spec("mask_input", ["num_objects", 1, 4 * e, 4 * e], doc="low-res logits of a previous prediction"),
                _spec("has_mask_input", [1], doc="1 to use mask_input, 0 to ignore it"),
            ],
            "outputs": [
                _spec(
                    "masks",
                    ["num_objects", m, 4 * e, 4 * e],
                    doc="low-res logits of every mask token: 0 single, 1.. multimask",
                ),
                _spec("iou_predictions", ["num_objects", m]),
                _spec(
                    "obj_ptr",
                    ["num_objects", m, ch],
                    doc="object pointer of each mask token (no-object mixing applied)",
                ),
                _spec("object_score_logits", ["num_objects", 1]),
            ],
        },
        "memory_attention": {
            "inputs": [
                _spec(
                    "curr",
                    [e * e, "frame_batch", ch],
                    doc="vision_features as (hw, B, C); frame_batch 1 or num_objects",
                ),
                _spec("curr_pos", [e * e, "frame_batch", ch]),
                _spec(
                    "memory",
                    ["num_memory_tokens", "num_objects", cm],
                    doc="spatial memories of whole frames (multiple of hw)",
                ),
                _spec(
                    "memory_pos",
                    ["num_memory_tokens", "num_objects", cm],
                    doc="their position + maskmem_tpos_enc of their slot",
                ),
                _spec(
                    "obj_ptrs", ["num_ptr_tokens", "num_objects", cm], doc="object pointers split into mem_dim tokens"
                ),
                _spec("obj_ptrs_pos", ["num_ptr_tokens", "num_objects", cm]),
            ],
            "outputs": [
                _spec("pix_feat", ["num_objects", ch, e, e], doc="memory-conditioned features for the decoder")
            ],
        },
        "memory_encoder": {
            "inputs": [
                _spec("pix_feat", ["num_objects", ch, e, e], doc="raw vision_features of the frame"),
                _spec("mask_logits", ["num_objects", 1, s, s], doc="high-res mask logits"),
                _spec("object_score_logits", ["num_objects", 1]),
                _spec("binarize", [1], doc="1: encode logits > 0 (masks from clicks); 0: sigmoid"),
            ],
            "outputs": [
                _spec("maskmem_features", ["num_objects", cm, e, e]),
                _spec("maskmem_pos_enc", ["num_objects", cm, e, e]),
            ],
        },
    }


def _examples(model: Sam2Model, part: str, batch: int = 2, points: int = 3) -> tuple[torch.Tensor, ...]:
    """Example inputs for tracing (deliberately not of size 1 where an axis is dynamic)."""
    c = model.config
    s, e, _ch, _cm = c.image_size, c.embedding_size, c.hidden_dim, c.mem_dim
    g = torch.Generator().manual_seed(0)
    r = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    specs = _part_specs(model)[part]["inputs"]
    sizes = {
        "batch": batch,
        "image_batch": batch,
        "num_objects": batch,
        "frame_batch": batch,
        "num_points": points,
        "num_memory_tokens": 2 * e * e,
        "num_ptr_tokens": 4,
    }
    out = []
    for spec in specs:
        shape = [sizes.get(d, d) if isinstance(d, str) else d for d in spec["shape"]]
        if spec["dtype"] == "int32":
            out.append(torch.randint(0, 4, shape, generator=g, dtype=torch.int32))
        elif spec["name"] in ("has_mask_input", "binarize"):
            out.append(torch.ones(shape))
        elif spec["name"] == "point_coords":
            out.append(torch.rand(*shape, generator=g) * s)
        else:
            out.append(r(*shape))
    return tuple(out)


def _wrapper(model: Sam2Model, part: str) -> nn.Module:
    return {
        "encoder": EncoderExport,
        "decoder": DecoderExport,
        "memory_attention": MemoryAttentionExport,
        "memory_encoder": MemoryEncoderExport,
    }[part](model).eval()


def check_dtype(dtype: str) -> torch.dtype:
    """The torch dtype of an export precision name; bfloat16 and unknown names are refused with why."""
    if dtype in REFUSED_DTYPES:
        raise InvalidInputError(f"dtype: {dtype} is not exported: {REFUSED_DTYPES[dtype]}")
    if dtype not in DTYPES:
        raise InvalidInputError(f"dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def export_part(
    model: Sam2Model, part: str, path: str | Path, opset: int = DEFAULT_OPSET, dtype: str = "float32"
) -> dict[str, Any]:
    """Export one part (encoder, decoder, memory_attention, memory_encoder) to ``path``; returns its spec.

    ``dtype`` other than float32 applies to the encoder only (see :data:`DTYPES`).
    """
    compute = check_dtype(dtype) if part == "encoder" else torch.float32
    if part not in FILES:
        raise InvalidInputError(f"part: expected one of {sorted(FILES)}, got {part!r}")
    specs = _part_specs(model)[part]
    dynamic = {}
    for spec in specs["inputs"] + specs["outputs"]:
        axes = {i: d for i, d in enumerate(spec["shape"]) if isinstance(d, str)}
        if axes:
            dynamic[spec["name"]] = axes
    if compute == torch.float32:
        wrapper = _wrapper(model, part)
    else:
        wrapper = CastExport(_wrapper(copy.deepcopy(model), part), compute).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            _examples(model, part),
            str(path),
            input_names=[s["name"] for s in specs["inputs"]],
            output_names=[s["name"] for s in specs["outputs"]],
            dynamic_axes=dynamic,
            opset_version=opset,
            dynamo=False,
            do_constant_folding=True,
        )
    return {"file": Path(path).name, "compute_dtype": str(compute).removeprefix("torch."), **specs}


def export_onnx(
    model: Sam2Model,
    out_dir: str | Path,
    parts: Sequence[str] = PARTS,
    opset: int = DEFAULT_OPSET,
    source: str | None = None,
    dtype: str = "float32",
) -> Path:
    """Write the chosen parts (``encoder``, ``decoder``, ``memory``) and ``manifest.json`` to ``out_dir``.

    ``dtype="float16"`` exports the image encoder in float16 (float32 inputs and outputs); bfloat16
    is refused, as ONNX Runtime's CPU provider cannot run it.
    """
    check_dtype(dtype)
    bad = [p for p in parts if p not in PARTS]
    if bad or not parts:
        raise InvalidInputError(f"parts: expected a non-empty subset of {list(PARTS)}, got {list(parts)}")
    if not isinstance(opset, int) or not 14 <= opset <= 20:
        raise InvalidInputError(f"opset: expected an integer from 14 to 20, got {opset!r}")
    if model.dtype != torch.float32 or model.encoder_dtype != torch.float32:
        raise InvalidInputError("model: ONNX export needs a float32 model (load_model(..., dtype=torch.float32))")
    c = model.config
    if c.num_maskmem > 0 and "memory" in parts and not c.directly_add_no_mem_embed:
        raise InvalidInputError("model: export of the video step needs a config with directly_add_no_mem_embed")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = [p for p in parts if p != "memory"] + (["memory_attention", "memory_encoder"] if "memory" in parts else [])
    model = model.eval()
    exported = {name: export_part(model, name, out / FILES[name], opset, dtype) for name in names}
    manifest = {
        "format": "masklet-onnx/1",
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
            "max_ptr_tokens": c.max_obj_ptrs_in_encoder * max(1, c.hidden_dim // c.mem_dim),
            "use_high_res_features": c.use_high_res_features_in_sam,
            "multimask_output_in_sam": c.multimask_output_in_sam,
            "multimask_output_for_tracking": c.multimask_output_for_tracking,
            "use_multimask_token_for_obj_ptr": c.use_multimask_token_for_obj_ptr,
            "binarize_mask_from_pts_for_mem_enc": c.binarize_mask_from_pts_for_mem_enc,
            "no_object_logit": -1024.0,
        },
        "parts": exported,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return out


# ---------------------------------------------------------------------------------------- CLI


def add_cli(sub: Any) -> None:
    """Register ``masklet export onnx`` on the CLI's subparsers."""
    export = sub.add_parser("export", help="export a model for other runtimes (needs masklet[onnx])")
    fmt = export.add_subparsers(dest="format", required=True)
    p = fmt.add_parser("onnx", help="ONNX models of the encoder, prompt decoder and video step + manifest.json")
    p.add_argument("--model", required=True, help="hub name, packaged name (masklet-nano), .pt or Hugging Face folder")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--parts", default=",".join(PARTS), help="comma-separated subset of encoder,decoder,memory (default all)"
    )
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument(
        "--dtype",
        default="float32",
        choices=[*DTYPES, *REFUSED_DTYPES],
        help="float32, or float16 for the image encoder (the heads stay float32); bfloat16 is refused: "
        "ONNX Runtime's CPU provider cannot run it",
    )


def run_cli(args: argparse.Namespace) -> str:
    """Run ``masklet export onnx``; returns the line to print."""
    from ..checkpoints import load_model

    check_dtype(args.dtype)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    model = load_model(args.model)
    out = export_onnx(model, args.out, parts, args.opset, source=str(args.model), dtype=args.dtype)
    files = sorted(p.name for p in out.iterdir())
    return f"wrote {', '.join(files)} to {out}"
