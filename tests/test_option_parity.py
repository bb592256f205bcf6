"""Parity cases for behaviours no other test pinned (issue 15): the ±32 clamp of returned
low-resolution logits, mask_threshold, boxes with normalize_coords=False, predict_batch with
mask_input_batch. Each runs masklet-nano (whose logits pass 32 on real shapes) beside the
official SAM2ImagePredictor holding the same weights, and checks the option changes the output."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from masklet import ImagePredictor
from masklet.synthetic import make_scene
from reference.image_compare import assert_close, assert_masks_agree
from reference.nano import HELD_OUT, nano_pair
from reference.official import official_image_predictor


@functools.cache
def scene():
    s = make_scene(HELD_OUT + 21, size=(160, 224))
    return s


def predictors(**options):
    official, model = nano_pair()
    ref, mine = official_image_predictor(official, **options), ImagePredictor(model, **options)
    image = scene().image
    ref.set_image(image)
    mine.set_image(image)
    return mine, ref


def box_of(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())]


def coverage(masks: np.ndarray) -> float:
    return float(np.asarray(masks, dtype=bool).mean())


def test_low_res_logits_are_clamped_like_official():
    mine, ref = predictors()
    box = box_of(scene().masks[0])
    logits, _, low = ref.predict(box=box, return_logits=True)
    our_logits, _, our_low = mine.predict(box=box, return_logits=True)
    assert float(np.abs(logits).max()) > 32, "the logits never reach the clamp: the case proves little"
    assert float(np.abs(low).max()) == 32.0
    assert_close(our_logits, logits, "mask logits")
    assert_close(our_low, low, "low-res logits (clamped to ±32)")
    # feeding the clamped logits back (a refinement) agrees as well
    again = ref.predict(box=box, mask_input=low[:1], multimask_output=False, return_logits=True)
    mine_again = mine.predict(box=box, mask_input=our_low[:1], multimask_output=False, return_logits=True)
    assert_close(mine_again[0], again[0], "refined logits")


def test_mask_threshold_matches_official_and_changes_masks():
    box = box_of(scene().masks[1])
    mine, ref = predictors(mask_threshold=3.0)
    ref_logits, _, _ = ref.predict(box=box, return_logits=True)
    ours, _, _ = mine.predict(box=box)
    assert_masks_agree(ours, ref_logits, threshold=3.0)
    plain, _, _ = predictors()[0].predict(box=box)
    assert coverage(ours) < coverage(plain), "mask_threshold=3 did not shrink the masks"
    assert 0.002 <= coverage(ours[0]) <= 0.9


def test_unnormalized_box_matches_official():
    mine, ref = predictors()
    h, w = scene().image.shape[:2]
    x0, y0, x1, y1 = box_of(scene().masks[2])
    unit = [x0 / w, y0 / h, x1 / w, y1 / h]
    ref_logits, ref_iou, _ = ref.predict(box=unit, normalize_coords=False, return_logits=True)
    logits, iou, _ = mine.predict(box=unit, normalize_coords=False, return_logits=True)
    assert_close(logits, ref_logits, "mask logits")
    assert_close(iou, ref_iou, "iou")
    pixel_logits, _, _ = mine.predict(box=unit, return_logits=True)  # the same numbers read as pixels
    assert float(np.abs(pixel_logits - logits).max()) > 1.0
    assert 0.01 <= coverage(logits[0] > 0) <= 0.9


def test_predict_batch_with_mask_inputs_matches_official():
    official, model = nano_pair()
    ref, mine = official_image_predictor(official), ImagePredictor(model)
    images = [scene().image, make_scene(HELD_OUT + 22, size=(160, 224)).image]
    ref.set_image_batch(images)
    mine.set_image_batch(images)
    boxes = [np.array([box_of(scene().masks[0])]), np.array([[20.0, 20.0, 120.0, 110.0]])]
    _, _, lows = ref.predict_batch(box_batch=boxes, multimask_output=False, return_logits=True)
    kwargs = dict(box_batch=boxes, mask_input_batch=[low for low in lows], multimask_output=False, return_logits=True)
    ref_masks, ref_iou, _ = ref.predict_batch(**kwargs)
    masks, iou, _ = mine.predict_batch(**kwargs)
    plain, _, _ = mine.predict_batch(box_batch=boxes, multimask_output=False, return_logits=True)
    for a, b, p, s, t in zip(masks, ref_masks, plain, iou, ref_iou):
        assert_close(a, b, "batch mask logits")
        assert_close(s, t, "batch iou")
        assert float(np.abs(a - p).max()) > 1.0, "mask_input_batch did not change the output"


@pytest.mark.parametrize("offset", [2.0])
def test_stability_score_offset_matches_official(offset):
    from masklet import MaskGenerator
    from reference.amg_compare import assert_same_masks, official_records

    official, model = nano_pair()
    image = scene().image
    options = dict(points_per_side=8, stability_score_offset=offset, pred_iou_thresh=0.5, stability_score_thresh=0.0)
    reference = official_records(official, image, **options)
    ours = MaskGenerator(model, **options).generate(image)
    assert_same_masks(ours, reference)
    default = MaskGenerator(model, **{k: v for k, v in options.items() if k != "stability_score_offset"}).generate(
        image
    )
    assert [r["stability_score"] for r in default] != [r["stability_score"] for r in ours]
    assert len(reference) >= 5


def test_load_model_config_overrides_the_yaml_beside_the_checkpoint(tmp_path):
    """``load_model(config=...)`` wins over the yaml next to the checkpoint (a planted bug that
    ignored it kept max_obj_ptrs_in_encoder at 16 and survived the whole suite)."""
    from masklet import load_model
    from masklet.checkpoints import config_from_official, save_official_yaml
    from reference.official import SMALL, build_official_model, official_model_dict, save_official_checkpoint

    model_dict = official_model_dict("sam2.1-hiera-tiny", **SMALL)
    save_official_checkpoint(build_official_model(model_dict, seed=6), tmp_path / "small.pt")
    save_official_yaml(config_from_official(model_dict), tmp_path / "small.yaml")
    override = official_model_dict(
        "sam2.1-hiera-tiny", **SMALL, max_obj_ptrs_in_encoder=4, memory_temporal_stride_for_eval=2
    )
    save_official_yaml(config_from_official(override), tmp_path / "override.yaml")
    beside = load_model(tmp_path / "small.pt").config
    chosen = load_model(tmp_path / "small.pt", config=tmp_path / "override.yaml").config
    assert (beside.max_obj_ptrs_in_encoder, beside.memory_temporal_stride_for_eval) == (16, 1)
    assert (chosen.max_obj_ptrs_in_encoder, chosen.memory_temporal_stride_for_eval) == (4, 2)
    assert chosen == config_from_official(override)
