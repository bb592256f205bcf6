"""masklet vs the official sam2 package: same seeded random weights, same images and prompts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from masklet import ImagePredictor
from masklet.model import image_encoder as image_encoder_module
from masklet.transforms import preprocess
from reference.image_compare import assert_close, assert_masks_agree
from reference.official import SMALL, official_image_outputs, official_image_predictor
from reference.pairs import make_pair, test_image


def assert_decoded_close(levels, masks, iou, obj, ref: dict) -> None:
    """Model-level outputs against ``official_image_outputs``."""
    assert_close(levels[-1], ref["image_embed"], "image embedding")
    for a, b in zip(levels[:-1], ref["high_res_feats"]):
        assert_close(a, b, "high-res features")
    assert_close(masks, ref["low_res_masks"], "mask logits")
    assert_close(iou, ref["iou_scores"], "iou")
    assert_close(obj, ref["object_score_logits"], "object score logits")


def compare_predict(ours: ImagePredictor, ref, **prompts) -> tuple:
    """Compare logits, IoU and low-res logits, then the thresholded masks."""
    ref_logits, ref_iou, ref_low = ref.predict(return_logits=True, **prompts)
    our_logits, our_iou, our_low = ours.predict(return_logits=True, **prompts)
    assert_close(our_logits, ref_logits, "mask logits")
    assert_close(our_iou, ref_iou, "iou")
    assert_close(our_low, ref_low, "low-res logits")
    our_masks, _, _ = ours.predict(**prompts)
    assert our_masks.dtype == bool
    assert_masks_agree(our_masks, ref_logits)
    # the masks must carry content, or the comparison proves little
    assert 0 < our_masks.mean() < 1
    return our_logits, our_iou, our_low


@pytest.fixture(scope="module", params=["sam2.1-hiera-tiny", "sam2-hiera-tiny"])
def predictors(request):
    official, ours = make_pair(request.param, seed=3, **SMALL)
    ref, mine = official_image_predictor(official), ImagePredictor(ours)
    image = test_image(200, 330, seed=1)  # non-square
    ref.set_image(image)
    mine.set_image(image)
    return mine, ref


def test_points_multimask(predictors):
    mine, ref = predictors
    logits, iou, low = compare_predict(mine, ref, point_coords=[[80.5, 60.0], [250.0, 150.0]], point_labels=[1, 0])
    assert logits.shape == (3, 200, 330) and iou.shape == (3,) and low.shape == (3, 64, 64)


def test_points_single_mask(predictors):
    mine, ref = predictors
    logits, _, _ = compare_predict(mine, ref, point_coords=[[80.5, 60.0]], point_labels=[1], multimask_output=False)
    assert logits.shape == (1, 200, 330)


def test_box_only(predictors):
    mine, ref = predictors
    compare_predict(mine, ref, box=[30.0, 20.0, 210.5, 170.0], multimask_output=False)


def test_box_and_points(predictors):
    mine, ref = predictors
    compare_predict(mine, ref, box=np.array([30.0, 20.0, 210.5, 170.0]), point_coords=[[100.0, 90.0]], point_labels=[0])


def test_mask_input_refinement(predictors):
    mine, ref = predictors
    _, iou, low = mine.predict(point_coords=[[80.5, 60.0]], point_labels=[1])
    best = low[int(np.argmax(iou))][None]  # (1, 64, 64) logits from the previous round
    compare_predict(
        mine,
        ref,
        point_coords=[[80.5, 60.0], [150.0, 40.0]],
        point_labels=[1, 1],
        mask_input=best,
        multimask_output=False,
    )


def test_normalized_coordinates(predictors):
    mine, ref = predictors
    compare_predict(mine, ref, point_coords=[[0.3, 0.4]], point_labels=[1], normalize_coords=False)


def test_several_objects_in_one_call(predictors):
    mine, ref = predictors
    boxes = np.array([[10, 10, 120, 90], [100, 50, 300, 190], [0, 0, 329, 199]], dtype=np.float32)
    logits, iou, low = compare_predict(mine, ref, box=boxes)
    assert logits.shape == (3, 3, 200, 330) and iou.shape == (3, 3) and low.shape == (3, 3, 64, 64)
    points = np.array([[[40.0, 40.0]], [[200.0, 120.0]], [[300.0, 20.0]]])
    compare_predict(mine, ref, point_coords=points, point_labels=np.ones((3, 1)), multimask_output=False)


def test_hole_and_sprinkle_cleanup_matches_official():
    official, ours = make_pair("sam2.1-hiera-tiny", seed=5, **SMALL)
    kwargs = dict(max_hole_area=40.0, max_sprinkle_area=40.0)
    ref, mine = official_image_predictor(official, **kwargs), ImagePredictor(ours, **kwargs)
    plain = ImagePredictor(ours)
    image = test_image(180, 240, seed=4)
    for p in (ref, mine, plain):
        p.set_image(image)
    prompts = dict(point_coords=[[120.0, 90.0]], point_labels=[1])
    compare_predict(mine, ref, **prompts)
    # the clean-up really ran: it changed some pixels relative to no clean-up
    cleaned, _, _ = mine.predict(**prompts)
    raw, _, _ = plain.predict(**prompts)
    assert (cleaned != raw).any()


def test_batch_of_two_images_with_different_object_counts():
    official, ours = make_pair("sam2.1-hiera-tiny", seed=7, **SMALL)
    ref, mine = official_image_predictor(official), ImagePredictor(ours)
    images = [test_image(200, 330, seed=1), test_image(256, 180, seed=2)]
    ref.set_image_batch(images)
    mine.set_images(images)
    boxes = [
        np.array([[20, 20, 150, 150]], dtype=np.float32),
        np.array([[10, 10, 100, 200], [50, 60, 170, 250]], dtype=np.float32),
    ]
    points = [np.array([[[60.0, 70.0]]]), np.array([[[40.0, 100.0]], [[120.0, 200.0]]])]
    labels = [np.ones((1, 1)), np.ones((2, 1))]
    kwargs = dict(point_coords_batch=points, point_labels_batch=labels, box_batch=boxes, return_logits=True)
    ref_out = ref.predict_batch(**kwargs)
    our_out = mine.predict_batch(**kwargs)
    for i in range(2):
        for name, a, b in zip(("logits", "iou", "low-res"), our_out, ref_out):
            assert_close(a[i], b[i], f"image {i} {name}")
    assert our_out[0][0].shape == (3, 200, 330) and our_out[0][1].shape == (2, 3, 256, 180)
    # the batch goes through the encoder at once and equals one-by-one encoding
    single = ImagePredictor(ours)
    single.set_image(images[1])
    alone = single.predict(point_coords=points[1], point_labels=labels[1], box=boxes[1], return_logits=True)
    assert_close(our_out[0][1], alone[0], "batched vs single image", atol=1e-4)


def test_image_features_positions_and_object_scores():
    official, ours = make_pair("sam2-hiera-tiny", seed=11, **SMALL)
    image = test_image(256, 256, seed=9)
    pixels = preprocess(image, 256, torch.device("cpu"), torch.float32)
    coords = torch.tensor([[[60.0, 80.0], [200.0, 30.0]], [[128.0, 128.0], [10.0, 250.0]]])
    labels = torch.tensor([[1, 0], [1, 1]], dtype=torch.int32)
    ref = official_image_outputs(official, pixels, coords, labels, multimask_output=True)
    with torch.inference_mode():
        features, positions = ours.image_encoder(pixels)
        levels = ours.image_embeddings(ours.encode_image(pixels))
        masks, iou, obj = ours.decode_masks(levels[-1], levels[:-1], (coords, labels), None, True)
    for i, (a, b) in enumerate(zip(features, ref["backbone_fpn"])):
        assert_close(a, b, f"neck level {i}")
    for i, (a, b) in enumerate(zip(positions, ref["vision_pos_enc"])):
        assert_close(a, b, f"position level {i}")
    assert_decoded_close(levels, masks, iou, obj, ref)


@pytest.mark.parametrize("top_down", [None, {0, 1, 2, 3}])  # the config's [2, 3]; every level
def test_high_res_projections_fused_into_the_neck_equal_projecting_its_features(monkeypatch, top_down):
    """encode_image runs the decoder's conv_s0 / conv_s1 fused with the neck's finest 1x1 laterals
    (taken for levels without top-down fusion only); either way the levels equal projecting the
    neck's own features."""
    _, ours = make_pair("sam2.1-hiera-tiny", seed=5, **SMALL)
    if top_down is not None:
        monkeypatch.setattr(ours.image_encoder.neck, "top_down_levels", top_down)
    fused = []
    lateral_then = image_encoder_module._lateral_then
    monkeypatch.setattr(
        image_encoder_module, "_lateral_then", lambda conv, then, x: fused.append(then) or lateral_then(conv, then, x)
    )
    pixels = preprocess(test_image(256, 256, seed=4), 256, torch.device("cpu"), torch.float32)
    decoder = ours.sam_mask_decoder
    with torch.inference_mode():
        levels = ours.encode_image(pixels).levels
        features, _ = ours.image_encoder(pixels)
        expected = [decoder.conv_s0(features[0]), decoder.conv_s1(features[1]), features[2]]
    assert fused == ([decoder.conv_s1, decoder.conv_s0] if top_down is None else [])  # deepest first
    for a, b in zip(levels, expected, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_full_tiny_config_at_1024():
    """One check on the real architecture: full SAM2.1 tiny at 1024 px."""
    official, ours = make_pair("sam2.1-hiera-tiny", seed=0)
    image = test_image(480, 640, seed=0)
    pixels = preprocess(image, 1024, torch.device("cpu"), torch.float32)
    coords = torch.tensor([[[300.0, 400.0]]])
    labels = torch.tensor([[1]], dtype=torch.int32)
    boxes = torch.tensor([[100.0, 150.0, 700.0, 800.0]])
    ref = official_image_outputs(official, pixels, coords, labels, boxes=boxes, multimask_output=True)
    with torch.inference_mode():
        levels = ours.image_embeddings(ours.encode_image(pixels))
        box_pts = boxes.reshape(-1, 2, 2)
        pts = (torch.cat([box_pts, coords], 1), torch.cat([torch.tensor([[2, 3]], dtype=torch.int32), labels], 1))
        masks, iou, obj = ours.decode_masks(levels[-1], levels[:-1], pts, None, True)
    assert_decoded_close(levels, masks, iou, obj, ref)
    # and through both predictors, thresholded masks included
    ref_pred, mine = official_image_predictor(official), ImagePredictor(ours)
    ref_pred.set_image(image)
    mine.set_image(image)
    compare_predict(mine, ref_pred, point_coords=[[120.0, 200.5]], point_labels=[1])
