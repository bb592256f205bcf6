"""Automatic mask generation: segment everything in an image from a grid of point prompts.

The package along its seams: :mod:`.grids` (point grids, crop boxes), :mod:`.decoder` (the mask
decoder for a grid of prompts), :mod:`.upsample` (low-resolution logits to image size, exact
counts and boxes), :mod:`.data` (the per-mask container) and :mod:`.generator` (:class:`MaskGenerator`).
"""

from .data import MaskData
from .decoder import DecoderState, GridDecoder
from .generator import MaskGenerator
from .grids import build_all_layer_point_grids, build_point_grid, generate_crop_boxes
from .options import OUTPUT_MODES
from .upsample import Upsampler

__all__ = [
    "OUTPUT_MODES",
    "DecoderState",
    "GridDecoder",
    "MaskData",
    "MaskGenerator",
    "Upsampler",
    "build_all_layer_point_grids",
    "build_point_grid",
    "generate_crop_boxes",
]
