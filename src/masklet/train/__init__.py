"""Training and fine-tuning (optional extra: ``pip install masklet[train]``)."""

from .data import CocoInstances, DavisFolders, ImageSample, VideoSample, synthetic_clips, synthetic_images
from .losses import LossWeights, sam_loss
from .trainer import TrainConfig, Trainer

__all__ = [
    "CocoInstances",
    "DavisFolders",
    "ImageSample",
    "LossWeights",
    "TrainConfig",
    "Trainer",
    "VideoSample",
    "sam_loss",
    "synthetic_clips",
    "synthetic_images",
]
