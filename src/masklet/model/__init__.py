"""Pure nn.Modules of SAM2: no files, no images, no numpy."""

from .config import (
    VARIANTS,
    DecoderConfig,
    HieraConfig,
    MemoryAttentionConfig,
    MemoryEncoderConfig,
    NeckConfig,
    Sam2Config,
    variant_config,
)
from .sam2 import ImageFeatures, MemoryBank, MemoryEntry, Sam2Model, SamOutput, TrackStepOutput

__all__ = [
    "VARIANTS",
    "DecoderConfig",
    "HieraConfig",
    "ImageFeatures",
    "MemoryAttentionConfig",
    "MemoryBank",
    "MemoryEntry",
    "MemoryEncoderConfig",
    "NeckConfig",
    "Sam2Config",
    "Sam2Model",
    "SamOutput",
    "TrackStepOutput",
    "variant_config",
]
