"""masklet.transforms against the official sam2 transforms (fast unit parity; the mutation gate's
selection for transforms.py, issue 15).

Non-square images everywhere, so a swapped width/height or x/y cannot pass.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from masklet.transforms import (
    PIXEL_MEAN,
    PIXEL_STD,
    preprocess,
    preprocess_frame,
    threshold_masks,
    to_model_coords,
    upscale_masks,
)

CPU = torch.device("cpu")


def image(h: int = 37, w: int = 53, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_preprocess_matches_official_sam2_transforms():
    transforms = pytest.importorskip("sam2.utils.transforms")
    img = image()
    for size in (32, 64):  # down- and up-sampling (antialias matters when shrinking)
        official = transforms.SAM2Transforms(resolution=size, mask_threshold=0.0)(img)[None]
        ours = preprocess(img, size, CPU, torch.float32)
        assert ours.shape == (1, 3, size, size) and ours.dtype == torch.float32
        torch.testing.assert_close(ours, official, rtol=0, atol=1e-5)
    half = preprocess(img, 32, CPU, torch.bfloat16)
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), preprocess(img, 32, CPU, torch.float32), rtol=0, atol=3e-2)


def test_preprocess_frame_matches_official_video_loader(tmp_path):
    misc = pytest.importorskip("sam2.utils.misc")
    img = image(45, 31, seed=1)
    path = tmp_path / "frame.png"  # lossless: the loader reads the very pixels
    Image.fromarray(img).save(path)
    loaded, h, w = misc._load_img_as_tensor(str(path), 64)
    assert (h, w) == img.shape[:2]
    mean = torch.tensor(PIXEL_MEAN).view(3, 1, 1)
    std = torch.tensor(PIXEL_STD).view(3, 1, 1)
    official = ((loaded.float() - mean) / std)[None]
    ours = preprocess_frame(img, 64, CPU, torch.float32)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, official, rtol=0, atol=1e-5)
    assert preprocess_frame(img, 64, CPU, torch.bfloat16).dtype == torch.bfloat16


def test_imagenet_statistics():
    assert PIXEL_MEAN == (0.485, 0.456, 0.406)
    assert PIXEL_STD == (0.229, 0.224, 0.225)
    grey = np.full((8, 8, 3), 255, dtype=np.uint8)
    x = preprocess(grey, 8, CPU, torch.float32)
    expected = torch.tensor([(1 - m) / s for m, s in zip(PIXEL_MEAN, PIXEL_STD)])
    torch.testing.assert_close(x[0, :, 0, 0], expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("normalize", [True, False])
def test_model_coords_match_official(normalize):
    transforms = pytest.importorskip("sam2.utils.transforms")
    official = transforms.SAM2Transforms(resolution=256, mask_threshold=0.0)
    orig_hw = (300, 500)  # H, W
    coords = torch.tensor([[[10.0, 20.0], [499.0, 0.0], [250.0, 299.0]]])
    if not normalize:
        coords = coords / torch.tensor([500.0, 300.0])
    expected = official.transform_coords(coords, normalize=normalize, orig_hw=orig_hw)
    ours = to_model_coords(coords, orig_hw, 256, normalize_coords=normalize)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)
    boxes = torch.tensor([[10.0, 20.0, 400.0, 280.0]])
    if not normalize:
        boxes = boxes / torch.tensor([500.0, 300.0, 500.0, 300.0])
    expected = official.transform_boxes(boxes, normalize=normalize, orig_hw=orig_hw)
    torch.testing.assert_close(
        to_model_coords(boxes.reshape(-1, 2, 2), orig_hw, 256, normalize), expected, rtol=0, atol=1e-5
    )


def test_model_coords_default_normalises_by_width_and_height():
    ours = to_model_coords(torch.tensor([[50.0, 30.0]]), (60, 100), 10)
    torch.testing.assert_close(ours, torch.tensor([[5.0, 5.0]]))


def test_upscale_masks_is_bilinear_to_the_original_size_in_float32():
    low = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    out = upscale_masks(low, (40, 24))
    assert out.shape == (2, 3, 40, 24) and out.dtype == torch.float32
    expected = F.interpolate(low.float(), size=(40, 24), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_upscale_masks_matches_the_official_postprocess():
    transforms = pytest.importorskip("sam2.utils.transforms")
    low = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 4
    for hw in ((37, 53), (12, 9)):  # up in both axes, and down in both (non-square: x/y cannot swap)
        official = transforms.SAM2Transforms(resolution=64, mask_threshold=0.0).postprocess_masks(low, hw)
        ours = upscale_masks(low, hw)
        assert ours.shape == (2, 3, *hw)
        torch.testing.assert_close(ours, official, rtol=0, atol=0)


def test_upscale_masks_to_the_model_side_keeps_the_dtype_when_asked():
    low = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    square = upscale_masks(low, 32, dtype=None)
    assert square.shape == (1, 2, 32, 32)
    assert square.dtype == torch.bfloat16
    expected = F.interpolate(low, size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(square, expected, rtol=0, atol=0)
    by_shape = upscale_masks(low, torch.zeros(5, 7, 11).shape[-2:])  # a torch.Size, as training passes
    assert by_shape.shape == (1, 2, 7, 11)
    assert by_shape.dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("threshold", [0.0, 0.1, -2.5, 1e-45, 1e39, -1e39])
def test_threshold_masks_are_the_torch_comparison(dtype, threshold):
    """numpy's comparison (CPU float32 / float64) gives PyTorch's pixels, at the threshold and its
    neighbours in the logits' dtype included (0.1 is not a float32: both compare with float32(0.1))."""
    g = torch.Generator().manual_seed(4)
    logits = (torch.randn(2, 3, 9, 13, generator=g) * 3).to(dtype)
    t = torch.tensor(threshold, dtype=dtype)
    near = (
        torch.stack([t, torch.nextafter(t, t + 1), torch.nextafter(t, t - 1)]) if dtype != torch.bfloat16 else t[None]
    )
    flat = logits.view(-1)
    flat[: near.numel()] = near
    flat[-3:] = torch.tensor([float("nan"), float("inf"), -float("inf")], dtype=dtype)
    expected = (logits > threshold).numpy()
    ours = threshold_masks(logits, threshold)
    assert isinstance(ours, np.ndarray) and ours.dtype == np.bool_ and ours.shape == (2, 3, 9, 13)
    np.testing.assert_array_equal(ours, expected)
    if abs(threshold) < 1e30:  # (+-1e39: beyond float32, where PyTorch's cast makes it +-inf)
        assert 0 < ours.sum() < ours.size


def test_amg_exact_statistics_evaluator_follows_the_shared_upscaling():
    from masklet.amg.upsample import Upsampler

    low = torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(3)) * 8
    up = Upsampler((16, 16), (45, 61), CPU)
    expected = upscale_masks(low[:, None], (45, 61))[:, 0]
    torch.testing.assert_close(up.evaluate(low), expected, rtol=0, atol=1e-5)  # a last-bit difference at most


@pytest.mark.parametrize("fn", [preprocess, preprocess_frame])
def test_model_input_lands_on_the_requested_device(fn):
    """The ``device`` argument is honoured (the meta device stands in for a GPU on CPU-only CI)."""
    x = fn(image(10, 12), 8, torch.device("meta"), torch.float32)
    assert x.device.type == "meta" and x.shape == (1, 3, 8, 8)
