"""The checkpoint loader's checks and defaults, pinned whole (issue 15 mutation gate).

Every refusal of ``masklet.checkpoints`` (loading, the official yaml format, the Hugging Face
mapping) gets its whole message: they name the file, the key or the value at fault. The Hugging
Face fallbacks for fields a config leaves out are checked against the official yaml they stand
for. Small files in tmp_path and the packaged masklet-nano: no network, no large model.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import save_file

from masklet import CheckpointError, ConfigError, ModelNotFoundError, load_model
from masklet.checkpoints import (
    config_from_official,
    config_to_official,
    detect_config,
    hf_config_to_official_dict,
    hf_to_official_state_dict,
    load_official_yaml,
    load_state_dict_strict,
    packaged_checkpoint,
    read_checkpoint,
    recommended_amg_options,
    resolve_checkpoint,
    save_checkpoint,
    save_official_yaml,
)
from masklet.model import VARIANTS, Sam2Model
from reference.official import SMALL, apply_overrides, image_postprocess_overrides, official_model_dict

NOT_REPRESENTABLE = "Hugging Face SAM2 config not representable by the official model: "


def whole(message: str) -> str:
    return "^" + re.escape(message) + "$"


def hf(**overrides: Any) -> dict[str, Any]:
    """A minimal transformers-style video config: every field left out takes its default."""
    config: dict[str, Any] = {"model_type": "sam2_video"}
    apply_overrides(config, overrides)
    return config


# ------------------------------------------------------------------ Hugging Face configs


HF_CASES = [
    ({"vision_config.backbone_config.embed_dim_per_stage": [96, 192, 384]}, "per-stage lists differ in length"),
    ({"vision_config.backbone_config.blocks_per_stage": [1, 2, 7]}, "per-stage lists differ in length"),
    ({"vision_config.backbone_config.hidden_size": 64}, "hidden_size != embed_dim_per_stage[0]"),
    ({"vision_config.backbone_config.patch_kernel_size": 5}, "patch_kernel_size must be 7"),
    ({"vision_config.backbone_config.patch_kernel_size": [7, 5]}, "patch_kernel_size must be 7"),
    ({"vision_config.backbone_config.patch_stride": 2}, "patch_stride must be 4"),
    ({"vision_config.backbone_config.patch_padding": 1}, "patch_padding must be 3"),
    ({"vision_config.backbone_config.num_channels": 1}, "num_channels must be 3"),
    ({"vision_config.backbone_config.mlp_ratio": 3.0}, "mlp_ratio must be 4.0"),
    ({"vision_config.backbone_config.hidden_act": "relu"}, "hidden_act must be gelu"),
    ({"vision_config.backbone_config.layer_norm_eps": 1e-5}, "layer_norm_eps must be 1e-6"),
    (
        {"vision_config.backbone_config.embed_dim_per_stage": [96, 192, 288, 768]},
        "embed_dim_per_stage [96, 192, 288, 768] is not geometric",
    ),
    (
        {"vision_config.backbone_config.num_attention_heads_per_stage": [1, 2, 3, 8]},
        "num_attention_heads_per_stage [1, 2, 3, 8] is not geometric",
    ),
    ({"prompt_encoder_config.hidden_size": 128}, "prompt encoder hidden_size != fpn_hidden_size"),
    ({"mask_decoder_config.hidden_size": 128}, "mask decoder hidden_size != fpn_hidden_size"),
    ({"prompt_encoder_config.mask_input_channels": 8}, "mask_input_channels must be 16"),
    ({"prompt_encoder_config.num_point_embeddings": 5}, "num_point_embeddings must be 4"),
    ({"mask_decoder_config.mlp_dim": 1024}, "mask decoder mlp_dim must be 2048"),
    ({"mask_decoder_config.num_hidden_layers": 3}, "mask decoder num_hidden_layers must be 2"),
    ({"mask_decoder_config.num_attention_heads": 4}, "mask decoder num_attention_heads must be 8"),
    ({"mask_decoder_config.attention_downsample_rate": 1}, "mask decoder attention_downsample_rate must be 2"),
    ({"mask_decoder_config.num_multimask_outputs": 4}, "mask decoder num_multimask_outputs must be 3"),
    ({"mask_decoder_config.iou_head_depth": 2}, "mask decoder iou_head_depth must be 3"),
    ({"mask_decoder_config.iou_head_hidden_dim": 128}, "mask decoder iou_head_hidden_dim must be 256"),
    (
        {"vision_config.backbone_config.image_size": 1024, "prompt_encoder_config.image_size": 512},
        "inconsistent image sizes [[1024, 1024], [512, 512]] vs 512",
    ),
    ({"image_size": 512}, "inconsistent image sizes [[1024, 1024], [512, 512]] vs 1024"),
    ({"vision_config.num_feature_levels": 2}, "num_feature_levels must be 3 (high-res features)"),
    (
        {"vision_config.backbone_channel_list": [768, 384, 192, 48]},
        "backbone_channel_list [768, 384, 192, 48] != reversed stage dims [96, 192, 384, 768]",
    ),
    ({"memory_attention_hidden_size": 128}, "memory_attention_hidden_size != fpn_hidden_size"),
    ({"memory_encoder_hidden_size": 128}, "memory_encoder_hidden_size != fpn_hidden_size"),
    ({"mask_downsampler_embed_dim": 128}, "mask_downsampler_embed_dim != fpn_hidden_size"),
    ({"memory_fuser_embed_dim": 128}, "memory_fuser_embed_dim != fpn_hidden_size"),
    ({"memory_fuser_intermediate_dim": 512}, "memory_fuser_intermediate_dim != 4 * hidden"),
    ({"mask_downsampler_hidden_act": "relu"}, "mask_downsampler_hidden_act must be gelu"),
    ({"memory_fuser_hidden_act": "relu"}, "memory_fuser_hidden_act must be gelu"),
]


@pytest.mark.parametrize("overrides, message", HF_CASES)
def test_unrepresentable_hf_configs_get_their_whole_message(overrides, message):
    with pytest.raises(ConfigError, match=whole(NOT_REPRESENTABLE + message)):
        hf_config_to_official_dict(hf(**overrides))


@pytest.mark.parametrize("config, model_type", [({"model_type": "sam"}, "'sam'"), ({}, "None"), ("sam2_video", "None")])
def test_non_sam2_hf_configs_get_their_whole_message(config, model_type):
    message = f"not a Hugging Face SAM2 config (model_type={model_type}; expected 'sam2_video' or 'sam2')"
    with pytest.raises(ConfigError, match=whole(message)):
        hf_config_to_official_dict(config)
    with pytest.raises(ConfigError, match=whole(message)):
        hf_to_official_state_dict({}, config)


@pytest.mark.parametrize("model_type", ["sam2_video", "sam2"])
@pytest.mark.parametrize("version", ["sam2.1", "sam2"])
def test_hf_fields_left_out_take_the_official_tiny_values(model_type, version):
    """A config naming nothing but its type is the official tiny model (the transformers
    defaults); the two ``enable_*`` flags pick SAM2 or SAM2.1. Image-only configs ignore them."""
    flags = {"enable_occlusion_spatial_embedding": False, "enable_temporal_pos_encoding_for_object_pointers": False}
    config = {"model_type": model_type, **(flags if version == "sam2" else {})}
    converted = hf_config_to_official_dict(config)
    expected = "sam2.1-hiera-tiny" if model_type == "sam2" else f"{version}-hiera-tiny"
    assert config_from_official(converted) == VARIANTS[expected]
    official = apply_overrides(official_model_dict(expected), image_postprocess_overrides())
    for key in ("image_size", "num_maskmem", "sam_mask_decoder_extra_args"):
        assert converted[key] == official[key]
    assert converted["max_obj_ptrs_in_encoder"] == 16
    # the shipped yaml leaves window_spec at the Hiera default
    assert converted["image_encoder"]["trunk"] == {**official["image_encoder"]["trunk"], "window_spec": [8, 4, 14, 7]}
    layer = converted["memory_attention"]["layer"]
    assert layer["self_attention"]["feat_sizes"] == [64, 64]
    assert layer["cross_attention"]["kv_in_dim"] == 64
    assert converted["memory_encoder"]["in_dim"] == 256
    assert converted["memory_encoder"]["mask_downsampler"]["embed_dim"] == 256
    assert converted["memory_encoder"]["position_encoding"]["num_pos_feats"] == 64


def test_non_default_hf_fields_are_written():
    """Fields that differ from the official defaults reach the official dict (and only those)."""
    converted = hf_config_to_official_dict(
        hf(
            **{
                "vision_config.backbone_config.embed_dim_per_stage": [96, 288, 864, 2592],
                "vision_config.backbone_config.num_attention_heads_per_stage": [1, 1, 1, 1],
                "vision_config.backbone_config.num_query_pool_stages": 2,
                "vision_config.backbone_config.query_stride": [1, 1],
                "vision_config.backbone_channel_list": [2592, 864, 288, 96],
                "vision_config.fpn_kernel_size": 3,
                "vision_config.fpn_stride": 2,
                "vision_config.fpn_padding": 1,
                "vision_config.fpn_top_down_levels": [3],
                "memory_attention_rope_feat_sizes": [32, 32],
                "rope_parameters": {"rope_theta": 500.0},
                "mask_decoder_config.dynamic_multimask_via_stability": False,
                "mask_decoder_config.dynamic_multimask_stability_delta": 0.1,
                "mask_decoder_config.dynamic_multimask_stability_thresh": 0.9,
            }
        )
    )
    trunk, neck = converted["image_encoder"]["trunk"], converted["image_encoder"]["neck"]
    assert (trunk["dim_mul"], trunk["head_mul"], trunk["q_pool"], trunk["q_stride"]) == (3.0, 1.0, 2, [1, 1])
    assert (neck["kernel_size"], neck["stride"], neck["padding"]) == (3, 2, 1)
    assert neck["fpn_top_down_levels"] == [3]
    assert neck["backbone_channel_list"] == [2592, 864, 288, 96]
    layer = converted["memory_attention"]["layer"]
    assert layer["self_attention"]["feat_sizes"] == [32, 32]
    assert layer["cross_attention"]["rope_theta"] == 500.0
    assert converted["sam_mask_decoder_extra_args"] == {
        "dynamic_multimask_via_stability": False,
        "dynamic_multimask_stability_delta": 0.1,
        "dynamic_multimask_stability_thresh": 0.9,
    }
    plain = hf_config_to_official_dict(hf())
    assert not {"dim_mul", "head_mul", "q_pool", "q_stride"} & set(plain["image_encoder"]["trunk"])
    assert not {"kernel_size", "stride", "padding"} & set(plain["image_encoder"]["neck"])


# ------------------------------------------------------------- Hugging Face state dicts


def test_hf_state_dict_renames_split_and_renumber():
    """The layout changes of the mapping: MLP stacks renumbered, the mask downsampler's final
    conv after its layers, the point embeddings split, one copy of the positional matrix."""
    t = {i: torch.full((4, 2), float(i)) for i in range(10)}
    state = {
        "vision_encoder.backbone.blocks.0.mlp.proj_in.weight": t[0],
        "vision_encoder.backbone.blocks.0.mlp.layers.0.weight": t[1],
        "vision_encoder.backbone.blocks.0.mlp.proj_out.weight": t[2],
        "mask_decoder.iou_prediction_head.proj_in.bias": t[3],
        "mask_decoder.iou_prediction_head.proj_out.bias": t[4],
        "memory_encoder.mask_downsampler.layers.0.conv.weight": t[5],
        "memory_encoder.mask_downsampler.layers.1.layer_norm.bias": t[6],
        "memory_encoder.mask_downsampler.final_conv.weight": t[7],
        "prompt_encoder.point_embed.weight": torch.arange(8.0).reshape(4, 2),
        "shared_image_embedding.positional_embedding": t[8],
        "prompt_encoder.shared_embedding.positional_embedding": t[8].clone(),
        "memory_attention.layers.0.self_attn.o_proj.weight": t[9],
    }
    out = hf_to_official_state_dict(state, hf())
    expected = {
        "image_encoder.trunk.blocks.0.mlp.layers.0.weight": t[0],
        "image_encoder.trunk.blocks.0.mlp.layers.1.weight": t[1],
        "image_encoder.trunk.blocks.0.mlp.layers.2.weight": t[2],
        "sam_mask_decoder.iou_prediction_head.layers.0.bias": t[3],
        "sam_mask_decoder.iou_prediction_head.layers.1.bias": t[4],
        "memory_encoder.mask_downsampler.encoder.0.weight": t[5],
        "memory_encoder.mask_downsampler.encoder.4.bias": t[6],
        "memory_encoder.mask_downsampler.encoder.6.weight": t[7],
        **{f"sam_prompt_encoder.point_embeddings.{i}.weight": torch.tensor([[2.0 * i, 2.0 * i + 1]]) for i in range(4)},
        "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix": t[8],
        "memory_attention.layers.0.self_attn.out_proj.weight": t[9],
    }
    assert sorted(out) == sorted(expected)
    for key, value in expected.items():
        torch.testing.assert_close(out[key], value, rtol=0, atol=0, msg=key)
    alone = {"prompt_encoder.shared_embedding.positional_embedding": t[8]}  # one copy only
    assert list(hf_to_official_state_dict(alone, hf())) == [
        "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
    ]


def test_bad_hf_state_dicts_get_their_whole_message():
    pe = "shared_image_embedding.positional_embedding"
    other = "prompt_encoder.shared_embedding.positional_embedding"
    for second in (torch.ones(2, 3), torch.zeros(3, 2)):
        with pytest.raises(
            CheckpointError, match=whole(f"{pe!r} and {other!r} differ; the official model shares one matrix")
        ):
            hf_to_official_state_dict({pe: torch.zeros(2, 3), other: second}, hf())
    key = "prompt_encoder.point_embed.weight"
    with pytest.raises(CheckpointError, match=whole(f"{key!r} must be 2-D, got shape (4,)")):
        hf_to_official_state_dict({key: torch.zeros(4)}, hf())
    # one hidden layer (layers.1) makes proj_out layers.2 as well
    mlp = "vision_encoder.backbone.blocks.0.mlp"
    clash = {f"{mlp}.layers.1.weight": torch.zeros(1), f"{mlp}.proj_out.weight": torch.zeros(1)}
    with pytest.raises(
        CheckpointError,
        match=whole(
            f"Hugging Face key '{mlp}.proj_out.weight' collides with another key on "
            "'image_encoder.trunk.blocks.0.mlp.layers.2.weight'"
        ),
    ):
        hf_to_official_state_dict(clash, hf())
    unknown = {f"extra.{i:02d}": torch.zeros(1) for i in range(12)}
    shown = ", ".join(f"extra.{i:02d}" for i in range(10))
    with pytest.raises(CheckpointError, match=whole(f"12 unknown key(s) in Hugging Face SAM2 checkpoint: {shown} ...")):
        hf_to_official_state_dict({**unknown, "no_memory_embedding": torch.zeros(1)}, hf())
    with pytest.raises(
        CheckpointError, match=whole("2 unknown key(s) in Hugging Face SAM2 checkpoint: extra.00, extra.01")
    ):
        hf_to_official_state_dict({"extra.01": torch.zeros(1), "extra.00": torch.zeros(1)}, hf())


# -------------------------------------------------------------------- official configs


def small_dict() -> dict[str, Any]:
    return official_model_dict("sam2.1-hiera-tiny", **SMALL)


def test_bad_official_configs_get_their_whole_message(tmp_path):
    with pytest.raises(
        ConfigError,
        match=whole("not an official SAM2 model config: expected a mapping with an 'image_encoder' section"),
    ):
        config_from_official({"memory_attention": {}})
    with pytest.raises(ConfigError, match=whole("not an official SAM2 model config")[:-1]):
        config_from_official(["image_encoder"])
    for section in ("memory_attention", "memory_encoder"):
        d = small_dict()
        del d[section]
        with pytest.raises(ConfigError, match=whole(f"official SAM2 model config lacks the section '{section}'")):
            config_from_official(d)
    d = small_dict()
    del d["image_encoder"]["neck"]
    with pytest.raises(ConfigError, match=whole("official SAM2 model config lacks the section 'neck'")):
        config_from_official(d)
    d = small_dict()
    d["image_encoder"]["trunk"]["embed_dim"] = None
    with pytest.raises(ConfigError, match="^official SAM2 model config has an unexpected value: "):
        config_from_official(d)
    d = small_dict()
    d["image_encoder"]["neck"]["backbone_channel_list"] = [64, 32, 16, 8]
    with pytest.raises(
        ConfigError,
        match=whole(
            "neck.backbone_channel_list [64, 32, 16, 8] does not match the trunk's stage widths [128, 64, 32, 16]"
        ),
    ):
        config_from_official(d)
    for name in ("trunk", "neck", "decoder"):  # our nested field names are no official top-level keys
        d = small_dict()
        d[name] = {}
        with pytest.raises(ConfigError, match=whole(f"unknown keys in the official model config: ['{name}']")):
            config_from_official(d)
    d = small_dict()
    d.update(zeta=1, alpha=2)
    with pytest.raises(ConfigError, match=whole("unknown keys in the official model config: ['alpha', 'zeta']")):
        config_from_official(d)
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError, match=f"^cannot read SAM2 config {re.escape(str(missing))}: "):
        load_official_yaml(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match=f"^cannot read SAM2 config {re.escape(str(bad))}: "):
        load_official_yaml(bad)
    for text in ("- 1\n", "trainer: {}\n"):
        bare = tmp_path / "bare.yaml"
        bare.write_text(text)
        with pytest.raises(
            ConfigError,
            match=whole(f"{bare} has no top-level 'model' section; expected an official SAM2 config"),
        ):
            load_official_yaml(bare)


def test_official_config_sections_and_predictor_keys_are_read():
    """Values given in the official sections reach the config; predictor keys are accepted."""
    d = small_dict()
    d["image_encoder"]["neck"]["position_encoding"]["temperature"] = 500
    d["memory_attention"]["num_layers"] = 3
    d["memory_attention"]["pos_enc_at_input"] = False
    d["memory_attention"]["layer"]["cross_attention"]["rope_theta"] = 20.0
    d["memory_attention"]["layer"]["cross_attention"]["rope_k_repeat"] = False
    d["memory_encoder"]["fuser"]["num_layers"] = 1
    d["memory_encoder"]["fuser"]["layer"]["layer_scale_init_value"] = "1e-3"
    d["memory_encoder"]["mask_downsampler"]["kernel_size"] = 5
    d["sam_mask_decoder_extra_args"] = {"dynamic_multimask_stability_delta": 0.1}
    d.update(fill_hole_area=8, non_overlap_masks=True, num_maskmem=5)
    c = config_from_official(d)
    assert (c.neck.scalp, c.neck.position_temperature) == (1, 500.0)
    assert (c.memory_attention.num_layers, c.memory_attention.pos_enc_at_input) == (3, False)
    assert c.memory_attention.rope_theta == 20.0
    assert c.memory_attention.rope_k_repeat is False
    assert (c.memory_encoder.fuser_num_layers, c.memory_encoder.mask_kernel_size) == (1, 5)
    assert c.memory_encoder.fuser_layer_scale_init_value == 1e-3
    assert c.decoder.dynamic_multimask_stability_delta == 0.1
    assert c.num_maskmem == 5
    assert config_from_official(config_to_official(c)) == c


def test_official_yaml_round_trip(tmp_path):
    c = config_from_official(small_dict())
    path = tmp_path / "small.yaml"
    save_official_yaml(c, path)
    text = path.read_text()
    assert text.startswith("# @package _global_\n\nmodel:\n  _target_: sam2.modeling.sam2_base.SAM2Base\n")
    assert list(yaml.safe_load(text)["model"])[:4] == [
        "_target_",
        "image_encoder",
        "memory_attention",
        "memory_encoder",
    ]
    assert load_official_yaml(path) == c


# --------------------------------------------------------------------------- loading


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory) -> Path:
    model = Sam2Model(config_from_official(small_dict()))
    path = tmp_path_factory.mktemp("ckpt") / "small.pt"
    save_checkpoint(model, path)
    save_official_yaml(model.config, path.with_suffix(".yaml"))
    return path


def test_load_model_arguments_get_their_whole_message():
    with pytest.raises(ConfigError, match=whole("backend must be 'torch' or 'onnxruntime', got 'tf'")):
        load_model("masklet-nano", backend="tf")
    with pytest.raises(
        ConfigError, match=whole("compile=True needs backend='torch' (ONNX Runtime compiles its own graphs)")
    ):
        load_model("masklet-nano", backend="onnxruntime", compile=True)
    with pytest.raises(
        ConfigError, match=whole("dtype must be torch.float32, torch.bfloat16 or torch.float16, got torch.int8")
    ):
        load_model("masklet-nano", dtype=torch.int8)
    with pytest.raises(
        ConfigError,
        match=whole("memory_dtype must be torch.float32, torch.bfloat16 or torch.float16, got torch.float64"),
    ):
        load_model("masklet-nano", memory_dtype=torch.float64)


def test_load_model_dtypes_land_where_documented():
    """dtype: image encoder and memory attention; memory_dtype: memory attention and encoder;
    the heads stay float32. Defaults: float32 everywhere, eval mode, no compile."""

    def dtypes(m):
        return [next(getattr(m, part).parameters()).dtype for part in parts]

    parts = ("image_encoder", "memory_attention", "memory_encoder", "sam_mask_decoder")
    f32, bf16 = torch.float32, torch.bfloat16
    plain = load_model("masklet-nano")
    assert dtypes(plain) == [f32] * 4
    assert not plain.training
    assert dtypes(load_model("masklet-nano", dtype=bf16)) == [bf16, bf16, f32, f32]
    assert dtypes(load_model("masklet-nano", memory_dtype=bf16)) == [f32, bf16, bf16, f32]
    assert dtypes(load_model("masklet-nano", dtype=torch.float16, memory_dtype=bf16)) == [
        torch.float16,
        bf16,
        bf16,
        f32,
    ]


def test_checkpoint_files_and_names_get_their_whole_message(tmp_path, small_checkpoint):
    names = "masklet-nano, " + ", ".join(
        f"sam2{v}-hiera-{s}" for v in ("", ".1") for s in ("tiny", "small", "base-plus", "large")
    )
    with pytest.raises(
        ModelNotFoundError,
        match=whole(
            f"'no-such-model' is neither an existing file or folder nor a known model name; known names: {names}"
        ),
    ):
        resolve_checkpoint("no-such-model")
    with pytest.raises(
        ModelNotFoundError, match=whole("'sam2-hiera-tiny' is not a packaged model; packaged: masklet-nano")
    ):
        packaged_checkpoint("sam2-hiera-tiny")
    assert resolve_checkpoint("masklet-nano") == packaged_checkpoint("masklet-nano")
    assert resolve_checkpoint(str(small_checkpoint)) == small_checkpoint
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        CheckpointError,
        match=whole(f"folder {empty} holds neither model.safetensors (+ config.json) nor exactly one .pt checkpoint"),
    ):
        read_checkpoint(empty)
    not_sam2 = tmp_path / "not_sam2.pt"
    torch.save({"model": {"a": 1}}, not_sam2)
    with pytest.raises(
        CheckpointError,
        match=whole(
            f"{not_sam2} is not a SAM2 checkpoint: expected {{'model': state_dict}} or a state dict of tensors"
        ),
    ):
        read_checkpoint(not_sam2)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(small_checkpoint.read_bytes()[:100])
    with pytest.raises(
        CheckpointError,
        match=f"^cannot read {re.escape(str(truncated))} as a PyTorch checkpoint \\(truncated or not a .pt file\\?\\): ",
    ):
        read_checkpoint(truncated)
    hf_named = tmp_path / "hf" / "model.safetensors"
    hf_named.parent.mkdir()
    save_file({"no_memory_embedding": torch.zeros(1, 1, 4)}, str(hf_named))
    with pytest.raises(
        CheckpointError, match=whole(f"{hf_named} uses Hugging Face names but has no config.json beside it")
    ):
        read_checkpoint(hf_named.parent)
    (hf_named.parent / "config.json").write_text("{not json")
    with pytest.raises(
        CheckpointError, match=f"^{re.escape(str(hf_named.parent / 'config.json'))} is not valid JSON: "
    ):
        read_checkpoint(hf_named)
    foreign = tmp_path / "foreign.safetensors"
    foreign.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a header")
    with pytest.raises(
        CheckpointError,
        match=f"^cannot read {re.escape(str(foreign))} as safetensors \\(truncated or foreign file\\?\\): ",
    ):
        read_checkpoint(foreign)


def test_checkpoint_reading_paths(tmp_path, small_checkpoint):
    """A folder with one .pt, the yaml beside it (.yaml or .yml), official names in safetensors."""
    expected = config_from_official(small_dict())
    state, config = read_checkpoint(small_checkpoint)
    assert config == expected
    folder = tmp_path / "one"
    folder.mkdir()
    (folder / "w.pt").write_bytes(small_checkpoint.read_bytes())
    (folder / "w.yml").write_text(small_checkpoint.with_suffix(".yaml").read_text())
    state2, config2 = read_checkpoint(folder)
    assert config2 == expected
    assert sorted(state2) == sorted(state)
    bare = tmp_path / "bare.pt"
    torch.save(state, bare)  # a plain state dict, no {"model": ...} and no yaml
    state3, config3 = read_checkpoint(bare)
    assert config3 is None
    assert sorted(state3) == sorted(state)
    official_names = tmp_path / "official.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(official_names))
    state4, config4 = read_checkpoint(official_names)
    assert config4 is None
    assert all(torch.equal(state4[k], state[k]) for k in state)
    # detect_config on a non-official size names it; an explicit config loads it
    with pytest.raises(
        ConfigError,
        match=whole(
            "the weights have a Hiera trunk of width 16 and depth 7, which is no official size; pass its config "
            "(a Sam2Config or an official-style yaml) with config=..."
        ),
    ):
        detect_config(state)
    assert load_model(bare, config=small_checkpoint.with_suffix(".yaml")).config == expected
    with pytest.raises(
        CheckpointError,
        match=whole("the weights have no 'image_encoder.trunk.patch_embed.proj.weight': not a SAM2 checkpoint"),
    ):
        detect_config({"a": torch.zeros(1)})


def test_variants_are_detected_from_the_weights():
    """Only the trunk's width and depth and the SAM2.1 key decide (shapes, not values)."""
    for width, depth, size in ((96, 12, "tiny"), (96, 16, "small"), (112, 24, "base-plus"), (144, 48, "large")):
        state = {"image_encoder.trunk.patch_embed.proj.weight": torch.zeros(width, 3, 1, 1)}
        state.update({f"image_encoder.trunk.blocks.{i}.norm1.weight": torch.zeros(1) for i in range(depth)})
        assert detect_config(state) == VARIANTS[f"sam2-hiera-{size}"]
        state["no_obj_embed_spatial"] = torch.zeros(1, 64)
        assert detect_config(state) == VARIANTS[f"sam2.1-hiera-{size}"]


def test_strict_loading_names_every_kind_of_mismatch(small_checkpoint):
    model = Sam2Model(config_from_official(small_dict()))
    state, _ = read_checkpoint(small_checkpoint)
    bad = dict(state)
    removed = sorted(bad)[:7]
    for k in removed:
        del bad[k]
    bad["extra.weight"] = torch.zeros(1)
    wrong = "no_mem_embed"
    bad[wrong] = torch.zeros(3)
    shown = ", ".join(removed[:5])
    message = (
        f"checkpoint does not match the model config; 7 missing: {shown} (+2 more); 1 unexpected: extra.weight; "
        f"1 wrong shape: {wrong}"
    )
    with pytest.raises(CheckpointError, match=whole(message)):
        load_state_dict_strict(model, bad)
    only = dict(state)
    del only[removed[0]]
    with pytest.raises(
        CheckpointError, match=whole(f"checkpoint does not match the model config; 1 missing: {removed[0]}")
    ):
        load_state_dict_strict(model, only)


def test_save_checkpoint_in_a_smaller_dtype(tmp_path):
    model = Sam2Model(config_from_official(small_dict()))
    path = tmp_path / "half.pt"
    save_checkpoint(model, str(path), dtype=torch.float16)
    saved = torch.load(path, weights_only=True)
    assert list(saved) == ["model"]
    dtypes = {v.dtype for v in saved["model"].values()}
    assert torch.float16 in dtypes
    assert torch.float32 not in dtypes
    ints = [k for k, v in model.state_dict().items() if not v.is_floating_point()]
    assert all(saved["model"][k].dtype == model.state_dict()[k].dtype for k in ints)
    full = tmp_path / "full.pt"
    save_checkpoint(model, full)
    assert all(v.dtype == model.state_dict()[k].dtype for k, v in torch.load(full, weights_only=True)["model"].items())


def test_recommended_amg_options(tmp_path):
    nano = recommended_amg_options("masklet-nano")
    assert nano
    assert all(type(v) is float for v in nano.values())
    assert nano == {
        k: float(v)
        for k, v in json.loads(packaged_checkpoint("masklet-nano").with_suffix(".amg.json").read_text()).items()
    }
    ckpt = tmp_path / "m.pt"
    assert recommended_amg_options(ckpt) == {}  # no such file
    assert recommended_amg_options(tmp_path) == {}  # a folder
    ckpt.write_bytes(b"")
    assert recommended_amg_options(ckpt) == {}  # no sidecar
    sidecar = tmp_path / "m.amg.json"
    sidecar.write_text('{"pred_iou_thresh": 1, "stability_score_thresh": 0.5}')
    assert recommended_amg_options(str(ckpt)) == {"pred_iou_thresh": 1.0, "stability_score_thresh": 0.5}
    sidecar.write_text("{oops")
    with pytest.raises(ConfigError, match=f"^{re.escape(str(sidecar))} is not valid JSON: "):
        recommended_amg_options(ckpt)
    for text in ("[1, 2]", '{"a": true}', '{"a": "1"}'):
        sidecar.write_text(text)
        with pytest.raises(ConfigError, match=whole(f"{sidecar}: expected a JSON object of option names to numbers")):
            recommended_amg_options(ckpt)


def test_config_to_official_keys(tmp_path):
    """The official dict carries the keys sam2's classes take (spelled as in the shipped yaml)."""
    c = config_from_official(small_dict())
    d = config_to_official(copy.deepcopy(c))
    shipped = small_dict()
    assert d["image_encoder"]["neck"]["position_encoding"] == shipped["image_encoder"]["neck"]["position_encoding"]
    for section in ("memory_attention", "memory_encoder"):
        assert set(shipped[section]) <= set(d[section]), section
    assert set(shipped["memory_attention"]["layer"]) <= set(d["memory_attention"]["layer"])
    assert set(shipped["memory_encoder"]["fuser"]["layer"]) <= set(d["memory_encoder"]["fuser"]["layer"])
    assert d["memory_encoder"]["fuser"]["layer"]["layer_scale_init_value"] == 1e-6
    assert "q_stride" not in d["image_encoder"]["trunk"]


def test_memory_attention_depth_defaults_to_the_shipped_four_layers():
    d = small_dict()
    del d["memory_attention"]["num_layers"]
    assert config_from_official(d).memory_attention.num_layers == 4


def test_hub_probe_dials_the_endpoint(monkeypatch):
    """The reachability probe connects to the hub endpoint's host on port 443 (https default)."""
    import socket

    import huggingface_hub.constants as constants

    from masklet.checkpoints.loading import _hub_unreachable

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "https://hub.example")
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    dialed = []

    def refuse(address, timeout):
        dialed.append((address, timeout))
        raise OSError("refused")

    monkeypatch.setattr(socket, "create_connection", refuse)
    assert _hub_unreachable(timeout=1.5) == "cannot reach hub.example: refused"
    assert dialed == [(("hub.example", 443), 1.5)]
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert _hub_unreachable() is None  # through a proxy the client tries itself
    assert len(dialed) == 1
