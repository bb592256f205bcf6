"""Hugging Face -> official SAM2 conversion (``masklet.checkpoints.hf``) checked against both libraries."""

from __future__ import annotations

import copy
import importlib
import inspect
from typing import Any

import pytest
import torch

from masklet.checkpoints import hf_config_to_official_dict, hf_to_official_state_dict
from masklet.errors import CheckpointError, ConfigError

pytest.importorskip("sam2")
pytest.importorskip("transformers")

from reference.hf import build_hf_model, hf_config, hf_image_outputs, save_hf_checkpoint
from reference.official import (
    SMALL,
    apply_overrides,
    build_official_model,
    image_postprocess_overrides,
    official_image_outputs,
    official_model_dict,
)

ATOL = 1e-4


@pytest.fixture(scope="module", params=["sam2.1", "sam2.0"])
def converted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A random HF video model, saved and read back, converted and loaded strictly into sam2."""
    hf = build_hf_model(seed=3, sam2_1=request.param == "sam2.1")
    state, config = save_hf_checkpoint(hf, tmp_path_factory.mktemp("hf"))
    official = build_official_model(hf_config_to_official_dict(config), seed=None)
    official_state = hf_to_official_state_dict(state, config)
    result = official.load_state_dict(official_state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return {"hf": hf, "official": official, "state": state, "config": config, "official_state": official_state}


def _image(seed: int = 0) -> torch.Tensor:
    """A normalised 256 px image with structure (gradient, disc, noise)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 256), torch.linspace(-1, 1, 256), indexing="ij")
    disc = ((xx - 0.2) ** 2 + (yy + 0.1) ** 2 < 0.2).float()
    img = torch.stack([xx, yy, disc]) + 0.3 * torch.randn(3, 256, 256, generator=g)
    return img[None]


PROMPTS: dict[str, dict[str, Any]] = {
    "point_multimask": {"point_coords": torch.tensor([[[100.0, 120.0]]]), "point_labels": torch.tensor([[1]])},
    "points_single": {
        "point_coords": torch.tensor([[[100.0, 120.0], [30.0, 200.0]]]),
        "point_labels": torch.tensor([[1, 0]]),
        "multimask_output": False,
    },
    "two_boxes": {"boxes": torch.tensor([[10.0, 20.0, 200.0, 230.0], [50.0, 50.0, 100.0, 140.0]])},
    "box_point_mask": {
        "boxes": torch.tensor([[10.0, 20.0, 200.0, 230.0]]),
        "point_coords": torch.tensor([[[100.0, 120.0]]]),
        "point_labels": torch.tensor([[1]]),
        "mask_input": 3 * torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(1)),
        "multimask_output": False,
    },
}


@pytest.mark.parametrize("prompt", sorted(PROMPTS))
def test_image_outputs_match_transformers(converted: dict[str, Any], prompt: str) -> None:
    x = _image()
    ours = official_image_outputs(converted["official"], x, **PROMPTS[prompt])
    ref = hf_image_outputs(converted["hf"], x, **PROMPTS[prompt])
    for key in ("backbone_fpn", "vision_pos_enc", "high_res_feats"):
        assert len(ours[key]) == len(ref[key]) == (3 if key != "high_res_feats" else 2)
        for a, b in zip(ours[key], ref[key]):
            torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    for key in ("image_embed", "low_res_masks", "iou_scores", "object_score_logits"):
        torch.testing.assert_close(ours[key], ref[key], atol=ATOL, rtol=0, msg=lambda m, key=key: f"{key}: {m}")
    logits = ours["low_res_masks"]
    assert logits.std() > 0.3 and 0.02 < (logits > 0).float().mean() < 0.98  # non-degenerate masks
    iou = ours["iou_scores"].flatten()
    assert ((iou > 0) & (iou < 1)).all() and (iou.numel() == 1 or iou.std() > 0)


def test_conversion_is_a_faithful_relabelling(converted: dict[str, Any]) -> None:
    state, out = converted["state"], converted["official_state"]
    point = state["prompt_encoder.point_embed.weight"]
    for i in range(4):
        torch.testing.assert_close(
            out[f"sam_prompt_encoder.point_embeddings.{i}.weight"], point[i : i + 1], atol=0, rtol=0
        )
    torch.testing.assert_close(
        out["sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"],
        state["shared_image_embedding.positional_embedding"],
    )
    assert (
        out["image_encoder.trunk.blocks.0.attn.qkv.weight"] is state["vision_encoder.backbone.blocks.0.attn.qkv.weight"]
    )
    assert (
        out["sam_mask_decoder.iou_prediction_head.layers.2.bias"]
        is state["mask_decoder.iou_prediction_head.proj_out.bias"]
    )
    assert (
        out["memory_encoder.mask_downsampler.encoder.12.weight"]
        is state["memory_encoder.mask_downsampler.final_conv.weight"]
    )
    # every HF tensor appears in the output (nothing dropped besides the duplicated PE matrix)
    ids = {id(t) for t in out.values()}
    dropped = [k for k, t in state.items() if id(t) not in ids and k not in ("prompt_encoder.point_embed.weight",)]
    assert dropped == ["prompt_encoder.shared_embedding.positional_embedding"]
    is_21 = converted["config"]["enable_occlusion_spatial_embedding"]
    assert ("no_obj_embed_spatial" in out) == is_21 and ("obj_ptr_tpos_proj.weight" in out) == is_21


@torch.no_grad()
def test_memory_modules_match_transformers(converted: dict[str, Any]) -> None:
    hf, official = converted["hf"], converted["official"]
    g = torch.Generator().manual_seed(5)
    feats, masks = torch.randn(2, 256, 16, 16, generator=g), torch.randn(2, 1, 256, 256, generator=g)
    ours = official.memory_encoder(feats, masks, skip_mask_sigmoid=True)
    ref_feats, ref_pos = hf.memory_encoder(feats, masks)
    torch.testing.assert_close(ours["vision_features"], ref_feats, atol=ATOL, rtol=0)
    torch.testing.assert_close(ours["vision_pos_enc"][0], ref_pos, atol=ATOL, rtol=0)

    n_ptr = 4  # memory: two frames of 16x16 spatial memories (RoPE) + 4 object-pointer tokens (no RoPE)
    curr, curr_pos = torch.randn(256, 2, 256, generator=g), torch.randn(256, 2, 256, generator=g)
    memory, memory_pos = torch.randn(512 + n_ptr, 2, 64, generator=g), torch.randn(512 + n_ptr, 2, 64, generator=g)
    ours = official.memory_attention([curr], memory, [curr_pos], memory_pos, num_obj_ptr_tokens=n_ptr)
    ref = hf.memory_attention(curr, memory, curr_pos, memory_pos, num_object_pointer_tokens=n_ptr)
    torch.testing.assert_close(ours, ref[0].transpose(0, 1), atol=ATOL, rtol=0)

    tokens = torch.randn(3, 256, generator=g)
    torch.testing.assert_close(official.obj_ptr_proj(tokens), hf.object_pointer_proj(tokens), atol=ATOL, rtol=0)
    torch.testing.assert_close(official.mask_downsample(masks), hf.mask_downsample(masks), atol=ATOL, rtol=0)
    for name in ("maskmem_tpos_enc", "no_mem_embed", "no_mem_pos_enc", "no_obj_ptr"):
        assert getattr(official, name).abs().min() > 0  # randomised, so the mapping is not vacuous


def test_image_only_checkpoint_converts_image_path(tmp_path: Any) -> None:
    hf = build_hf_model(seed=4, video=False)
    state, config = save_hf_checkpoint(hf, tmp_path)
    assert config["model_type"] == "sam2"
    official = build_official_model(hf_config_to_official_dict(config), seed=0)
    result = official.load_state_dict(hf_to_official_state_dict(state, config), strict=False)
    assert not result.unexpected_keys
    assert result.missing_keys and all(
        k.startswith(("memory_", "maskmem", "no_mem_pos", "no_obj", "obj_ptr", "mask_downsample"))
        for k in result.missing_keys
    )
    x, prompt = _image(1), PROMPTS["point_multimask"]
    ours, ref = official_image_outputs(official, x, **prompt), hf_image_outputs(hf, x, **prompt)
    torch.testing.assert_close(ours["low_res_masks"], ref["low_res_masks"], atol=ATOL, rtol=0)
    torch.testing.assert_close(ours["iou_scores"], ref["iou_scores"], atol=ATOL, rtol=0)


# --------------------------------------------------------------------------------- configs


def _effective(node: Any) -> Any:
    """Fill constructor defaults of every ``_target_`` so equivalent configs compare equal."""
    if isinstance(node, (list, tuple)):
        return [_effective(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _effective(v) for k, v in node.items()}
    if "_target_" in node:
        module, _, name = node["_target_"].rpartition(".")
        for cls in inspect.getmro(getattr(importlib.import_module(module), name)):
            if "__init__" in vars(cls):
                for p in inspect.signature(cls.__init__).parameters.values():
                    if p.default is not inspect.Parameter.empty and p.name not in out:
                        out[p.name] = _effective(p.default)
    return out


# Official variants as transformers describes them (cf. transformers' SAM2 conversion script).
HF_VARIANTS: dict[str, dict[str, Any]] = {
    "tiny": {},
    "small": {"blocks_per_stage": [1, 2, 11, 2], "global_attention_blocks": [7, 10, 13]},
    "base-plus": {
        "hidden_size": 112,
        "embed_dim_per_stage": [112, 224, 448, 896],
        "num_attention_heads_per_stage": [2, 4, 8, 16],
        "blocks_per_stage": [2, 3, 16, 3],
        "global_attention_blocks": [12, 16, 20],
        "window_positional_embedding_background_size": [14, 14],
    },
    "large": {
        "hidden_size": 144,
        "embed_dim_per_stage": [144, 288, 576, 1152],
        "num_attention_heads_per_stage": [2, 4, 8, 16],
        "blocks_per_stage": [2, 6, 36, 4],
        "global_attention_blocks": [23, 33, 43],
        "window_size_per_stage": [8, 4, 16, 8],
    },
}


@pytest.mark.parametrize("version", ["sam2", "sam2.1"])
@pytest.mark.parametrize("size", sorted(HF_VARIANTS))
def test_config_matches_official_yaml(version: str, size: str) -> None:
    from transformers import Sam2VideoConfig

    backbone = {"model_type": "sam2_hiera_det_model", **HF_VARIANTS[size]}
    dims = backbone.get("embed_dim_per_stage", [96, 192, 384, 768])
    flag = version == "sam2.1"
    hf = Sam2VideoConfig(
        vision_config={
            "model_type": "sam2_vision_model",
            "backbone_config": backbone,
            "backbone_channel_list": dims[::-1],
        },
        enable_occlusion_spatial_embedding=flag,
        enable_temporal_pos_encoding_for_object_pointers=flag,
    ).to_dict()
    expected = apply_overrides(official_model_dict(f"{version}-hiera-{size}"), image_postprocess_overrides())
    assert _effective(hf_config_to_official_dict(hf)) == _effective(expected)


def test_small_presets_agree() -> None:
    expected = apply_overrides(official_model_dict("sam2.1-hiera-tiny", **SMALL), image_postprocess_overrides())
    assert _effective(hf_config_to_official_dict(hf_config().to_dict())) == _effective(expected)


def test_image_only_config_takes_sam21_defaults() -> None:
    converted = hf_config_to_official_dict(hf_config(video=False).to_dict())
    assert converted["no_obj_embed_spatial"] and converted["use_signed_tpos_enc_to_obj_ptrs"]
    assert converted["memory_attention"]["layer"]["self_attention"]["feat_sizes"] == [16, 16]  # 256 px / 16
    assert converted["num_maskmem"] == 7 and converted["image_size"] == 256


# --------------------------------------------------------------------------------- errors


def test_unknown_key_raises(converted: dict[str, Any]) -> None:
    state = dict(converted["state"], **{"vision_encoder.backbone.extra_thing.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="extra_thing"):
        hf_to_official_state_dict(state, converted["config"])


def test_mismatched_positional_copies_raise(converted: dict[str, Any]) -> None:
    state = dict(converted["state"])
    state["prompt_encoder.shared_embedding.positional_embedding"] = (
        state["shared_image_embedding.positional_embedding"] + 1
    )
    with pytest.raises(CheckpointError, match="differ"):
        hf_to_official_state_dict(state, converted["config"])


def test_non_sam2_configs_raise(converted: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        hf_config_to_official_dict({"model_type": "sam", "vision_config": {}})
    with pytest.raises(ConfigError):
        hf_to_official_state_dict(converted["state"], {"model_type": "bert"})
    bad = copy.deepcopy(converted["config"])
    bad["vision_config"]["backbone_config"]["mlp_ratio"] = 3.0
    with pytest.raises(ConfigError, match="mlp_ratio"):
        hf_config_to_official_dict(bad)
    bad = copy.deepcopy(converted["config"])
    bad["vision_config"]["backbone_config"]["embed_dim_per_stage"] = [16, 32, 48, 128]
    with pytest.raises(ConfigError, match="geometric"):
        hf_config_to_official_dict(bad)
    bad = copy.deepcopy(converted["config"])
    bad["prompt_encoder_config"]["image_size"] = 512  # vision/backbone still say 256
    with pytest.raises(ConfigError, match="image size"):
        hf_config_to_official_dict(bad)


@pytest.mark.parametrize("sam2_1", [True, False])
def test_masklet_loads_save_pretrained_and_matches_transformers(tmp_path: Any, sam2_1: bool) -> None:
    """load_model on a transformers save_pretrained folder reproduces transformers' outputs."""
    import masklet

    hf = build_hf_model(seed=8, sam2_1=sam2_1)
    save_hf_checkpoint(hf, tmp_path)
    model = masklet.load_model(tmp_path)  # folder with model.safetensors + config.json
    assert model.config.no_obj_embed_spatial == sam2_1
    also = masklet.load_model(tmp_path / "model.safetensors")
    assert also.config == model.config
    x = _image(2)
    prompt = {"point_coords": torch.tensor([[[100.0, 120.0], [30.0, 200.0]]]), "point_labels": torch.tensor([[1, 0]])}
    ref = hf_image_outputs(hf, x, **prompt)
    with torch.inference_mode():
        levels = model.image_embeddings(model.encode_image(x))
        masks, iou, obj = model.decode_masks(
            levels[-1], levels[:-1], (prompt["point_coords"], prompt["point_labels"].int()), None, True
        )
    torch.testing.assert_close(levels[-1], ref["image_embed"], atol=ATOL, rtol=0)
    torch.testing.assert_close(masks, ref["low_res_masks"], atol=ATOL, rtol=0)
    torch.testing.assert_close(iou, ref["iou_scores"], atol=ATOL, rtol=0)
    torch.testing.assert_close(obj, ref["object_score_logits"], atol=ATOL, rtol=0)
    assert 0.02 < float((masks > 0).float().mean()) < 0.98
