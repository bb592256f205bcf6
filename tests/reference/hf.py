"""Oracles built from Hugging Face ``transformers`` SAM2 (``Sam2VideoModel`` / ``Sam2Model``), for tests.

Hub checkpoints (e.g. ``facebook/sam2.1-hiera-tiny``) are ``Sam2VideoModel`` (``model_type``
``sam2_video``) holding all weights; ``Sam2Model`` is the image-only subset. So
:func:`build_hf_model` builds the video model by default and :func:`hf_image_model` gives the
image model that shares its weights, for running images.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .official import apply_overrides, randomize_parameters_

__all__ = [
    "HF_SMALL",
    "build_hf_model",
    "hf_config",
    "hf_image_model",
    "hf_image_outputs",
    "save_hf_checkpoint",
]

# transformers config kwargs matching ``official.SMALL`` (SAM2.1 flags unless ``sam2_1=False``).
HF_SMALL: dict[str, Any] = {
    "image_size": 256,
    "vision_config": {
        "model_type": "sam2_vision_model",
        "backbone_config": {
            "model_type": "sam2_hiera_det_model",
            "hidden_size": 16,
            "num_attention_heads": 1,
            "embed_dim_per_stage": [16, 32, 64, 128],
            "num_attention_heads_per_stage": [1, 2, 4, 8],
            "blocks_per_stage": [1, 2, 3, 1],
            "global_attention_blocks": [4, 5],
            "window_size_per_stage": [8, 4, 4, 4],
            "window_positional_embedding_background_size": [4, 4],
            "image_size": [256, 256],
        },
        "backbone_channel_list": [128, 64, 32, 16],
        "backbone_feature_sizes": [[64, 64], [32, 32], [16, 16]],
    },
    "prompt_encoder_config": {"image_size": 256},
    "memory_attention_num_layers": 2,
    "memory_attention_feed_forward_hidden_size": 256,
    "memory_attention_rope_feat_sizes": [16, 16],
}

_PE_KEYS = ("shared_image_embedding.positional_embedding", "prompt_encoder.shared_embedding.positional_embedding")


def hf_config(overrides: Mapping[str, Any] | None = None, *, video: bool = True, sam2_1: bool = True) -> Any:
    """A transformers ``Sam2VideoConfig`` (or image-only ``Sam2Config``) from ``HF_SMALL``.

    ``overrides`` are dotted paths into the kwargs, e.g. ``{"vision_config.fpn_hidden_size": 256}``.
    ``sam2_1=False`` turns off the SAM2.1-only temporal-pointer and occlusion embeddings.
    """
    from transformers import Sam2Config, Sam2VideoConfig

    kwargs = copy.deepcopy(HF_SMALL)
    if not sam2_1:
        kwargs.update(enable_occlusion_spatial_embedding=False, enable_temporal_pos_encoding_for_object_pointers=False)
    apply_overrides(kwargs, overrides or {})
    if video:
        return Sam2VideoConfig(**kwargs)
    keep = ("vision_config", "prompt_encoder_config", "mask_decoder_config")
    return Sam2Config(**{k: v for k, v in kwargs.items() if k in keep})


def build_hf_model(
    config_overrides: Mapping[str, Any] | None = None, seed: int = 0, *, video: bool = True, sam2_1: bool = True
) -> nn.Module:
    """Randomised (all parameters, from ``seed``) eval-mode ``Sam2VideoModel``/``Sam2Model``.

    The two copies of the prompt positional matrix are kept equal, as in converted checkpoints.
    """
    from transformers import Sam2Model, Sam2VideoModel

    config = hf_config(config_overrides, video=video, sam2_1=sam2_1)
    model = (Sam2VideoModel if video else Sam2Model)(config).eval()
    randomize_parameters_(model, seed)
    with torch.no_grad():
        model.prompt_encoder.shared_embedding.positional_embedding.copy_(
            model.shared_image_embedding.positional_embedding
        )
    return model


def hf_image_model(model: nn.Module) -> nn.Module:
    """The image-only ``Sam2Model`` with ``model``'s weights (``model`` itself if already one)."""
    from transformers import Sam2Config, Sam2Model

    if isinstance(model, Sam2Model):
        return model
    cfg = model.config.to_dict()
    sub = {
        k: {n: v for n, v in cfg[k].items() if n != "model_type"}
        for k in ("prompt_encoder_config", "mask_decoder_config")
    }
    image = Sam2Model(Sam2Config(vision_config=cfg["vision_config"], **sub)).eval()
    missing, _ = image.load_state_dict(model.state_dict(), strict=False)
    if missing:
        raise RuntimeError(f"image model lacks weights for {missing}")
    return image


def save_hf_checkpoint(
    model: nn.Module, directory: str | os.PathLike[str]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``save_pretrained`` into ``directory``; return the ``model.safetensors`` tensors and ``config.json``."""
    from safetensors.torch import load_file

    model.save_pretrained(os.fspath(directory))
    state = load_file(os.path.join(os.fspath(directory), "model.safetensors"))
    with open(os.path.join(os.fspath(directory), "config.json"), encoding="utf-8") as f:
        return state, json.load(f)


@torch.no_grad()
def hf_image_outputs(
    model: nn.Module,
    pixel_values: torch.Tensor,
    point_coords: torch.Tensor | None = None,
    point_labels: torch.Tensor | None = None,
    boxes: torch.Tensor | None = None,
    mask_input: torch.Tensor | None = None,
    multimask_output: bool = True,
) -> dict[str, Any]:
    """Run transformers SAM2 on one image; same arguments and keys as ``official_image_outputs``.

    Prompts use the official layout (``point_coords`` (B, N, 2), ``boxes`` (B, 4)) and become HF's
    (1, B, ...) point batch. HF takes one ``mask_input`` per image, so B must be 1 with a mask.
    """
    model = hf_image_model(model)
    vision = model.vision_encoder(pixel_values)
    out = model(
        pixel_values=pixel_values,
        input_points=None if point_coords is None else point_coords.float()[None],
        input_labels=None if point_labels is None else point_labels.int()[None],
        input_boxes=None if boxes is None else boxes.float()[None],
        input_masks=mask_input,
        multimask_output=multimask_output,
    )
    return {
        "backbone_fpn": list(vision.fpn_hidden_states),
        "vision_pos_enc": list(vision.fpn_position_encoding),
        "image_embed": out.image_embeddings[-1],
        "high_res_feats": list(out.image_embeddings[:-1]),
        "low_res_masks": out.pred_masks[0],
        "iou_scores": out.iou_scores[0],
        "object_score_logits": out.object_score_logits[0],
    }
