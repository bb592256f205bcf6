"""ExemplarPredictor: parity with Ultralytics' SAM2DynamicInteractivePredictor, the bank rule,
persistence, cost per real object, and quality with masklet-nano on generated scenes."""

from __future__ import annotations

import copy
import importlib.util

import numpy as np
import pytest
import torch

from masklet import ExemplarPredictor, load_model
from masklet.checkpoints import config_from_official
from masklet.errors import InvalidInputError, PredictorStateError
from masklet.exemplar import NANO_PRESENCE_CALIBRATION
from masklet.model import Sam2Model
from masklet.synthetic import make_example_set
from masklet.transforms import preprocess
from reference.official import (
    SMALL,
    apply_overrides,
    build_official_model,
    image_postprocess_overrides,
    official_model_dict,
)


def _box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())]


def _centre(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    i = len(ys) // 2
    return [float(xs[i]), float(ys[i])]


@pytest.fixture(scope="module")
def small_pair():
    """(official SAM2 with seeded random SMALL weights, our model holding the same weights)."""
    model_dict = official_model_dict("sam2.1-hiera-tiny", **SMALL)
    official = build_official_model(model_dict, seed=3)
    ours = Sam2Model(config_from_official(apply_overrides(copy.deepcopy(model_dict), image_postprocess_overrides())))
    ours.load_state_dict(official.state_dict(), strict=True)
    return official, ours.eval()


# ------------------------------------------------------------------- parity with Ultralytics


@pytest.mark.parametrize("num_objects", [2, 3])
def test_matches_ultralytics_dynamic_predictor(small_pair, num_objects):
    if importlib.util.find_spec("ultralytics") is None:
        pytest.skip("ultralytics is not installed (make install-test installs it)")
    from reference.ultralytics_oracle import build_ultralytics_sam2, dynamic_predictor

    official, ours = small_pair
    oracle = dynamic_predictor(build_ultralytics_sam2(official.state_dict()), max_obj_num=num_objects)
    mine = ExemplarPredictor(ours, object_pointers=False, multimask_queries=False)
    scenes = make_example_set(4 + num_objects, num_objects=num_objects, num_support=2, num_query=4, size=256)
    ul_ids = list(range(num_objects))  # Ultralytics' ids must be slot indices 0..max_obj_num - 1
    my_ids = [10 * (n + 1) for n in range(num_objects)]  # any ints here
    device = torch.device("cpu")
    informative = 0
    with torch.inference_mode():
        for k in range(scenes.num_support):
            image, masks = scenes.images[k], scenes.masks[k]
            pixels = preprocess(image, 256, device, torch.float32)
            boxes = [_box(m) for m in masks]
            # (mask prompts cannot be compared: Ultralytics' update_memory makes them 5-D and fails)
            if k == 0 and num_objects == 3:  # a box and a click per object
                clicks = [_centre(m) for m in masks]
                oracle.inference(pixels, bboxes=boxes, points=clicks, labels=[1] * num_objects, obj_ids=ul_ids,
                                 update_memory=True)
                for obj_id, b, c in zip(my_ids, boxes, clicks):
                    mine.add_example(image, obj_id, points=[c], labels=[1], box=b)
            else:
                oracle.inference(pixels, bboxes=boxes, obj_ids=ul_ids, update_memory=True)
                for obj_id, b in zip(my_ids, boxes):
                    mine.add_example(image, obj_id, box=b)
        for k in range(scenes.num_support, len(scenes.images)):
            theirs, _ = oracle.inference(preprocess(scenes.images[k], 256, device, torch.float32))
            result = mine.segment(scenes.images[k])
            assert result.obj_ids == my_ids
            diff = float((result.low_res_logits[:, 0] - theirs).abs().max())
            assert diff <= 1e-3, f"query {k}: mask logits differ by {diff:.3g}"
            informative += int(0.02 < float((theirs > 0).float().mean()) < 0.98)
    assert informative >= 2, "the reference masks are empty or full: the comparison proves little"


# ------------------------------------------------------------------------- bank and state


def test_mask_examples_are_kept_as_given(small_pair):
    _, ours = small_pair
    scenes = make_example_set(9, num_objects=1, num_support=1, num_query=1, size=(180, 240))
    predictor = ExemplarPredictor(ours)
    result = predictor.add_example(scenes.images[0], 2, mask=scenes.masks[0, 0])
    truth = torch.from_numpy(scenes.masks[0, 0])
    iou = float((result.masks[0] & truth).sum() / (result.masks[0] | truth).sum())
    assert iou > 0.9 and float(result.presence[0]) > 0.99  # a given mask is output as is (+/-10 logits)
    assert predictor.segment(scenes.images[1]).obj_ids == [2]


def test_bank_rule_keeps_examples_then_newest_queries(small_pair):
    _, ours = small_pair
    scenes = make_example_set(1, num_objects=1, num_support=3, num_query=4, size=256)
    predictor = ExemplarPredictor(ours, max_memory=3)
    predictor.add_example(scenes.images[0], 5, box=_box(scenes.masks[0, 0]))
    found = [float(predictor.segment(scenes.images[k], update_memory=True).presence[0]) > 0.5 for k in range(3, 7)]
    assert sum(found) >= 2, "these random weights should find the object on most queries"
    assert predictor.memory_kinds(5) == ["example", "query", "query"]  # the two newest query results
    for k in (1, 2, 1):
        predictor.add_example(scenes.images[k], 5, box=_box(scenes.masks[k, 0]))
    assert predictor.memory_kinds(5) == ["example"] * 3  # examples take the slots; the oldest went first
    newest = predictor._bank.memories[5][-1].features
    predictor.segment(scenes.images[4], update_memory=True)
    assert predictor.memory_kinds(5) == ["example"] * 3 and predictor._bank.memories[5][-1].features is newest


def test_query_memories_are_added_for_found_objects_only(small_pair):
    _, ours = small_pair
    scenes = make_example_set(2, num_objects=2, num_support=1, num_query=2, size=256)
    predictor = ExemplarPredictor(ours, max_memory=4)
    for n in range(2):
        predictor.add_example(scenes.images[0], n + 1, box=_box(scenes.masks[0, n]))
    result = predictor.segment(scenes.images[1], update_memory=True)
    for n, obj_id in enumerate(result.obj_ids):
        expected = ["example", "query"] if float(result.presence[n]) > 0.5 else ["example"]
        assert predictor.memory_kinds(obj_id) == expected


def test_result_shapes_remove_reset_and_errors(small_pair):
    _, ours = small_pair
    scenes = make_example_set(3, num_objects=2, num_support=1, num_query=1, size=(200, 300))
    predictor = ExemplarPredictor(ours)
    with pytest.raises(PredictorStateError):
        predictor.segment(scenes.images[1])
    first = predictor.add_example(scenes.images[0], 7, box=_box(scenes.masks[0, 0]))
    assert first.masks.shape == (1, 200, 300) and first.masks.dtype == torch.bool
    predictor.add_example(scenes.images[0], 3, points=[_centre(scenes.masks[0, 1])], labels=[1])
    result = predictor.segment(scenes.images[1])
    assert result.obj_ids == [7, 3] and result.masks.shape == (2, 200, 300)
    assert result.scores.shape == result.presence.shape == (2,)
    assert torch.all((result.presence >= 0) & (result.presence <= 1))
    assert torch.allclose(result.presence, torch.sigmoid(result.object_score_logits))
    assert predictor.remove_object(7) == [3]
    assert predictor.segment(scenes.images[1]).obj_ids == [3]
    with pytest.raises(InvalidInputError, match="unknown object"):
        predictor.remove_object(7)
    with pytest.raises(InvalidInputError, match="labels"):
        predictor.add_example(scenes.images[0], 1, points=[[1.0, 2.0]])
    with pytest.raises(InvalidInputError, match="box"):
        predictor.add_example(scenes.images[0], 1, box=[10, 10, 5, 5])
    with pytest.raises(InvalidInputError, match="mask"):
        predictor.add_example(scenes.images[0], 1, mask=np.zeros((10, 10), bool))
    with pytest.raises(InvalidInputError, match="mask alone"):
        predictor.add_example(scenes.images[0], 1, mask=scenes.masks[0, 0], box=[1, 1, 5, 5])
    with pytest.raises(InvalidInputError, match="obj_id"):
        predictor.add_example(scenes.images[0], "a", box=[1, 1, 5, 5])
    with pytest.raises(InvalidInputError, match="max_memory"):
        ExemplarPredictor(ours, max_memory=0)
    predictor.reset()
    assert predictor.obj_ids == []


def test_presence_calibration_changes_presence_only(small_pair):
    _, ours = small_pair
    scenes = make_example_set(3, num_objects=2, num_support=1, num_query=1, size=128)
    plain, calibrated = ExemplarPredictor(ours), ExemplarPredictor(ours, presence_calibration=(0.5, -2.0))
    for predictor in (plain, calibrated):
        for n in range(2):
            predictor.add_example(scenes.images[0], n + 1, box=_box(scenes.masks[0, n]))
    a, b = plain.segment(scenes.images[1]), calibrated.segment(scenes.images[1])
    assert torch.equal(a.masks, b.masks) and torch.equal(a.object_score_logits, b.object_score_logits)
    assert torch.allclose(b.presence, torch.sigmoid(0.5 * a.object_score_logits - 2.0))
    assert not torch.allclose(a.presence, b.presence)
    for bad in [(1.0,), (1.0, float("nan")), "ab", (True, 0.0)]:
        with pytest.raises(InvalidInputError, match="presence_calibration"):
            ExemplarPredictor(ours, presence_calibration=bad)


def test_save_and_load_give_the_same_results(small_pair, tmp_path):
    _, ours = small_pair
    scenes = make_example_set(6, num_objects=2, num_support=2, num_query=2, size=256)
    predictor = ExemplarPredictor(ours, max_memory=4)
    for k in range(2):
        for n in range(2):
            predictor.add_example(scenes.images[k], n + 1, box=_box(scenes.masks[k, n]))
    predictor.segment(scenes.images[2], update_memory=True)
    before = predictor.segment(scenes.images[3])
    predictor.save(tmp_path / "bank.safetensors")
    fresh = ExemplarPredictor(ours, max_memory=4)
    fresh.load(tmp_path / "bank.safetensors")
    after = fresh.segment(scenes.images[3])
    assert fresh.obj_ids == predictor.obj_ids
    assert [fresh.memory_kinds(i) for i in fresh.obj_ids] == [predictor.memory_kinds(i) for i in predictor.obj_ids]
    assert torch.allclose(after.mask_logits, before.mask_logits, atol=1e-5)
    with pytest.raises(InvalidInputError, match="max_memory"):
        ExemplarPredictor(ours, max_memory=1).load(tmp_path / "bank.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a bank")
    with pytest.raises(InvalidInputError):
        fresh.load(tmp_path / "junk.safetensors")


def test_cost_follows_the_real_number_of_objects(small_pair, monkeypatch):
    _, ours = small_pair
    scenes = make_example_set(8, num_objects=3, num_support=1, num_query=1, size=256)
    predictor = ExemplarPredictor(ours)
    batches: list[int] = []
    real = ours.memory_attention.forward

    def spy(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens=0):
        batches.append(memory.shape[1])
        return real(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens)

    monkeypatch.setattr(ours.memory_attention, "forward", spy)
    predictor.add_example(scenes.images[0], 1, box=_box(scenes.masks[0, 0]))
    predictor.segment(scenes.images[1])
    assert batches == [1]
    for n in (1, 2):
        predictor.add_example(scenes.images[0], n + 1, box=_box(scenes.masks[0, n]))
    batches.clear()
    predictor.segment(scenes.images[1])
    assert batches == [3]  # one batched call for the three objects, no padding to a maximum


# ----------------------------------------------------------------- quality with masklet-nano


def evaluate_nano(model, num_objects: int, seeds: range) -> tuple[float, float, float]:
    """(mIoU over present objects, presence accuracy at 0.5, AUC of presence for "is on the
    image") on generated support / query scenes."""
    ious, correct, present, absent = [], [], [], []
    for seed in seeds:
        scenes = make_example_set(seed, num_objects=num_objects, num_support=2, num_query=20, size=256)
        predictor = ExemplarPredictor(model, presence_calibration=NANO_PRESENCE_CALIBRATION)
        for k in range(scenes.num_support):
            for n in range(num_objects):
                predictor.add_example(scenes.images[k], n + 1, box=_box(scenes.masks[k, n]))
        for k in range(scenes.num_support, len(scenes.images)):
            result = predictor.segment(scenes.images[k])
            for n in range(num_objects):
                truth = scenes.masks[k, n]
                correct.append(bool(result.presence[n] > 0.5) == bool(truth.any()))
                (present if truth.any() else absent).append(float(result.object_score_logits[n]))
                if truth.any():
                    found = result.masks[n].numpy()
                    ious.append((found & truth).sum() / (found | truth).sum())
    auc = float(np.mean([p > a for p in present for a in absent]))
    return float(np.mean(ious)), float(np.mean(correct)), auc


def test_nano_finds_prompted_objects_on_new_scenes():
    # Measured on these 4 x 20 queries: mIoU 0.706. masklet-nano's own presence is above 0.5 for
    # almost every object-query (accuracy 0.694, the share of present objects); calibrated with
    # NANO_PRESENCE_CALIBRATION (fit on other seeds) it is 0.744; AUC 0.751.
    miou, accuracy, auc = evaluate_nano(load_model("masklet-nano"), num_objects=2, seeds=range(4))
    assert miou >= 0.68, miou
    assert accuracy >= 0.72, accuracy
    assert auc >= 0.6, auc
