"""Sanity checks of the test oracles: torchvision stand-in, OpenCV connected components, official sam2."""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from reference.torchvision import ops as tv_ops
from reference.torchvision import transforms as tv_transforms

# --------------------------------------------------------------------------- torchvision stand-in


@pytest.mark.parametrize("in_hw,out_hw", [((100, 80), (64, 64)), ((37, 53), (96, 128)), ((64, 64), (64, 64))])
def test_resize_is_antialiased_bilinear(in_hw: tuple[int, int], out_hw: tuple[int, int]) -> None:
    x = torch.rand(3, *in_hw, generator=torch.Generator().manual_seed(0))
    expected = F.interpolate(x[None], size=out_hw, mode="bilinear", align_corners=False, antialias=True)[0]
    got = tv_transforms.Resize(out_hw)(x)
    torch.testing.assert_close(got, expected, atol=0, rtol=0)
    if in_hw[0] > out_hw[0]:  # antialias matters when shrinking
        plain = F.interpolate(x[None], size=out_hw, mode="bilinear", align_corners=False, antialias=False)[0]
        assert (got - plain).abs().max() > 1e-3


def test_resize_and_normalize_are_scriptable_like_sam2() -> None:
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    scripted = torch.jit.script(torch.nn.Sequential(tv_transforms.Resize((32, 32)), tv_transforms.Normalize(mean, std)))
    x = torch.rand(3, 50, 70)
    resized = F.interpolate(x[None], size=(32, 32), mode="bilinear", align_corners=False, antialias=True)[0]
    expected = (resized - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    torch.testing.assert_close(scripted(x), expected)


def test_resize_int_size_sets_shorter_edge_and_rounds_uint8() -> None:
    x = (torch.rand(3, 40, 80) * 255).to(torch.uint8)
    y = tv_transforms.Resize(20)(x)
    assert y.shape == (3, 20, 40) and y.dtype == torch.uint8
    ref = F.interpolate(x[None].float(), size=(20, 40), mode="bilinear", align_corners=False, antialias=True)[0]
    torch.testing.assert_close(y, ref.round().clamp(0, 255).to(torch.uint8))


def test_to_tensor_semantics() -> None:
    to_tensor = tv_transforms.ToTensor()
    arr = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    t = to_tensor(arr)
    assert t.shape == (3, 2, 3) and t.dtype == torch.float32
    torch.testing.assert_close(t, torch.from_numpy(arr).permute(2, 0, 1).float() / 255)
    torch.testing.assert_close(to_tensor(Image.fromarray(arr)), t)
    floats = np.full((4, 5, 3), 7.5, dtype=np.float32)
    assert to_tensor(floats).max() == 7.5  # float arrays are not divided
    assert to_tensor(np.zeros((4, 5), np.uint8)).shape == (1, 4, 5)


def _greedy_nms_reference(boxes: np.ndarray, scores: np.ndarray, thr: float) -> list[int]:
    """Plain-Python greedy NMS, written independently of the stand-in."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep: list[int] = []
    for i in order:
        ok = True
        for j in keep:
            ix = max(0.0, min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0]))
            iy = max(0.0, min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1]))
            inter = ix * iy
            if inter / (area[i] + area[j] - inter) > thr:
                ok = False
                break
        if ok:
            keep.append(i)
    return keep


def _random_boxes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 50
    wh = torch.rand(n, 2, generator=g) * 30 + 1
    return torch.cat([xy, xy + wh], 1), torch.rand(n, generator=g)


@pytest.mark.parametrize("thr", [0.3, 0.7])
def test_nms_matches_brute_force(thr: float) -> None:
    boxes, scores = _random_boxes(120, seed=1)
    keep = tv_ops.nms(boxes, scores, thr)
    assert keep.dtype == torch.int64
    assert keep.tolist() == _greedy_nms_reference(boxes.numpy(), scores.numpy(), thr)
    assert 5 < keep.numel() < 120  # something suppressed, something kept
    assert torch.all(scores[keep][:-1] >= scores[keep][1:])


def test_batched_nms_is_per_class() -> None:
    boxes, scores = _random_boxes(90, seed=2)
    idxs = torch.arange(90) % 3
    keep = tv_ops.batched_nms(boxes, scores, idxs, 0.5)
    expected: list[int] = []
    for c in range(3):
        members = torch.where(idxs == c)[0]
        expected += members[_greedy_nms_reference(boxes[members].numpy(), scores[members].numpy(), 0.5)].tolist()
    assert sorted(keep.tolist()) == sorted(expected)
    assert torch.all(scores[keep][:-1] >= scores[keep][1:])
    same = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10]])
    assert tv_ops.batched_nms(same, torch.tensor([0.9, 0.8]), torch.tensor([0, 1]), 0.5).tolist() == [0, 1]
    assert tv_ops.batched_nms(same, torch.tensor([0.9, 0.8]), torch.tensor([0, 0]), 0.5).tolist() == [0]
    assert tv_ops.batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5).numel() == 0
    torch.testing.assert_close(tv_ops.box_area(same), torch.tensor([100.0, 100.0]))


# --------------------------------------------------------------------------- connected components


def test_connected_components_match_scipy() -> None:
    from scipy import ndimage

    from reference.official import connected_components

    g = torch.Generator().manual_seed(0)
    masks = torch.rand(3, 1, 40, 50, generator=g) > 0.55
    masks[2] = False  # an all-background mask
    labels, counts = connected_components(masks)
    assert labels.shape == counts.shape == masks.shape and labels.dtype == counts.dtype == torch.int32
    for m, lab, cnt in zip(masks[:, 0].numpy(), labels[:, 0].numpy(), counts[:, 0].numpy()):
        ref, n = ndimage.label(m, structure=np.ones((3, 3)))
        assert ((lab > 0) == m).all() and (cnt[~m] == 0).all()
        for k in range(1, n + 1):  # same partition, and counts are component areas
            region = ref == k
            assert len(np.unique(lab[region])) == 1 and (lab == lab[region][0]).sum() == region.sum()
            assert (cnt[region] == region.sum()).all()
    assert labels[2].max() == 0 and counts[0].max() > 1


def test_official_postprocessing_uses_patched_components(official_connected_components: None) -> None:
    from sam2.utils.misc import fill_holes_in_mask_scores
    from sam2.utils.transforms import SAM2Transforms

    logits = torch.full((1, 1, 32, 32), -5.0)
    logits[..., 4:20, 4:20] = 5.0
    logits[..., 10, 10] = -5.0  # a 1-pixel hole
    logits[..., 28, 28] = 5.0  # a 1-pixel sprinkle
    transforms = SAM2Transforms(resolution=128, mask_threshold=0.0, max_hole_area=4, max_sprinkle_area=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the official code warns (and skips) when the kernel fails
        out = transforms.postprocess_masks(logits, (32, 32))
        filled = fill_holes_in_mask_scores(logits, 4)
    assert out[0, 0, 10, 10] > 0 and out[0, 0, 28, 28] < 0 and out[0, 0, 12, 12] > 0
    assert filled[0, 0, 10, 10] > 0 and filled[0, 0, 28, 28] > 0


# --------------------------------------------------------------------------- official model


@pytest.fixture(scope="module")
def small_model() -> Any:
    from reference.official import SMALL, build_official_model, official_model_dict

    return build_official_model(official_model_dict("sam2.1-hiera-tiny", **SMALL), seed=0)


def test_model_dicts_for_all_variants() -> None:
    from reference.official import VARIANTS, official_model_dict

    for variant in VARIANTS:
        d = official_model_dict(variant, **{"image_size": 512, "sam_mask_decoder_extra_args.foo": 1})
        assert d["_target_"] == "sam2.modeling.sam2_base.SAM2Base" and d["image_size"] == 512
        assert d["sam_mask_decoder_extra_args"] == {"foo": 1}
        assert d.get("no_obj_embed_spatial", False) == variant.startswith("sam2.1")
    large = official_model_dict("sam2.1-hiera-large")
    assert large["image_encoder"]["trunk"]["stages"] == [2, 6, 36, 4]


def test_randomised_parameters_are_deterministic_and_nonzero(small_model: Any) -> None:
    from reference.official import SMALL, build_official_model, official_model_dict

    for name, p in small_model.state_dict().items():
        assert torch.isfinite(p).all() and (p != 0).any(), name
    assert small_model.image_encoder.trunk.pos_embed.abs().min() > 0
    again = build_official_model(official_model_dict("sam2.1-hiera-tiny", **SMALL), seed=0).state_dict()
    other = build_official_model(official_model_dict("sam2.1-hiera-tiny", **SMALL), seed=1).state_dict()
    key = "image_encoder.trunk.blocks.0.attn.qkv.weight"
    assert all(torch.equal(v, again[k]) for k, v in small_model.state_dict().items())
    assert not torch.equal(other[key], again[key])
    assert small_model.sam_mask_decoder.dynamic_multimask_via_stability  # build_sam2's overrides
    assert not small_model.training


def test_checkpoint_roundtrip(small_model: Any, tmp_path: Any) -> None:
    from sam2.build_sam import _load_checkpoint

    from reference.official import SMALL, build_official_model, official_model_dict, save_official_checkpoint

    path = tmp_path / "small.pt"
    save_official_checkpoint(small_model, path)
    fresh = build_official_model(official_model_dict("sam2.1-hiera-tiny", **SMALL), seed=None)
    _load_checkpoint(fresh, str(path))  # the official loader (strict about missing/unexpected keys)
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in small_model.state_dict().items())


def test_official_image_predictor_end_to_end(small_model: Any) -> None:
    from reference.official import official_image_predictor

    predictor = official_image_predictor(small_model, max_hole_area=8, max_sprinkle_area=8)
    assert predictor._bb_feat_sizes == [(64, 64), (32, 32), (16, 16)]
    img = np.random.default_rng(0).integers(0, 255, (180, 240, 3), dtype=np.uint8)
    predictor.set_image(img)
    masks, iou, low = predictor.predict(point_coords=np.array([[50, 60]]), point_labels=np.array([1]))
    assert masks.shape == (3, 180, 240) and iou.shape == (3,) and low.shape == (3, 64, 64)
    assert 0.02 < masks.mean() < 0.98 and np.all((iou > 0) & (iou < 1)) and iou.std() > 0
    assert np.isfinite(low).all() and low.std() > 0.3 and not np.allclose(low[0], low[1])
    masks, iou, _ = predictor.predict(
        point_coords=np.array([[50, 60], [200, 20]]),
        point_labels=np.array([1, 0]),
        box=np.array([10, 10, 120, 150]),
        mask_input=low[:1],
        multimask_output=False,
    )
    assert masks.shape == (1, 180, 240) and iou.shape == (1,)
    masks, iou, _ = predictor.predict(box=np.array([[10, 10, 120, 150], [30, 40, 230, 170]]))
    assert masks.shape == (2, 3, 180, 240) and not np.array_equal(masks[0], masks[1])
    predictor.set_image_batch([img, img[:100]])
    masks_b, _, _ = predictor.predict_batch(
        point_coords_batch=[np.array([[50, 60]]), np.array([[10, 20]])],
        point_labels_batch=[np.array([1]), np.array([1])],
    )
    assert masks_b[0].shape == (3, 180, 240) and masks_b[1].shape == (3, 100, 240)


def test_official_video_predictor_step(tmp_path: Any) -> None:
    from reference.official import SMALL, build_official_model, install_connected_components, official_model_dict

    install_connected_components()  # fill_hole_area=8 is active in the video build
    # Random weights give a per-seed foreground bias; seed 2 tracks without saturating.
    video = build_official_model(official_model_dict("sam2.1-hiera-tiny", **SMALL), seed=2, video=True)
    assert type(video).__name__ == "SAM2VideoPredictor" and video.fill_hole_area == 8
    img = np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    for i in range(3):
        Image.fromarray(np.roll(img, 4 * i, axis=1)).save(os.path.join(tmp_path, f"{i:05d}.jpg"))
    state = video.init_state(video_path=str(tmp_path))
    points, labels = np.array([[50, 60]], np.float32), np.array([1], np.int32)
    _, obj_ids, first = video.add_new_points_or_box(state, frame_idx=0, obj_id=1, points=points, labels=labels)
    assert obj_ids == [1] and first.shape == (1, 1, 120, 160)
    frames = {idx: logits for idx, _, logits in video.propagate_in_video(state)}
    assert sorted(frames) == [0, 1, 2]
    for logits in frames.values():  # objects present (not NO_OBJ_SCORE everywhere) and not saturated
        assert torch.isfinite(logits).all() and logits.std() > 0.3 and 0.02 < (logits > 0).float().mean() < 0.98
    assert not torch.allclose(frames[1], frames[2])
