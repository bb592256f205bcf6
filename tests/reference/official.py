"""Oracles built from the official ``sam2`` package (Meta's reference implementation), for tests.

Typical use::

    model_dict = official_model_dict("sam2.1-hiera-tiny", **SMALL)
    model = build_official_model(model_dict, seed=0)          # SAM2Base, randomised, eval, fp32
    predictor = official_image_predictor(model)               # SAM2ImagePredictor, CPU-ready

Importing ``sam2`` needs the torchvision stand-in: importing this module binds it (:mod:`.standins`).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from .standins import bind_torchvision_standin

bind_torchvision_standin()  # before anything imports sam2

__all__ = [
    "SMALL",
    "VARIANTS",
    "apply_overrides",
    "build_official_model",
    "connected_components",
    "feat_sizes",
    "float32_memory_on_cpu",
    "image_postprocess_overrides",
    "install_connected_components",
    "official_image_outputs",
    "official_image_predictor",
    "official_model_dict",
    "patched_connected_components",
    "randomize_parameters_",
    "save_official_checkpoint",
    "video_postprocess_overrides",
]

VARIANTS: dict[str, str] = {
    "sam2-hiera-tiny": "configs/sam2/sam2_hiera_t.yaml",
    "sam2-hiera-small": "configs/sam2/sam2_hiera_s.yaml",
    "sam2-hiera-base-plus": "configs/sam2/sam2_hiera_b+.yaml",
    "sam2-hiera-large": "configs/sam2/sam2_hiera_l.yaml",
    "sam2.1-hiera-tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1-hiera-small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1-hiera-base-plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1-hiera-large": "configs/sam2.1/sam2.1_hiera_l.yaml",
}

# A small, self-consistent architecture for fast CPU tests (apply to any variant):
# 256 px input -> Hiera 64/32/16/8 px grids with dims 16/32/64/128; SAM heads keep d_model 256
# (the official decoder ties mlp_dim=2048, 8 heads and iou_head_hidden_dim=256 to it).
SMALL: dict[str, Any] = {
    "image_size": 256,
    "image_encoder.trunk.embed_dim": 16,
    "image_encoder.trunk.num_heads": 1,
    "image_encoder.trunk.stages": [1, 2, 3, 1],
    "image_encoder.trunk.global_att_blocks": [4, 5],  # never a stage's first (q-pool) block
    "image_encoder.trunk.window_spec": [8, 4, 4, 4],
    "image_encoder.trunk.window_pos_embed_bkg_spatial_size": [4, 4],
    "image_encoder.neck.backbone_channel_list": [128, 64, 32, 16],
    "memory_attention.num_layers": 2,
    "memory_attention.layer.dim_feedforward": 256,
    "memory_attention.layer.self_attention.feat_sizes": [16, 16],
    "memory_attention.layer.cross_attention.feat_sizes": [16, 16],
    "memory_encoder.out_dim": 64,
}


def image_postprocess_overrides() -> dict[str, Any]:
    """The overrides ``sam2.build_sam.build_sam2(apply_postprocessing=True)`` adds."""
    return {
        "sam_mask_decoder_extra_args.dynamic_multimask_via_stability": True,
        "sam_mask_decoder_extra_args.dynamic_multimask_stability_delta": 0.05,
        "sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh": 0.98,
    }


def video_postprocess_overrides() -> dict[str, Any]:
    """The overrides ``build_sam2_video_predictor(apply_postprocessing=True)`` adds (incl. target)."""
    return {
        "_target_": "sam2.sam2_video_predictor.SAM2VideoPredictor",
        **image_postprocess_overrides(),
        "binarize_mask_from_pts_for_mem_enc": True,
        "fill_hole_area": 8,
    }


def apply_overrides(model_dict: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Set dotted-path values (``"image_encoder.trunk.embed_dim"``) in place, creating dicts."""
    for path, value in overrides.items():
        node = model_dict
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = copy.deepcopy(value)
    return model_dict


def official_model_dict(variant: str, **overrides: Any) -> dict[str, Any]:
    """The plain nested dict under ``model:`` of the shipped yaml for ``variant``, with overrides."""
    import sam2
    from omegaconf import OmegaConf

    if variant not in VARIANTS:
        raise KeyError(f"unknown variant {variant!r}; expected one of {sorted(VARIANTS)}")
    cfg = OmegaConf.load(os.path.join(os.path.dirname(sam2.__file__), VARIANTS[variant]))
    model_dict = OmegaConf.to_container(cfg.model, resolve=True)
    assert isinstance(model_dict, dict)
    return apply_overrides(model_dict, overrides)


def feat_sizes(image_size: int) -> list[tuple[int, int]]:
    """Backbone feature-map sizes (stride 4, 8, 16) for a square ``image_size`` input."""
    return [(image_size // s, image_size // s) for s in (4, 8, 16)]


# ------------------------------------------------------------------------------ parameter init


_OBJ_SCORE_OUT = ("pred_obj_score_head.layers.2", "pred_obj_score_head.proj_out", "pred_obj_score_head")


def randomize_parameters_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Overwrite every float parameter and persistent buffer from ``seed``; nothing stays zero.

    Weights get std 1/sqrt(fan_in), norm weights 1 + 0.1 N(0,1), biases 0.1 N(0,1), embeddings
    0.5 N(0,1), the random-Fourier matrix N(0,1) and loose parameters (pos embeds, memory tokens,
    layer scales) 0.2 N(0,1). The object-score head's output bias is 2 + 0.1 N(0,1) so objects
    count as present (else video outputs are all NO_OBJ_SCORE). Works on official and
    transformers modules alike (same module order gives the same values).
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod_name, mod in module.named_modules():
            is_norm = isinstance(mod, nn.LayerNorm) or "Norm" in type(mod).__name__
            tensors = list(mod.named_parameters(recurse=False))
            tensors += [(n, b) for n, b in mod.named_buffers(recurse=False) if n not in mod._non_persistent_buffers_set]
            for name, t in tensors:
                if not t.is_floating_point():
                    continue
                noise = torch.randn(t.shape, generator=gen, dtype=torch.float32)
                if is_norm:
                    new = 1.0 + 0.1 * noise if name == "weight" else 0.1 * noise
                elif "gaussian_matrix" in name or "positional_embedding" in name:
                    new = noise
                elif isinstance(mod, nn.Embedding):
                    new = 0.5 * noise
                elif name == "weight" and t.dim() >= 2:
                    fan_in = t.shape[0] if isinstance(mod, nn.ConvTranspose2d) else t[0].numel()
                    new = noise / math.sqrt(fan_in)
                elif name == "bias" and mod_name.endswith(_OBJ_SCORE_OUT):
                    new = 2.0 + 0.1 * noise
                elif name == "bias":
                    new = 0.1 * noise
                else:
                    new = 0.2 * noise
                t.copy_(new.to(t.dtype))
    return module


# ------------------------------------------------------------------------------ model building


def build_official_model(
    model_dict: Mapping[str, Any],
    seed: int | None = 0,
    *,
    video: bool = False,
    apply_postprocessing: bool = True,
) -> nn.Module:
    """Instantiate the official SAM2Base (SAM2VideoPredictor if ``video``) in eval/CPU/fp32.

    Applies the same overrides as ``build_sam2`` / ``build_sam2_video_predictor`` and then
    re-randomises all weights from ``seed`` (``seed=None`` keeps the official init, e.g. before
    loading a checkpoint). ``model_dict`` is not modified.
    """
    from hydra.utils import instantiate

    cfg = copy.deepcopy(dict(model_dict))
    if apply_postprocessing:
        apply_overrides(cfg, video_postprocess_overrides() if video else image_postprocess_overrides())
    elif video:
        cfg["_target_"] = video_postprocess_overrides()["_target_"]
    model = instantiate(cfg, _recursive_=True)
    model = model.to(device="cpu", dtype=torch.float32).eval()
    if seed is not None:
        randomize_parameters_(model, seed)
    if video:
        float32_memory_on_cpu(model)
    return model


def float32_memory_on_cpu(model: nn.Module) -> None:
    """Let the official video predictor run in float32 on CPU.

    It stores memory features in bfloat16. ``torch.cat`` with the float32 object pointers
    promotes them back, but a memory made of spatial features only (an object whose one prompt
    lies ahead of the frame) reaches float32 layers as bfloat16 and crashes without CUDA
    autocast. Casting the memory up gives exactly what the promotion gives in every other case.
    """
    attention = model.memory_attention
    forward = attention.forward

    def float32_forward(curr, memory, curr_pos=None, memory_pos=None, num_obj_ptr_tokens=0):
        memory_pos = None if memory_pos is None else memory_pos.float()
        return forward(curr, memory.float(), curr_pos, memory_pos, num_obj_ptr_tokens)

    attention.forward = float32_forward


def save_official_checkpoint(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Write ``{"model": state_dict}`` like the official ``.pt`` files."""
    torch.save({"model": {k: v.detach().clone() for k, v in model.state_dict().items()}}, os.fspath(path))


# ------------------------------------------------------------------------------ connected components


def connected_components(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """OpenCV stand-in for the CUDA ``sam2._C`` kernel (8-connectivity).

    ``mask``: (N, 1, H, W) bool/uint8. Returns int32 ``labels`` (0 = background) and ``counts``
    (area of the pixel's component, 0 on background), both (N, 1, H, W) on ``mask.device``.
    """
    import cv2

    if mask.dim() != 4 or mask.shape[1] != 1:
        raise ValueError(f"expected (N, 1, H, W) masks, got {tuple(mask.shape)}")
    arr = (mask.detach().cpu().numpy()[:, 0] != 0).astype(np.uint8)
    labels = np.zeros(arr.shape, dtype=np.int32)
    counts = np.zeros(arr.shape, dtype=np.int32)
    for i, m in enumerate(arr):
        _, lab, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8, ltype=cv2.CV_32S)
        area = stats[:, cv2.CC_STAT_AREA].astype(np.int32)
        area[0] = 0  # OpenCV's label 0 is the background
        labels[i], counts[i] = lab, area[lab]
    return torch.from_numpy(labels)[:, None].to(mask.device), torch.from_numpy(counts)[:, None].to(mask.device)


OPENCV_MISSING = (
    "OpenCV (opencv-python-headless) is not installed: it stands in for the official CUDA "
    "connected-components op, without which the official post-processing does less work"
)


def require_opencv() -> None:
    """Skip the running test (or raise ImportError outside pytest) when OpenCV is missing, rather
    than let the official post-processing silently skip its hole filling."""
    try:
        import cv2  # noqa: F401
    except ImportError:
        if "PYTEST_CURRENT_TEST" in os.environ:
            import pytest

            pytest.skip(OPENCV_MISSING)
        raise ImportError(OPENCV_MISSING) from None


def install_connected_components() -> None:
    """Make ``sam2.utils.misc.get_connected_components`` use :func:`connected_components`.

    Every official caller (``SAM2Transforms.postprocess_masks``, ``fill_holes_in_mask_scores``)
    looks the name up in ``sam2.utils.misc`` at call time, so patching that module suffices.
    """
    require_opencv()
    from sam2.utils import misc

    misc.get_connected_components = connected_components


@contextlib.contextmanager
def patched_connected_components() -> Iterator[None]:
    """Context manager form of :func:`install_connected_components` that restores the original."""
    require_opencv()
    from sam2.utils import misc

    original = misc.get_connected_components
    misc.get_connected_components = connected_components
    try:
        yield
    finally:
        misc.get_connected_components = original


# ------------------------------------------------------------------------------ predictors / outputs


def official_image_predictor(model: nn.Module, **kwargs: Any) -> Any:
    """``SAM2ImagePredictor`` for ``model`` with feature sizes fixed for its ``image_size``.

    Installs the OpenCV connected components (process-wide) so ``max_hole_area`` and
    ``max_sprinkle_area`` work on CPU instead of being skipped with a warning.
    """
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    install_connected_components()
    predictor = SAM2ImagePredictor(model, **kwargs)
    predictor._bb_feat_sizes = feat_sizes(int(model.image_size))  # official code hard-codes 1024 px
    return predictor


@torch.no_grad()
def official_image_outputs(
    model: nn.Module,
    pixel_values: torch.Tensor,
    point_coords: torch.Tensor | None = None,
    point_labels: torch.Tensor | None = None,
    boxes: torch.Tensor | None = None,
    mask_input: torch.Tensor | None = None,
    multimask_output: bool = True,
) -> dict[str, Any]:
    """Run the official image path (as ``SAM2ImagePredictor`` does) on one normalised image.

    ``pixel_values`` (1, 3, S, S); prompts in model-input pixels: ``point_coords`` (B, N, 2),
    ``point_labels`` (B, N), ``boxes`` (B, 4) XYXY, ``mask_input`` (B, 1, S/4, S/4) logits.
    Returns ``backbone_fpn`` / ``vision_pos_enc`` (neck outputs, high to low resolution, before the
    decoder's conv_s0/conv_s1), ``image_embed`` (+ no_mem_embed), ``high_res_feats``,
    ``low_res_masks`` (unclamped), ``iou_scores``, ``object_score_logits``.
    """
    encoded = model.image_encoder(pixel_values)
    fpn = [f.clone() for f in encoded["backbone_fpn"]]
    pos = list(encoded["vision_pos_enc"])
    backbone_out = model.forward_image(pixel_values)
    _, vision_feats, _, sizes = model._prepare_backbone_features(backbone_out)
    if model.directly_add_no_mem_embed:
        vision_feats[-1] = vision_feats[-1] + model.no_mem_embed
    feats = [f.permute(1, 2, 0).reshape(1, -1, *hw) for f, hw in zip(vision_feats, sizes)]

    points = None
    if point_coords is not None:
        points = (point_coords.float(), point_labels.int())
    if boxes is not None:
        corners = boxes.float().reshape(-1, 2, 2)
        corner_labels = torch.tensor([[2, 3]], dtype=torch.int).repeat(corners.shape[0], 1)
        if points is None:
            points = (corners, corner_labels)
        else:
            points = (torch.cat([corners, points[0]], 1), torch.cat([corner_labels, points[1]], 1))
    sparse, dense = model.sam_prompt_encoder(points=points, boxes=None, masks=mask_input)
    low_res, iou, _, obj = model.sam_mask_decoder(
        image_embeddings=feats[-1],
        image_pe=model.sam_prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask_output,
        repeat_image=points is not None and points[0].shape[0] > 1,
        high_res_features=feats[:-1],
    )
    return {
        "backbone_fpn": fpn,
        "vision_pos_enc": pos,
        "image_embed": feats[-1],
        "high_res_feats": feats[:-1],
        "low_res_masks": low_res,
        "iou_scores": iou,
        "object_score_logits": obj,
    }
