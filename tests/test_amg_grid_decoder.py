"""The grid decoder (masklet.amg.GridDecoder) against Sam2Model's own mask decoding.

Unit-level and fast: the same image features and point prompts go through the model's
``decode_masks`` (its MaskDecoder, all mask tokens) and through the grid decoder, with and
without a mask prompt; IoU predictions and low-resolution logits must agree within float rounding.
"""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch

from masklet import load_model
from masklet.amg import GridDecoder
from masklet.model import Sam2Model
from masklet.transforms import preprocess
from reference.pairs import test_image


@functools.cache
def _nano() -> Sam2Model:
    return load_model("masklet-nano")


@functools.cache
def _variant(name: str) -> Sam2Model:
    """masklet-nano itself, or its architecture with seeded random weights and other decoder flags."""
    if name == "nano":
        return _nano()
    flags = {
        # no high-resolution features: the plain (not channels-last) upscaling path
        "low-res": {"use_high_res_features_in_sam": False},
        # no object-score token: the IoU token is the first output token
        "no-obj-score": {"pred_obj_scores": False, "pred_obj_scores_mlp": False, "fixed_no_obj_ptr": False},
    }[name]
    config = dataclasses.replace(_nano().config, **flags)
    torch.manual_seed(0)
    model = Sam2Model(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def _levels(model: Sam2Model) -> list[torch.Tensor]:
    pixels = preprocess(test_image(96, 128, seed=3), model.image_size, model.device, model.encoder_dtype)
    return model.image_embeddings(model.encode_image(pixels))


def _prompts(model: Sam2Model, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    coords = torch.rand(n, 1, 2, generator=gen) * model.image_size
    return coords, torch.ones(n, 1, dtype=torch.int32)


def _close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    scale = max(1.0, float(ref.abs().max()))
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max() <= 2e-4 * scale


@pytest.mark.parametrize("variant", ["nano", "low-res", "no-obj-score"])
@torch.inference_mode()
def test_grid_decoder_matches_the_model_decoder(variant):
    model = _variant(variant)
    levels = _levels(model)
    coords, labels = _prompts(model, 12)
    decoder = GridDecoder(model, levels)
    iou, state = decoder.decode(coords, labels, None)
    # the model's decoder gives masks 1..3 with multimask_output, mask 0 without (no dynamic choice)
    ref_multi, ref_iou_multi, _ = model.decode_masks(levels[-1], levels[:-1] or None, (coords, labels), None, True)
    _close(iou[:, 1:], ref_iou_multi)
    _close(decoder.masks(state, [1, 2, 3]), ref_multi)
    dec = model.sam_mask_decoder
    dynamic, dec.dynamic_multimask_via_stability = dec.dynamic_multimask_via_stability, False
    try:
        ref_one, ref_iou_one, _ = model.decode_masks(levels[-1], levels[:-1] or None, (coords, labels), None, False)
    finally:
        dec.dynamic_multimask_via_stability = dynamic
    _close(iou[:, :1], ref_iou_one)
    _close(decoder.masks(state, [0]), ref_one)
    # a subset of prompts and tokens, in another order: the state indexes per prompt
    _close(decoder.masks(state[[5, 2]], [2, 0]), torch.stack([ref_multi[[5, 2], 1], ref_one[[5, 2], 0]], 1))


@pytest.mark.parametrize("variant", ["nano", "low-res"])
@torch.inference_mode()
def test_grid_decoder_with_a_mask_prompt_matches_the_model_decoder(variant):
    model = _variant(variant)
    levels = _levels(model)
    coords, labels = _prompts(model, 6)
    h, w = levels[-1].shape[-2:]
    mask_input = torch.randn(6, 1, 4 * h, 4 * w, generator=torch.Generator().manual_seed(2)) * 4
    decoder = GridDecoder(model, levels)
    iou, state = decoder.decode(coords, labels, mask_input)
    ref, ref_iou, _ = model.decode_masks(levels[-1], levels[:-1] or None, (coords, labels), mask_input, True)
    _close(iou[:, 1:], ref_iou)
    _close(decoder.masks(state, [1, 2, 3]), ref)


@torch.inference_mode()
def test_select_stable_is_the_single_mask_choice_of_the_model():
    model = _nano()
    levels = _levels(model)
    coords, labels = _prompts(model, 8)
    dec = model.sam_mask_decoder
    assert dec.dynamic_multimask_via_stability  # nano chooses its single mask by stability
    decoder = GridDecoder(model, levels)
    iou, state = decoder.decode(coords, labels, None)
    chosen, chosen_iou = dec.select_stable(decoder.masks(state, [0, 1, 2, 3]), iou)
    ref, ref_iou, _ = model.decode_masks(levels[-1], levels[:-1] or None, (coords, labels), None, False)
    _close(chosen_iou, ref_iou)
    _close(chosen, ref)
