"""Official (Hydra-style) SAM2 model configs <-> :class:`Sam2Config`, without Hydra.

The official yaml nests constructor arguments under ``_target_`` keys; fields it omits take the
official constructor defaults, which are also :class:`Sam2Config`'s defaults.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..model.config import (
    DecoderConfig,
    HieraConfig,
    MemoryAttentionConfig,
    MemoryEncoderConfig,
    NeckConfig,
    Sam2Config,
)


class OfficialClass:
    """Import paths of the official classes that official yaml files name in ``_target_`` (spelled once)."""

    SAM2_BASE = "sam2.modeling.sam2_base.SAM2Base"
    IMAGE_ENCODER = "sam2.modeling.backbones.image_encoder.ImageEncoder"
    HIERA = "sam2.modeling.backbones.hieradet.Hiera"
    FPN_NECK = "sam2.modeling.backbones.image_encoder.FpnNeck"
    POSITION_SINE = "sam2.modeling.position_encoding.PositionEmbeddingSine"
    MEMORY_ATTENTION = "sam2.modeling.memory_attention.MemoryAttention"
    MEMORY_ATTENTION_LAYER = "sam2.modeling.memory_attention.MemoryAttentionLayer"
    ROPE_ATTENTION = "sam2.modeling.sam.transformer.RoPEAttention"
    MEMORY_ENCODER = "sam2.modeling.memory_encoder.MemoryEncoder"
    MASK_DOWNSAMPLER = "sam2.modeling.memory_encoder.MaskDownSampler"
    FUSER = "sam2.modeling.memory_encoder.Fuser"
    CX_BLOCK = "sam2.modeling.memory_encoder.CXBlock"


_DECODER_EXTRA = (
    "dynamic_multimask_via_stability",
    "dynamic_multimask_stability_delta",
    "dynamic_multimask_stability_thresh",
)
# Keys of SAM2Base (or its video subclass) that configure a predictor, not the network.
_PREDICTOR_KEYS = (
    "fill_hole_area",
    "compile_image_encoder",
    "non_overlap_masks",
    "clear_non_cond_mem_around_input",
    "clear_non_cond_mem_for_multi_obj",
    "add_all_frames_to_correct_as_cond",
)


_TRUNK_NOT_OFFICIAL = ("mlp_ratio", "patch_kernel_size", "patch_stride", "patch_padding")


def _tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _pick(section: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """Map official keys (present in ``section``) to our field names."""
    return {ours: _tuple(section[theirs]) for theirs, ours in names.items() if theirs in section}


def _float(value: Any) -> float:
    return float(value)  # yaml may give "1e-6" as a string


def config_from_official(model: dict[str, Any]) -> Sam2Config:
    """Parse the ``model`` section of an official config (a nested dict) into a :class:`Sam2Config`."""
    if not isinstance(model, dict) or "image_encoder" not in model:
        raise ConfigError("not an official SAM2 model config: expected a mapping with an 'image_encoder' section")
    try:
        encoder = model["image_encoder"]
        trunk_d, neck_d = encoder["trunk"], encoder["neck"]
        trunk = HieraConfig(**_pick(trunk_d, {f.name: f.name for f in fields(HieraConfig)}))
        neck = NeckConfig(
            **_pick(
                neck_d,
                {
                    "d_model": "d_model",
                    "fpn_top_down_levels": "fpn_top_down_levels",
                    "fpn_interp_model": "fpn_interp_model",
                    "fuse_type": "fuse_type",
                    "kernel_size": "kernel_size",
                    "stride": "stride",
                    "padding": "padding",
                },
            ),
            scalp=int(encoder.get("scalp", 0)),
            position_temperature=float(neck_d.get("position_encoding", {}).get("temperature", 10000)),
        )
        if "backbone_channel_list" in neck_d and tuple(neck_d["backbone_channel_list"]) != trunk.channel_list:
            raise ConfigError(
                f"neck.backbone_channel_list {neck_d['backbone_channel_list']} does not match the trunk's "
                f"stage widths {list(trunk.channel_list)}"
            )

        attn_d = model["memory_attention"]
        layer_d = attn_d["layer"]
        cross_d = layer_d.get("cross_attention", {})
        memory_attention = MemoryAttentionConfig(
            num_layers=attn_d.get("num_layers", 4),
            pos_enc_at_input=attn_d.get("pos_enc_at_input", True),
            **_pick(
                layer_d,
                {
                    "dim_feedforward": "dim_feedforward",
                    "dropout": "dropout",
                    "activation": "activation",
                    "pos_enc_at_attn": "pos_enc_at_attn",
                    "pos_enc_at_cross_attn_keys": "pos_enc_at_cross_attn_keys",
                    "pos_enc_at_cross_attn_queries": "pos_enc_at_cross_attn_queries",
                },
            ),
            **_pick(cross_d, {"num_heads": "num_heads", "rope_theta": "rope_theta", "rope_k_repeat": "rope_k_repeat"}),
        )
        enc_d = model["memory_encoder"]
        down_d, fuser_d = enc_d.get("mask_downsampler", {}), enc_d.get("fuser", {})
        cx_d = fuser_d.get("layer", {})
        layer_scale: dict[str, Any] = {}
        if "layer_scale_init_value" in cx_d:
            layer_scale["fuser_layer_scale_init_value"] = _float(cx_d["layer_scale_init_value"])
        memory_encoder = MemoryEncoderConfig(
            out_dim=enc_d.get("out_dim", 64),
            **_pick(
                down_d,
                {
                    "kernel_size": "mask_kernel_size",
                    "stride": "mask_stride",
                    "padding": "mask_padding",
                    "total_stride": "mask_total_stride",
                },
            ),
            **_pick(fuser_d, {"num_layers": "fuser_num_layers"}),
            **_pick(
                cx_d, {"kernel_size": "fuser_kernel_size", "padding": "fuser_padding", "use_dwconv": "fuser_use_dwconv"}
            ),
            **layer_scale,
        )
        extra = model.get("sam_mask_decoder_extra_args") or {}
        decoder = DecoderConfig(**{k: extra[k] for k in _DECODER_EXTRA if k in extra})
        top_names = {f.name for f in fields(Sam2Config)} - {
            "trunk",
            "neck",
            "memory_attention",
            "memory_encoder",
            "decoder",
        }
        sections = {"_target_", "image_encoder", "memory_attention", "memory_encoder", "sam_mask_decoder_extra_args"}
        unknown = set(model) - top_names - sections - set(_PREDICTOR_KEYS)
        if unknown:
            raise ConfigError(f"unknown keys in the official model config: {sorted(unknown)}")
        top = {k: _tuple(v) for k, v in model.items() if k in top_names}
    except KeyError as err:
        raise ConfigError(f"official SAM2 model config lacks the section {err}") from None
    except TypeError as err:
        raise ConfigError(f"official SAM2 model config has an unexpected value: {err}") from None
    return Sam2Config(
        trunk=trunk,
        neck=neck,
        memory_attention=memory_attention,
        memory_encoder=memory_encoder,
        decoder=decoder,
        **top,
    ).validate()


def config_to_official(config: Sam2Config) -> dict[str, Any]:
    """The ``model`` section of an official config that builds the same network with ``sam2``."""
    c, t, n = config, config.trunk, config.neck
    ma, me = c.memory_attention, c.memory_encoder
    feat = [c.embedding_size, c.embedding_size]
    rope = {
        "_target_": OfficialClass.ROPE_ATTENTION,
        "rope_theta": ma.rope_theta,
        "feat_sizes": feat,
        "embedding_dim": c.hidden_dim,
        "num_heads": ma.num_heads,
        "downsample_rate": 1,
        "dropout": ma.dropout,
    }
    model: dict[str, Any] = {
        "_target_": OfficialClass.SAM2_BASE,
        "image_encoder": {
            "_target_": OfficialClass.IMAGE_ENCODER,
            "scalp": n.scalp,
            "trunk": {
                "_target_": OfficialClass.HIERA,
                **{
                    f.name: _list(getattr(t, f.name))
                    for f in fields(HieraConfig)
                    if f.name not in _TRUNK_NOT_OFFICIAL
                    # the official Hiera cannot take q_stride from yaml (a ListConfig breaks max_pool2d)
                    and not (f.name == "q_stride" and t.q_stride == (2, 2))
                },
            },
            "neck": {
                "_target_": OfficialClass.FPN_NECK,
                "position_encoding": {
                    "_target_": OfficialClass.POSITION_SINE,
                    "num_pos_feats": n.d_model,
                    "normalize": True,
                    "scale": None,
                    "temperature": n.position_temperature,
                },
                "d_model": n.d_model,
                "backbone_channel_list": list(t.channel_list),
                "fpn_top_down_levels": _list(n.fpn_top_down_levels),
                "fpn_interp_model": n.fpn_interp_model,
                "fuse_type": n.fuse_type,
                "kernel_size": n.kernel_size,
                "stride": n.stride,
                "padding": n.padding,
            },
        },
        "memory_attention": {
            "_target_": OfficialClass.MEMORY_ATTENTION,
            "d_model": c.hidden_dim,
            "pos_enc_at_input": ma.pos_enc_at_input,
            "num_layers": ma.num_layers,
            "layer": {
                "_target_": OfficialClass.MEMORY_ATTENTION_LAYER,
                "activation": ma.activation,
                "dim_feedforward": ma.dim_feedforward,
                "dropout": ma.dropout,
                "pos_enc_at_attn": ma.pos_enc_at_attn,
                "d_model": c.hidden_dim,
                "pos_enc_at_cross_attn_keys": ma.pos_enc_at_cross_attn_keys,
                "pos_enc_at_cross_attn_queries": ma.pos_enc_at_cross_attn_queries,
                "self_attention": dict(rope),
                "cross_attention": {**rope, "rope_k_repeat": ma.rope_k_repeat, "kv_in_dim": c.mem_dim},
            },
        },
        "memory_encoder": {
            "_target_": OfficialClass.MEMORY_ENCODER,
            "out_dim": me.out_dim,
            "in_dim": c.hidden_dim,
            "position_encoding": {
                "_target_": OfficialClass.POSITION_SINE,
                "num_pos_feats": me.out_dim,
                "normalize": True,
                "scale": None,
                "temperature": 10000,
            },
            "mask_downsampler": {
                "_target_": OfficialClass.MASK_DOWNSAMPLER,
                "embed_dim": c.hidden_dim,
                "kernel_size": me.mask_kernel_size,
                "stride": me.mask_stride,
                "padding": me.mask_padding,
                "total_stride": me.mask_total_stride,
            },
            "fuser": {
                "_target_": OfficialClass.FUSER,
                "num_layers": me.fuser_num_layers,
                "layer": {
                    "_target_": OfficialClass.CX_BLOCK,
                    "dim": c.hidden_dim,
                    "kernel_size": me.fuser_kernel_size,
                    "padding": me.fuser_padding,
                    "layer_scale_init_value": me.fuser_layer_scale_init_value,
                    "use_dwconv": me.fuser_use_dwconv,
                },
            },
        },
        "sam_mask_decoder_extra_args": {k: getattr(c.decoder, k) for k in _DECODER_EXTRA},
    }
    skip = {"trunk", "neck", "memory_attention", "memory_encoder", "decoder"}
    model.update({f.name: _list(getattr(c, f.name)) for f in fields(Sam2Config) if f.name not in skip})
    return model


def _list(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def load_official_yaml(path: str | Path) -> Sam2Config:
    """Read an official-style yaml file (with a top-level ``model`` section)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read SAM2 config {path}: {err}") from None
    if not isinstance(data, dict) or "model" not in data:
        raise ConfigError(f"{path} has no top-level 'model' section; expected an official SAM2 config")
    return config_from_official(data["model"])


def save_official_yaml(config: Sam2Config, path: str | Path) -> None:
    """Write ``config`` as an official-style yaml that ``sam2``'s Hydra builder can read."""
    import yaml

    text = "# @package _global_\n\n" + yaml.safe_dump({"model": config_to_official(config)}, sort_keys=False)
    Path(path).write_text(text)
