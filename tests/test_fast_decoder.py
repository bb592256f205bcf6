"""Cached-click decoder (masklet.fast_decoder) against the official SAM2ImagePredictor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from masklet import ImagePredictor
from masklet.errors import InvalidInputError
from reference.image_compare import assert_close
from reference.official import SMALL, official_image_predictor
from reference.pairs import make_pair, test_image

CLICKS = [
    dict(point_coords=[[80.5, 60.0]], point_labels=[1]),
    dict(point_coords=[[80.5, 60.0], [250.0, 150.0]], point_labels=[1, 0]),
    dict(box=[40, 30, 200, 170], point_coords=[[120.0, 90.0]], point_labels=[1]),
]


@pytest.fixture(scope="module")
def pair():
    official, ours = make_pair("sam2.1-hiera-tiny", seed=5, **SMALL)
    return official_image_predictor(official), ours


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_repeated_clicks_on_two_images_match_official(pair):
    """The image-side cache is reused across clicks and rebuilt for a new image."""
    ref, model = pair
    ours = ImagePredictor(model)
    for seed in (1, 2):
        image = test_image(200, 330, seed=seed)
        ref.set_image(image)
        ours.set_image(image)
        for click in CLICKS:
            for multimask in (True, False):
                expected = ref.predict(multimask_output=multimask, return_logits=True, **click)
                got = ours.predict(multimask_output=multimask, return_logits=True, **click)
                for name, a, b in zip(("logits", "iou", "low-res logits"), got, expected):
                    assert_close(a, b, name)
        assert len(ours._decoder_caches) == 1  # the cached path ran


def test_several_objects_with_dynamic_single_mask(pair):
    """(B, N, 2) prompts with multimask_output=False go through the stability selection."""
    ref, model = pair
    ours = ImagePredictor(model)
    image = test_image(180, 240, seed=3)
    ref.set_image(image)
    ours.set_image(image)
    prompts = dict(
        point_coords=np.array([[[30.0, 40.0]], [[120.0, 90.0]], [[200.0, 150.0]]]), point_labels=np.ones((3, 1))
    )
    expected = ref.predict(multimask_output=False, return_logits=True, **prompts)
    got = ours.predict(multimask_output=False, return_logits=True, **prompts)
    assert got[0].shape == (3, 1, 180, 240)
    for name, a, b in zip(("logits", "iou", "low-res logits"), got, expected):
        assert_close(a, b, name)


def test_bfloat16_decoder_masks_close_to_official(pair):
    ref, model = pair
    ours = ImagePredictor(model, decoder_dtype=torch.bfloat16)
    image = test_image(200, 330, seed=1)
    ref.set_image(image)
    ours.set_image(image)
    for click in CLICKS:
        expected, ref_iou, _ = ref.predict(**click)
        expected = expected > 0.5  # the official returns 0. / 1. floats
        masks, ious, _ = ours.predict(**click)
        assert masks.dtype == bool
        assert ious.dtype == np.float32
        for a, b in zip(masks, expected):
            assert b.sum() > 0
            assert iou(a, b) >= 0.97
        assert np.abs(ious - ref_iou).max() < 0.02


def test_bfloat16_decoder_keeps_masks_within_099_of_float32(pair):
    """The image side runs in bfloat16, the prompt tokens, softmaxes and heads in float32: every
    mask within IoU 0.99 of the float32 decoder's (all-bfloat16 decoding gave 0.986 here)."""
    _, model = pair
    f32, b16 = ImagePredictor(model), ImagePredictor(model, decoder_dtype=torch.bfloat16)
    ious = []
    for seed in (1, 2, 3):
        image = test_image(200, 330, seed=seed)
        f32.set_image(image)
        b16.set_image(image)
        for click in CLICKS:
            expected, got = f32.predict(**click)[0], b16.predict(**click)[0]
            ious += [iou(a, b) for a, b in zip(expected, got)]
        (cache,) = b16._decoder_caches.values()
        assert cache.keys.dtype == cache.feat_s0.dtype == torch.bfloat16  # the image side really is bfloat16
    assert len(ious) == 27 and min(ious) >= 0.99, ious


def test_bad_decoder_dtype(pair):
    with pytest.raises(InvalidInputError, match="decoder_dtype"):
        ImagePredictor(pair[1], decoder_dtype=torch.int8)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
def test_untile_masks_places_every_tiled_pixel(dtype):
    """Tiled (y, x, ky, kx, ky2, kx2) logits land at (4y + 2ky + ky2, 4x + 2kx + kx2), whichever
    width the pairs move at (and for a strided input, which takes the plain permute)."""
    from masklet.fast_decoder import untile_masks

    b, m, h, w = 2, 3, 5, 7
    y, x, ky, kx, ky2, kx2 = np.meshgrid(*(np.arange(n) for n in (h, w, 2, 2, 2, 2)), indexing="ij")
    rows, cols = (4 * y + 2 * ky + ky2).ravel(), (4 * x + 2 * kx + kx2).ravel()
    tiled = torch.randn(b, m, 16 * h * w).to(dtype)
    expected = torch.zeros(b, m, 4 * h, 4 * w, dtype=dtype)
    expected[:, :, rows, cols] = tiled
    assert torch.equal(untile_masks(tiled, h, w), expected)
    strided = torch.randn(b, 16 * h * w, m).to(dtype).transpose(1, 2)
    expected[:, :, rows, cols] = strided
    assert torch.equal(untile_masks(strided, h, w), expected)


def test_click_softmaxes_are_flushed_of_subnormals(monkeypatch):
    """With trained weights (masklet-nano) the first block's attention weights are partly subnormal
    (3-10 %); the click decoder flushes them before its products (slow on Intel CPUs otherwise)."""
    import masklet
    import masklet.fast_decoder as fast_decoder
    from masklet.synthetic import make_scene

    tiny = torch.finfo(torch.float32).tiny
    before: list[int] = []
    after: list[int] = []
    real = fast_decoder.flush_subnormals_

    def observed(weights):
        before.append(int(((weights > 0) & (weights < tiny)).sum()))
        out = real(weights)
        after.append(int(((out > 0) & (out < tiny)).sum()))
        return out

    monkeypatch.setattr(fast_decoder, "flush_subnormals_", observed)
    predictor = ImagePredictor(masklet.load_model("masklet-nano"))
    predictor.set_image(make_scene(1, size=(240, 320)).image)
    with torch.inference_mode():
        predictor.predict(point_coords=np.array([[160.0, 120.0]]), point_labels=np.array([1]))
    assert len(before) >= 3 and sum(before) > 0
    assert sum(after) == 0
