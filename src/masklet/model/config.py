"""Typed configuration of a SAM2 model and the eight official variants.

Field defaults mirror the constructor defaults of the official implementation, so that an
official-style config (Hydra yaml, which omits defaulted fields) parses to the same model. The
named variants (:data:`VARIANTS`) spell out every value of the released configs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ..errors import ConfigError


@dataclass(frozen=True)
class HieraConfig:
    """The Hiera image trunk: a hierarchy of windowed / global attention stages."""

    embed_dim: int = 96
    num_heads: int = 1
    stages: tuple[int, ...] = (2, 3, 16, 3)
    global_att_blocks: tuple[int, ...] = (12, 16, 20)
    window_spec: tuple[int, ...] = (8, 4, 14, 7)
    window_pos_embed_bkg_spatial_size: tuple[int, int] = (14, 14)
    q_pool: int = 3
    q_stride: tuple[int, int] = (2, 2)
    dim_mul: float = 2.0
    head_mul: float = 2.0
    mlp_ratio: float = 4.0
    patch_kernel_size: int = 7
    patch_stride: int = 4
    patch_padding: int = 3

    @property
    def channel_list(self) -> tuple[int, ...]:
        """Channels of each stage output, deepest first (the order the FPN neck expects)."""
        dims, dim = [], self.embed_dim
        for i in range(len(self.stages)):
            if i > 0:
                dim = int(dim * self.dim_mul)
            dims.append(dim)
        return tuple(reversed(dims))


@dataclass(frozen=True)
class NeckConfig:
    """The FPN neck that projects trunk stages to ``d_model`` channels and adds top-down paths."""

    d_model: int = 256
    fpn_top_down_levels: tuple[int, ...] | None = None
    fpn_interp_model: str = "bilinear"
    fuse_type: str = "sum"
    scalp: int = 0
    kernel_size: int = 1
    stride: int = 1
    padding: int = 0
    position_temperature: float = 10000.0


@dataclass(frozen=True)
class MemoryAttentionConfig:
    """Memory attention: self-attention on the current frame, RoPE cross-attention to memories."""

    num_layers: int = 4
    dim_feedforward: int = 2048
    num_heads: int = 1
    dropout: float = 0.1
    activation: str = "relu"
    rope_theta: float = 10000.0
    pos_enc_at_input: bool = True
    pos_enc_at_attn: bool = False
    pos_enc_at_cross_attn_keys: bool = True
    pos_enc_at_cross_attn_queries: bool = False
    rope_k_repeat: bool = True


@dataclass(frozen=True)
class MemoryEncoderConfig:
    """Memory encoder: downsample the mask, fuse with pixel features, project to ``out_dim``."""

    out_dim: int = 64
    mask_kernel_size: int = 3
    mask_stride: int = 2
    mask_padding: int = 1
    mask_total_stride: int = 16
    fuser_num_layers: int = 2
    fuser_kernel_size: int = 7
    fuser_padding: int = 3
    fuser_layer_scale_init_value: float = 1e-6
    fuser_use_dwconv: bool = True


@dataclass(frozen=True)
class DecoderConfig:
    """SAM prompt encoder and mask decoder sizes (fixed in the official code) and its options."""

    mask_in_chans: int = 16
    transformer_depth: int = 2
    transformer_mlp_dim: int = 2048
    transformer_num_heads: int = 8
    attention_downsample_rate: int = 2
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    dynamic_multimask_via_stability: bool = False
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98


@dataclass(frozen=True)
class Sam2Config:
    """Everything needed to build a SAM2 / SAM2.1 model."""

    trunk: HieraConfig = field(default_factory=HieraConfig)
    neck: NeckConfig = field(default_factory=NeckConfig)
    memory_attention: MemoryAttentionConfig = field(default_factory=MemoryAttentionConfig)
    memory_encoder: MemoryEncoderConfig = field(default_factory=MemoryEncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    image_size: int = 512
    backbone_stride: int = 16
    num_maskmem: int = 7
    sigmoid_scale_for_mem_enc: float = 1.0
    sigmoid_bias_for_mem_enc: float = 0.0
    binarize_mask_from_pts_for_mem_enc: bool = False
    use_mask_input_as_output_without_sam: bool = False
    max_cond_frames_in_attn: int = -1
    directly_add_no_mem_embed: bool = False
    use_high_res_features_in_sam: bool = False
    multimask_output_in_sam: bool = False
    multimask_min_pt_num: int = 1
    multimask_max_pt_num: int = 1
    multimask_output_for_tracking: bool = False
    use_multimask_token_for_obj_ptr: bool = False
    iou_prediction_use_sigmoid: bool = False
    memory_temporal_stride_for_eval: int = 1
    non_overlap_masks_for_mem_enc: bool = False
    use_obj_ptrs_in_encoder: bool = False
    max_obj_ptrs_in_encoder: int = 16
    add_tpos_enc_to_obj_ptrs: bool = True
    proj_tpos_enc_in_obj_ptrs: bool = False
    use_signed_tpos_enc_to_obj_ptrs: bool = False
    only_obj_ptrs_in_the_past_for_eval: bool = False
    pred_obj_scores: bool = False
    pred_obj_scores_mlp: bool = False
    fixed_no_obj_ptr: bool = False
    soft_no_obj_ptr: bool = False
    use_mlp_for_obj_ptr_proj: bool = False
    no_obj_embed_spatial: bool = False

    @property
    def hidden_dim(self) -> int:
        return self.neck.d_model

    @property
    def mem_dim(self) -> int:
        return self.memory_encoder.out_dim

    @property
    def embedding_size(self) -> int:
        """Side of the lowest-resolution feature map the SAM heads work on."""
        return self.image_size // self.backbone_stride

    def validate(self) -> Sam2Config:
        """Raise :class:`ConfigError` when the parts of the config do not fit together."""
        t, n = self.trunk, self.neck
        problems = []
        if len(t.stages) != len(t.window_spec):
            problems.append(f"trunk.stages {t.stages} and window_spec {t.window_spec} differ in length")
        if not 0 <= t.q_pool <= len(t.stages) - 1:
            problems.append(f"trunk.q_pool={t.q_pool} must be in [0, {len(t.stages) - 1}]")
        depth = sum(t.stages)
        if any(not 0 <= b < depth for b in t.global_att_blocks):
            problems.append(f"trunk.global_att_blocks {t.global_att_blocks} outside 0..{depth - 1}")
        if n.scalp >= len(t.stages):
            problems.append(f"neck.scalp={n.scalp} removes every feature level")
        n_levels = len(t.stages) - n.scalp
        if self.use_high_res_features_in_sam and n_levels < 3:
            problems.append("use_high_res_features_in_sam needs 3 feature levels after the scalp")
        stride = t.patch_stride * t.q_stride[0] ** min(t.q_pool, n_levels - 1)
        if self.backbone_stride != stride:
            problems.append(f"backbone_stride={self.backbone_stride} but the trunk gives stride {stride}")
        if self.image_size % (t.patch_stride * t.q_stride[0] ** t.q_pool) != 0:
            problems.append(f"image_size={self.image_size} is not a multiple of the trunk stride")
        if (self.image_size // t.patch_stride) % t.window_spec[0] != 0:
            problems.append(
                f"image_size={self.image_size} / {t.patch_stride} is not a multiple of window_spec[0]={t.window_spec[0]}"
            )
        if self.hidden_dim % 8 != 0:
            problems.append(f"neck.d_model={self.hidden_dim} must be a multiple of 8")
        if self.use_obj_ptrs_in_encoder and self.hidden_dim % self.mem_dim != 0:
            problems.append(f"neck.d_model={self.hidden_dim} must be a multiple of memory out_dim={self.mem_dim}")
        if self.proj_tpos_enc_in_obj_ptrs and not self.add_tpos_enc_to_obj_ptrs:
            problems.append("proj_tpos_enc_in_obj_ptrs needs add_tpos_enc_to_obj_ptrs")
        if self.fixed_no_obj_ptr and not (self.pred_obj_scores and self.use_obj_ptrs_in_encoder):
            problems.append("fixed_no_obj_ptr needs pred_obj_scores and use_obj_ptrs_in_encoder")
        if self.memory_attention.activation not in ("relu", "gelu"):
            problems.append(f"memory_attention.activation={self.memory_attention.activation!r}: use 'relu' or 'gelu'")
        if n.fpn_interp_model not in ("nearest", "bilinear", "bicubic"):
            problems.append(f"neck.fpn_interp_model={n.fpn_interp_model!r}: use nearest, bilinear or bicubic")
        if n.fuse_type not in ("sum", "avg"):
            problems.append(f"neck.fuse_type={n.fuse_type!r}: use 'sum' or 'avg'")
        if problems:
            raise ConfigError("inconsistent SAM2 config: " + "; ".join(problems))
        return self

    def to_dict(self) -> dict[str, Any]:
        """A plain nested dict (JSON-serialisable) of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sam2Config:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        return _build_dataclass(cls, data, "config")


def _build_dataclass(cls: type, data: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"unknown {where} keys {unknown}; accepted: {sorted(known)}")
    kwargs = {}
    for name, value in data.items():
        sub = _SUBCONFIGS.get(name) if cls is Sam2Config else None
        if sub is not None:
            kwargs[name] = _build_dataclass(sub, value, f"{where}.{name}")
        elif isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


_SUBCONFIGS = {
    "trunk": HieraConfig,
    "neck": NeckConfig,
    "memory_attention": MemoryAttentionConfig,
    "memory_encoder": MemoryEncoderConfig,
    "decoder": DecoderConfig,
}


#: Flags every released SAM2 and SAM2.1 checkpoint sets (the official yaml files and the Hugging
#: Face conversion both take them from here).
RELEASE_FLAGS: dict[str, Any] = {
    "use_mask_input_as_output_without_sam": True,
    "directly_add_no_mem_embed": True,
    "use_high_res_features_in_sam": True,
    "iou_prediction_use_sigmoid": True,
    "use_obj_ptrs_in_encoder": True,
    "only_obj_ptrs_in_the_past_for_eval": True,
    "pred_obj_scores": True,
    "pred_obj_scores_mlp": True,
    "fixed_no_obj_ptr": True,
    "use_multimask_token_for_obj_ptr": True,
    "use_mlp_for_obj_ptr_proj": True,
}


def temporal_pointer_flags(on: bool) -> dict[str, bool]:
    """The three object-pointer temporal-encoding flags, which SAM2.1 turns on together."""
    return {
        name: on
        for name in ("add_tpos_enc_to_obj_ptrs", "proj_tpos_enc_in_obj_ptrs", "use_signed_tpos_enc_to_obj_ptrs")
    }


def _released(trunk: HieraConfig, version: str) -> Sam2Config:
    """The released config of one size, as the official yaml spells it."""
    sam21 = version == "sam2.1"
    return Sam2Config(
        trunk=trunk,
        neck=NeckConfig(d_model=256, fpn_top_down_levels=(2, 3), fpn_interp_model="nearest", scalp=1),
        memory_attention=MemoryAttentionConfig(),
        memory_encoder=MemoryEncoderConfig(),
        decoder=DecoderConfig(dynamic_multimask_via_stability=True),
        image_size=1024,
        num_maskmem=7,
        sigmoid_scale_for_mem_enc=20.0,
        sigmoid_bias_for_mem_enc=-10.0,
        no_obj_embed_spatial=sam21,
        multimask_output_in_sam=True,
        multimask_output_for_tracking=True,
        multimask_min_pt_num=0,
        multimask_max_pt_num=1,
        **RELEASE_FLAGS,
        **temporal_pointer_flags(sam21),
    )


_TRUNKS = {
    "tiny": HieraConfig(
        embed_dim=96,
        num_heads=1,
        stages=(1, 2, 7, 2),
        global_att_blocks=(5, 7, 9),
        window_pos_embed_bkg_spatial_size=(7, 7),
    ),
    "small": HieraConfig(
        embed_dim=96,
        num_heads=1,
        stages=(1, 2, 11, 2),
        global_att_blocks=(7, 10, 13),
        window_pos_embed_bkg_spatial_size=(7, 7),
    ),
    "base-plus": HieraConfig(embed_dim=112, num_heads=2),
    "large": HieraConfig(
        embed_dim=144,
        num_heads=2,
        stages=(2, 6, 36, 4),
        global_att_blocks=(23, 33, 43),
        window_pos_embed_bkg_spatial_size=(7, 7),
        window_spec=(8, 4, 16, 8),
    ),
}

#: The eight official variants, by their hub names without the ``facebook/`` prefix.
VARIANTS: dict[str, Sam2Config] = {
    f"{version}-hiera-{size}": _released(trunk, version)
    for version in ("sam2", "sam2.1")
    for size, trunk in _TRUNKS.items()
}


#: masklet-nano: the SAM2.1 architecture at 256 px with a narrow trunk and heads (about 4M
#: parameters); every module is present, so the official ``sam2`` package builds it too.
NANO = replace(
    _released(
        HieraConfig(
            embed_dim=32,
            num_heads=1,
            stages=(1, 2, 3, 1),
            global_att_blocks=(4, 5),
            window_spec=(8, 4, 4, 4),
            window_pos_embed_bkg_spatial_size=(4, 4),
        ),
        "sam2.1",
    ),
    image_size=256,
    neck=NeckConfig(d_model=128, fpn_top_down_levels=(2, 3), fpn_interp_model="nearest", scalp=1),
    memory_attention=MemoryAttentionConfig(num_layers=2, dim_feedforward=512),
)

#: Named configs beyond the official ones.
EXTRA_VARIANTS: dict[str, Sam2Config] = {"masklet-nano": NANO}


def variant_config(name: str, **overrides: Any) -> Sam2Config:
    """The config of a named variant (e.g. ``sam2.1-hiera-tiny``, ``masklet-nano``), optionally changed."""
    key = name.removeprefix("facebook/")
    known = {**VARIANTS, **EXTRA_VARIANTS}
    if key not in known:
        raise ConfigError(f"unknown variant {name!r}; known: {sorted(known)}")
    return replace(known[key], **overrides).validate()
