"""Convert Hugging Face ``transformers`` SAM2 checkpoints to the official SAM2 layout.

masklet's model uses the official ``sam2`` parameter names, so a Hugging Face checkpoint
(``model.safetensors`` + ``config.json`` of ``Sam2VideoModel`` / ``Sam2Model``) is converted with
:func:`hf_to_official_state_dict` and :func:`hf_config_to_official_dict`.

The two layouts hold the same tensors with the same shapes; apart from renames the only changes
are: HF's ``prompt_encoder.point_embed.weight`` (4, C) is split into the official four
``point_embeddings.{i}.weight`` (1, C), and HF stores the random-Fourier positional matrix twice
(``shared_image_embedding`` and ``prompt_encoder.shared_embedding``) where the official model has
one. Image-only ``Sam2Model`` checkpoints (``model_type == "sam2"``) have no memory weights, so
their converted state dict covers only the image path.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..errors import CheckpointError, ConfigError
from ..model.config import RELEASE_FLAGS, temporal_pointer_flags
from .official import OfficialClass

__all__ = ["hf_config_to_official_dict", "hf_to_official_state_dict"]

_VIDEO_TYPE = "sam2_video"
_IMAGE_TYPE = "sam2"
_PE_KEYS = ("shared_image_embedding.positional_embedding", "prompt_encoder.shared_embedding.positional_embedding")
_PE_OFFICIAL = "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"

# HF feed-forward stacks are (proj_in, layers.0..n-1, proj_out); the official MLP is layers.0..n+1.
_MLP_KEY = re.compile(
    r"^(?P<owner>vision_encoder\.backbone\.blocks\.\d+\.mlp|mask_decoder\.transformer\.layers\.\d+\.mlp"
    r"|mask_decoder\.output_hypernetworks_mlps\.\d+|mask_decoder\.iou_prediction_head"
    r"|mask_decoder\.pred_obj_score_head|object_pointer_proj)"
    r"\.(?P<part>proj_in|proj_out|layers\.(?P<idx>\d+))\.(?P<param>weight|bias)$"
)
_DOWNSAMPLER_KEY = re.compile(r"^memory_encoder\.mask_downsampler\.layers\.(\d+)\.")

_Rename = str | Callable[["re.Match[str]", int], str]
_WB = r"(weight|bias)"
_FUSER_NAMES = {
    "depthwise_conv": "dwconv",
    "layer_norm": "norm",
    "pointwise_conv1": "pwconv1",
    "pointwise_conv2": "pwconv2",
}


def _out_proj(name: str) -> str:
    return "out_proj" if name == "o_proj" else name


# (full-key pattern, replacement); callables also get the number of mask-downsampler layers.
_RULES: list[tuple[str, _Rename]] = [
    (r"no_memory_embedding", "no_mem_embed"),
    (r"no_memory_positional_encoding", "no_mem_pos_enc"),
    (r"memory_temporal_positional_encoding", "maskmem_tpos_enc"),
    (r"no_object_pointer", "no_obj_ptr"),
    (r"occlusion_spatial_embedding_parameter", "no_obj_embed_spatial"),
    (rf"mask_downsample\.{_WB}", r"mask_downsample.\1"),
    (rf"temporal_positional_encoding_projection_layer\.{_WB}", r"obj_ptr_tpos_proj.\1"),
    (rf"object_pointer_proj\.layers\.(\d+)\.{_WB}", r"obj_ptr_proj.layers.\1.\2"),
    # image encoder (Hiera trunk + FPN neck)
    (r"vision_encoder\.backbone\.(pos_embed|pos_embed_window)", r"image_encoder.trunk.\1"),
    (rf"vision_encoder\.backbone\.patch_embed\.projection\.{_WB}", r"image_encoder.trunk.patch_embed.proj.\1"),
    (rf"vision_encoder\.backbone\.blocks\.(\d+)\.layer_norm([12])\.{_WB}", r"image_encoder.trunk.blocks.\1.norm\2.\3"),
    (
        rf"vision_encoder\.backbone\.blocks\.(\d+)\.(attn\.qkv|attn\.proj|proj|mlp\.layers\.\d+)\.{_WB}",
        r"image_encoder.trunk.blocks.\1.\2.\3",
    ),
    (rf"vision_encoder\.neck\.convs\.(\d+)\.{_WB}", r"image_encoder.neck.convs.\1.conv.\2"),
    # prompt encoder
    (r"prompt_encoder\.(not_a_point_embed|no_mask_embed)\.weight", r"sam_prompt_encoder.\1.weight"),
    (rf"prompt_encoder\.mask_embed\.conv1\.{_WB}", r"sam_prompt_encoder.mask_downscaling.0.\1"),
    (rf"prompt_encoder\.mask_embed\.layer_norm1\.{_WB}", r"sam_prompt_encoder.mask_downscaling.1.\1"),
    (rf"prompt_encoder\.mask_embed\.conv2\.{_WB}", r"sam_prompt_encoder.mask_downscaling.3.\1"),
    (rf"prompt_encoder\.mask_embed\.layer_norm2\.{_WB}", r"sam_prompt_encoder.mask_downscaling.4.\1"),
    (rf"prompt_encoder\.mask_embed\.conv3\.{_WB}", r"sam_prompt_encoder.mask_downscaling.6.\1"),
    # mask decoder
    (r"mask_decoder\.(iou_token|mask_tokens|obj_score_token)\.weight", r"sam_mask_decoder.\1.weight"),
    (rf"mask_decoder\.(conv_s0|conv_s1)\.{_WB}", r"sam_mask_decoder.\1.\2"),
    (rf"mask_decoder\.upscale_conv1\.{_WB}", r"sam_mask_decoder.output_upscaling.0.\1"),
    (rf"mask_decoder\.upscale_layer_norm\.{_WB}", r"sam_mask_decoder.output_upscaling.1.\1"),
    (rf"mask_decoder\.upscale_conv2\.{_WB}", r"sam_mask_decoder.output_upscaling.3.\1"),
    (
        rf"mask_decoder\.(output_hypernetworks_mlps\.\d+|iou_prediction_head|pred_obj_score_head)\.layers\.(\d+)\.{_WB}",
        r"sam_mask_decoder.\1.layers.\2.\3",
    ),
    (
        (
            r"mask_decoder\.transformer\.(layers\.\d+\.(?:self_attn|cross_attn_token_to_image|cross_attn_image_to_token)"
            rf"|final_attn_token_to_image)\.([qkv]_proj|o_proj)\.{_WB}"
        ),
        lambda m, _: f"sam_mask_decoder.transformer.{m[1]}.{_out_proj(m[2])}.{m[3]}",
    ),
    (
        rf"mask_decoder\.transformer\.layers\.(\d+)\.layer_norm([1-4])\.{_WB}",
        r"sam_mask_decoder.transformer.layers.\1.norm\2.\3",
    ),
    (
        rf"mask_decoder\.transformer\.layers\.(\d+)\.mlp\.layers\.(\d+)\.{_WB}",
        r"sam_mask_decoder.transformer.layers.\1.mlp.layers.\2.\3",
    ),
    (rf"mask_decoder\.transformer\.layer_norm_final_attn\.{_WB}", r"sam_mask_decoder.transformer.norm_final_attn.\1"),
    # memory attention
    (
        rf"memory_attention\.layers\.(\d+)\.(self_attn|cross_attn_image)\.([qkv]_proj|o_proj)\.{_WB}",
        lambda m, _: f"memory_attention.layers.{m[1]}.{m[2]}.{_out_proj(m[3])}.{m[4]}",
    ),
    (rf"memory_attention\.layers\.(\d+)\.(linear[12])\.{_WB}", r"memory_attention.layers.\1.\2.\3"),
    (rf"memory_attention\.layers\.(\d+)\.layer_norm([123])\.{_WB}", r"memory_attention.layers.\1.norm\2.\3"),
    (rf"memory_attention\.layer_norm\.{_WB}", r"memory_attention.norm.\1"),
    # memory encoder
    (
        rf"memory_encoder\.mask_downsampler\.layers\.(\d+)\.(conv|layer_norm)\.{_WB}",
        lambda m, _: f"memory_encoder.mask_downsampler.encoder.{3 * int(m[1]) + (m[2] == 'layer_norm')}.{m[3]}",
    ),
    (
        rf"memory_encoder\.mask_downsampler\.final_conv\.{_WB}",
        lambda m, n_layers: f"memory_encoder.mask_downsampler.encoder.{3 * n_layers}.{m[1]}",
    ),
    (rf"memory_encoder\.feature_projection\.{_WB}", r"memory_encoder.pix_feat_proj.\1"),
    (r"memory_encoder\.memory_fuser\.layers\.(\d+)\.scale", r"memory_encoder.fuser.layers.\1.gamma"),
    (
        rf"memory_encoder\.memory_fuser\.layers\.(\d+)\.(depthwise_conv|layer_norm|pointwise_conv1|pointwise_conv2)\.{_WB}",
        lambda m, _: f"memory_encoder.fuser.layers.{m[1]}.{_FUSER_NAMES[m[2]]}.{m[3]}",
    ),
    (rf"memory_encoder\.projection\.{_WB}", r"memory_encoder.out_proj.\1"),
]
_COMPILED = [(re.compile(f"^{pattern}$"), repl) for pattern, repl in _RULES]


def _model_type(hf_config: dict[str, Any]) -> str:
    """The HF ``model_type`` of a SAM2 config, or ConfigError."""
    model_type = hf_config.get("model_type") if isinstance(hf_config, dict) else None
    if model_type not in (_VIDEO_TYPE, _IMAGE_TYPE):
        raise ConfigError(
            f"not a Hugging Face SAM2 config (model_type={model_type!r}; expected 'sam2_video' or 'sam2')"
        )
    return str(model_type)


def _renumber_mlp_keys(keys: list[str]) -> dict[str, str]:
    """Map HF feed-forward keys (proj_in/layers.i/proj_out) onto official ``layers.k`` keys."""
    hidden: dict[str, set[int]] = {}
    for key in keys:
        m = _MLP_KEY.match(key)
        if m and m["idx"] is not None:
            hidden.setdefault(m["owner"], set()).add(int(m["idx"]))
    renamed: dict[str, str] = {}
    for key in keys:
        m = _MLP_KEY.match(key)
        if not m:
            continue
        n_hidden = len(hidden.get(m["owner"], ()))
        k = 0 if m["part"] == "proj_in" else n_hidden + 1 if m["part"] == "proj_out" else int(m["idx"]) + 1
        renamed[key] = f"{m['owner']}.layers.{k}.{m['param']}"
    return renamed


def hf_to_official_state_dict(hf_state: dict[str, Tensor], hf_config: dict[str, Any]) -> dict[str, Tensor]:
    """Rename a transformers SAM2 state dict to official ``sam2`` keys (tensors are not copied).

    Raises CheckpointError when a key is unknown, two keys collide, or the two copies of the
    prompt positional matrix differ; ConfigError when ``hf_config`` is not a SAM2 config.
    """
    _model_type(hf_config)
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    mlp_names = _renumber_mlp_keys(list(hf_state))
    n_down = len({int(m[1]) for k in hf_state if (m := _DOWNSAMPLER_KEY.match(k))})

    def put(key: str, value: Tensor, source: str) -> None:
        if key in out:
            raise CheckpointError(f"Hugging Face key {source!r} collides with another key on {key!r}")
        out[key] = value

    pe = [hf_state[k] for k in _PE_KEYS if k in hf_state]
    if len(pe) == 2 and not (pe[0].shape == pe[1].shape and torch.equal(pe[0], pe[1])):
        raise CheckpointError(f"{_PE_KEYS[0]!r} and {_PE_KEYS[1]!r} differ; the official model shares one matrix")
    if pe:
        put(_PE_OFFICIAL, pe[0], _PE_KEYS[0])

    for key, value in hf_state.items():
        if key in _PE_KEYS:
            continue
        if key == "prompt_encoder.point_embed.weight":
            if value.dim() != 2:
                raise CheckpointError(f"{key!r} must be 2-D, got shape {tuple(value.shape)}")
            for i in range(value.shape[0]):
                put(f"sam_prompt_encoder.point_embeddings.{i}.weight", value[i : i + 1].clone(), key)
            continue
        name = mlp_names.get(key, key)
        for pattern, repl in _COMPILED:
            m = pattern.match(name)
            if m:
                put(m.expand(repl) if isinstance(repl, str) else repl(m, n_down), value, key)
                break
        else:
            unknown.append(key)
    if unknown:
        shown = ", ".join(sorted(unknown)[:10]) + (" ..." if len(unknown) > 10 else "")
        raise CheckpointError(f"{len(unknown)} unknown key(s) in Hugging Face SAM2 checkpoint: {shown}")
    return out


# ----------------------------------------------------------------------------------------- config


# Sam2VideoConfig defaults (they equal the official SAM2.1 yaml values); used for image-only configs.
_VIDEO_DEFAULTS: dict[str, Any] = {
    "num_maskmem": 7,
    "sigmoid_scale_for_mem_enc": 20.0,
    "sigmoid_bias_for_mem_enc": -10.0,
    "enable_occlusion_spatial_embedding": True,
    "enable_temporal_pos_encoding_for_object_pointers": True,
    "multimask_output_in_sam": True,
    "multimask_min_pt_num": 0,
    "multimask_max_pt_num": 1,
    "multimask_output_for_tracking": True,
    "max_object_pointers_in_encoder": 16,
    "max_cond_frame_num": -1,
    "memory_attention_num_layers": 4,
    "memory_attention_num_attention_heads": 1,
    "memory_attention_downsample_rate": 1,
    "memory_attention_feed_forward_hidden_size": 2048,
    "memory_attention_feed_forward_hidden_act": "relu",
    "memory_attention_dropout": 0.1,
    "memory_attention_rope_dropout": 0.1,
    "memory_encoder_output_channels": 64,
    "mask_downsampler_kernel_size": 3,
    "mask_downsampler_stride": 2,
    "mask_downsampler_padding": 1,
    "mask_downsampler_total_stride": 16,
    "memory_fuser_num_layers": 2,
    "memory_fuser_kernel_size": 7,
    "memory_fuser_padding": 3,
    "memory_fuser_layer_scale_init_value": 1e-6,
}


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(f"Hugging Face SAM2 config not representable by the official model: {message}")


def _geometric_ratio(values: list[int], what: str) -> float:
    """Common ratio of a per-stage list (the official Hiera multiplies dims/heads per stage)."""
    ratios = {values[i + 1] / values[i] for i in range(len(values) - 1)}
    _require(len(ratios) <= 1, f"{what} {values} is not geometric")
    return ratios.pop() if ratios else 2.0


def _pair(value: Any, default: int) -> list[int]:
    if value is None:
        return [default, default]
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value), int(value)]


def _trunk(bb: dict[str, Any]) -> dict[str, Any]:
    """Official Hiera kwargs from HF ``backbone_config``."""
    dims = [int(d) for d in bb.get("embed_dim_per_stage") or [96, 192, 384, 768]]
    heads = [int(h) for h in bb.get("num_attention_heads_per_stage") or [1, 2, 4, 8]]
    stages = [int(s) for s in bb.get("blocks_per_stage") or [1, 2, 7, 2]]
    _require(len(dims) == len(heads) == len(stages), "per-stage lists differ in length")
    _require(int(bb.get("hidden_size", dims[0])) == dims[0], "hidden_size != embed_dim_per_stage[0]")
    _require(_pair(bb.get("patch_kernel_size"), 7) == [7, 7], "patch_kernel_size must be 7")
    _require(_pair(bb.get("patch_stride"), 4) == [4, 4], "patch_stride must be 4")
    _require(_pair(bb.get("patch_padding"), 3) == [3, 3], "patch_padding must be 3")
    _require(int(bb.get("num_channels", 3)) == 3, "num_channels must be 3")
    _require(float(bb.get("mlp_ratio", 4.0)) == 4.0, "mlp_ratio must be 4.0")
    _require(bb.get("hidden_act", "gelu") == "gelu", "hidden_act must be gelu")
    _require(float(bb.get("layer_norm_eps", 1e-6)) == 1e-6, "layer_norm_eps must be 1e-6")
    trunk: dict[str, Any] = {
        "_target_": OfficialClass.HIERA,
        "embed_dim": dims[0],
        "num_heads": heads[0],
        "stages": stages,
        "global_att_blocks": [int(b) for b in bb.get("global_attention_blocks") or [5, 7, 9]],
        "window_pos_embed_bkg_spatial_size": _pair(bb.get("window_positional_embedding_background_size"), 7),
        "window_spec": [int(w) for w in bb.get("window_size_per_stage") or [8, 4, 14, 7]],
    }
    dim_mul, head_mul = (
        _geometric_ratio(dims, "embed_dim_per_stage"),
        _geometric_ratio(heads, "num_attention_heads_per_stage"),
    )
    q_pool, q_stride = int(bb.get("num_query_pool_stages", 3)), _pair(bb.get("query_stride"), 2)
    # Only non-default Hiera arguments are written, as in the official yaml files.
    extras = {"dim_mul": dim_mul, "head_mul": head_mul, "q_pool": q_pool, "q_stride": q_stride}
    defaults = {"dim_mul": 2.0, "head_mul": 2.0, "q_pool": 3, "q_stride": [2, 2]}
    trunk.update({k: v for k, v in extras.items() if v != defaults[k]})
    return trunk


def _check_heads(pe: dict[str, Any], md: dict[str, Any], d_model: int) -> tuple[int, int]:
    """Validate the prompt encoder / mask decoder against the official fixed SAM heads."""
    _require(int(pe.get("hidden_size", 256)) == d_model, "prompt encoder hidden_size != fpn_hidden_size")
    _require(int(md.get("hidden_size", 256)) == d_model, "mask decoder hidden_size != fpn_hidden_size")
    _require(int(pe.get("mask_input_channels", 16)) == 16, "mask_input_channels must be 16")
    _require(int(pe.get("num_point_embeddings", 4)) == 4, "num_point_embeddings must be 4")
    fixed = {
        "mlp_dim": 2048,
        "num_hidden_layers": 2,
        "num_attention_heads": 8,
        "attention_downsample_rate": 2,
        "num_multimask_outputs": 3,
        "iou_head_depth": 3,
        "iou_head_hidden_dim": 256,
    }
    for name, value in fixed.items():
        _require(int(md.get(name, value)) == value, f"mask decoder {name} must be {value}")
    image_size = pe.get("image_size", 1024)
    image_size = int(image_size[0] if isinstance(image_size, (list, tuple)) else image_size)
    return image_size, int(pe.get("patch_size", 16))


def hf_config_to_official_dict(hf_config: dict[str, Any]) -> dict[str, Any]:
    """The official nested model dict (as under ``model:`` in the sam2 yaml files) for an HF config.

    Fields HF does not record take the official SAM2.1 values; ``enable_*`` flags select between
    SAM2.0 and SAM2.1 behaviour. Raises ConfigError for non-SAM2 or unrepresentable configs.
    """
    is_video = _model_type(hf_config) == _VIDEO_TYPE
    video = {**_VIDEO_DEFAULTS, **(hf_config if is_video else {})}
    vision = hf_config.get("vision_config") or {}
    bb = vision.get("backbone_config") or {}
    trunk = _trunk(bb)
    d_model = int(vision.get("fpn_hidden_size", 256))
    image_size, stride = _check_heads(
        hf_config.get("prompt_encoder_config") or {}, hf_config.get("mask_decoder_config") or {}, d_model
    )
    sizes = [
        _pair(bb.get("image_size"), image_size),
        _pair(hf_config.get("image_size") if is_video else None, image_size),
    ]
    _require(all(s == [image_size, image_size] for s in sizes), f"inconsistent image sizes {sizes} vs {image_size}")
    _require(int(vision.get("num_feature_levels", 3)) == 3, "num_feature_levels must be 3 (high-res features)")
    channels = [int(c) for c in vision.get("backbone_channel_list") or [768, 384, 192, 96]]
    stage_dims = [int(trunk["embed_dim"] * trunk.get("dim_mul", 2.0) ** i) for i in range(len(trunk["stages"]))]
    _require(channels == stage_dims[::-1], f"backbone_channel_list {channels} != reversed stage dims {stage_dims}")

    neck: dict[str, Any] = {
        "_target_": OfficialClass.FPN_NECK,
        "position_encoding": {
            "_target_": OfficialClass.POSITION_SINE,
            "num_pos_feats": d_model,
            "normalize": True,
            "scale": None,
            "temperature": 10000,
        },
        "d_model": d_model,
        "backbone_channel_list": channels,
        "fpn_top_down_levels": [int(x) for x in vision.get("fpn_top_down_levels") or [2, 3]],
        "fpn_interp_model": "nearest",
    }
    for hf_name, name, default in (
        ("fpn_kernel_size", "kernel_size", 1),
        ("fpn_stride", "stride", 1),
        ("fpn_padding", "padding", 0),
    ):
        if int(vision.get(hf_name, default)) != default:
            neck[name] = int(vision[hf_name])

    for name in (
        "memory_attention_hidden_size",
        "memory_encoder_hidden_size",
        "mask_downsampler_embed_dim",
        "memory_fuser_embed_dim",
    ):
        _require(int(video.get(name, d_model)) == d_model, f"{name} != fpn_hidden_size")
    _require(
        int(video.get("memory_fuser_intermediate_dim", 4 * d_model)) == 4 * d_model,
        "memory_fuser_intermediate_dim != 4 * hidden",
    )
    for name in ("mask_downsampler_hidden_act", "memory_fuser_hidden_act"):
        _require(video.get(name, "gelu") == "gelu", f"{name} must be gelu")
    rope = video.get("rope_parameters") or {}
    rope_theta = float(rope.get("rope_theta", video.get("memory_attention_rope_theta", 10000.0)))
    feat = [int(s) for s in video.get("memory_attention_rope_feat_sizes") or [image_size // stride] * 2]
    mem_dim = int(video["memory_encoder_output_channels"])
    attention = {
        "_target_": OfficialClass.ROPE_ATTENTION,
        "rope_theta": rope_theta,
        "feat_sizes": feat,
        "embedding_dim": d_model,
        "num_heads": int(video["memory_attention_num_attention_heads"]),
        "downsample_rate": int(video["memory_attention_downsample_rate"]),
        "dropout": float(video["memory_attention_rope_dropout"]),
    }
    memory_attention = {
        "_target_": OfficialClass.MEMORY_ATTENTION,
        "d_model": d_model,
        "pos_enc_at_input": True,
        "layer": {
            "_target_": OfficialClass.MEMORY_ATTENTION_LAYER,
            "activation": str(video["memory_attention_feed_forward_hidden_act"]),
            "dim_feedforward": int(video["memory_attention_feed_forward_hidden_size"]),
            "dropout": float(video["memory_attention_dropout"]),
            "pos_enc_at_attn": False,
            "self_attention": dict(attention),
            "d_model": d_model,
            "pos_enc_at_cross_attn_keys": True,
            "pos_enc_at_cross_attn_queries": False,
            "cross_attention": {**attention, "rope_k_repeat": True, "kv_in_dim": mem_dim},
        },
        "num_layers": int(video["memory_attention_num_layers"]),
    }
    memory_encoder = {
        "_target_": OfficialClass.MEMORY_ENCODER,
        "out_dim": mem_dim,
        "in_dim": d_model,
        "position_encoding": {
            "_target_": OfficialClass.POSITION_SINE,
            "num_pos_feats": mem_dim,
            "normalize": True,
            "scale": None,
            "temperature": 10000,
        },
        "mask_downsampler": {
            "_target_": OfficialClass.MASK_DOWNSAMPLER,
            "kernel_size": int(video["mask_downsampler_kernel_size"]),
            "stride": int(video["mask_downsampler_stride"]),
            "padding": int(video["mask_downsampler_padding"]),
            "total_stride": int(video["mask_downsampler_total_stride"]),
            "embed_dim": d_model,
        },
        "fuser": {
            "_target_": OfficialClass.FUSER,
            "layer": {
                "_target_": OfficialClass.CX_BLOCK,
                "dim": d_model,
                "kernel_size": int(video["memory_fuser_kernel_size"]),
                "padding": int(video["memory_fuser_padding"]),
                "layer_scale_init_value": float(video["memory_fuser_layer_scale_init_value"]),
                "use_dwconv": True,
            },
            "num_layers": int(video["memory_fuser_num_layers"]),
        },
    }
    tpos = bool(video["enable_temporal_pos_encoding_for_object_pointers"])
    md = hf_config.get("mask_decoder_config") or {}
    model: dict[str, Any] = {
        "_target_": OfficialClass.SAM2_BASE,
        "image_encoder": {"_target_": OfficialClass.IMAGE_ENCODER, "scalp": 1, "trunk": trunk, "neck": neck},
        "memory_attention": memory_attention,
        "memory_encoder": memory_encoder,
        "num_maskmem": int(video["num_maskmem"]),
        "image_size": image_size,
        "backbone_stride": stride,
        "sigmoid_scale_for_mem_enc": float(video["sigmoid_scale_for_mem_enc"]),
        "sigmoid_bias_for_mem_enc": float(video["sigmoid_bias_for_mem_enc"]),
        "no_obj_embed_spatial": bool(video["enable_occlusion_spatial_embedding"]),
        "multimask_output_in_sam": bool(video["multimask_output_in_sam"]),
        **RELEASE_FLAGS,
        **temporal_pointer_flags(tpos),
        "multimask_output_for_tracking": bool(video["multimask_output_for_tracking"]),
        "multimask_min_pt_num": int(video["multimask_min_pt_num"]),
        "multimask_max_pt_num": int(video["multimask_max_pt_num"]),
        "max_obj_ptrs_in_encoder": int(video["max_object_pointers_in_encoder"]),
        "max_cond_frames_in_attn": int(video["max_cond_frame_num"]),
        "compile_image_encoder": False,
        "sam_mask_decoder_extra_args": {
            "dynamic_multimask_via_stability": bool(md.get("dynamic_multimask_via_stability", True)),
            "dynamic_multimask_stability_delta": float(md.get("dynamic_multimask_stability_delta", 0.05)),
            "dynamic_multimask_stability_thresh": float(md.get("dynamic_multimask_stability_thresh", 0.98)),
        },
    }
    return model
