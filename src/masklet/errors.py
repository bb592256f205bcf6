"""masklet's exception types.

Every error masklet raises on purpose derives from :class:`MaskletError`. Errors caused by bad
input from the caller also derive from :class:`ValueError`, so generic handlers keep working.
"""

from __future__ import annotations


class MaskletError(Exception):
    """Base class of every error raised by masklet."""


class InvalidInputError(MaskletError, ValueError):
    """An argument has the wrong type, shape, range or value."""


class ImageDecodeError(InvalidInputError):
    """An image (path, bytes or array) could not be decoded into pixels."""


class PredictorStateError(MaskletError, RuntimeError):
    """A predictor method was called in the wrong order (e.g. predict before set_image)."""


class CheckpointError(MaskletError):
    """A checkpoint file is missing, truncated, foreign, or does not match the model config."""


class ModelNotFoundError(CheckpointError, FileNotFoundError):
    """A model name or path could not be resolved to weights (no file, no network, no cache)."""


class ConfigError(MaskletError, ValueError):
    """A model configuration is inconsistent or unknown."""


class VideoDecodeError(InvalidInputError):
    """A video file or frame folder could not be read, or holds no frames."""
