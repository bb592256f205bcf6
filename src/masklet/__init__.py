"""masklet: a compact engine for Segment Anything 2 (SAM2 / SAM2.1).

Public API: :func:`load_model`, :class:`ImagePredictor`, :class:`MaskGenerator`,
:class:`VideoPredictor` and :class:`StreamTracker` (more in :mod:`masklet.video`), the model and
config types, and the error types. Everything else is internal.
"""

from .amg import MaskGenerator
from .checkpoints import HUB_CHECKPOINTS, load_model, save_checkpoint
from .errors import (
    CheckpointError,
    ConfigError,
    ImageDecodeError,
    InvalidInputError,
    MaskletError,
    ModelNotFoundError,
    PredictorStateError,
    VideoDecodeError,
)
from .exemplar import ExemplarPredictor, ExemplarResult
from .image import ImageEmbeddings, ImagePredictor
from .model import Sam2Config, Sam2Model, variant_config
from .video import StreamTracker, VideoPredictor

__version__ = "0.1.0"

__all__ = [
    "HUB_CHECKPOINTS",
    "CheckpointError",
    "ConfigError",
    "ExemplarPredictor",
    "ExemplarResult",
    "ImageDecodeError",
    "ImageEmbeddings",
    "ImagePredictor",
    "InvalidInputError",
    "MaskGenerator",
    "MaskletError",
    "ModelNotFoundError",
    "PredictorStateError",
    "Sam2Config",
    "Sam2Model",
    "StreamTracker",
    "VideoDecodeError",
    "VideoPredictor",
    "load_model",
    "save_checkpoint",
    "variant_config",
]
