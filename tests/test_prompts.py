"""masklet.prompts: the one prompt module behind ImagePredictor, VideoPredictor and training.

Fast unit checks: the image and the video paths turn the same box and clicks into the same
model-frame points and labels, box labels are the prompt encoder's, training's jittered boxes
carry them, and bad prompts fail with the messages the predictors' tests assert.
"""

from __future__ import annotations

import pytest
import torch

from masklet.errors import InvalidInputError
from masklet.model.prompt_encoder import BOX_BOTTOM_RIGHT, BOX_TOP_LEFT
from masklet.prompts import (
    ACCEPTED_LABELS,
    BOX_LABELS,
    as_label_tensor,
    box_corner_labels,
    boxes_to_corners,
    image_prompts,
    video_prompt,
)
from masklet.train.prompts import jittered_boxes

HW = (60, 80)  # (H, W) of the image / video frame
SIZE = 256  # model input size


def test_box_labels_are_the_prompt_encoders_and_accepted():
    assert BOX_LABELS == (BOX_TOP_LEFT, BOX_BOTTOM_RIGHT) == (2, 3)
    assert set(BOX_LABELS) <= set(ACCEPTED_LABELS)
    assert box_corner_labels(3).tolist() == [[2, 3]] * 3
    assert boxes_to_corners(torch.tensor([[1.0, 2.0, 3.0, 4.0]])).tolist() == [[[1.0, 2.0], [3.0, 4.0]]]


def test_image_and_video_prompts_agree():
    box, points, labels = [10.0, 5.0, 50.0, 40.0], [[20.0, 30.0], [70.0, 10.0]], [1, 0]
    image = image_prompts([points], [labels], [box], None, HW, SIZE, 64)
    assert image.points is not None and image.mask is None
    coords, lab = video_prompt(points, labels, box, True, HW, SIZE)
    assert torch.equal(image.points[0], coords) and torch.equal(image.points[1], lab)
    assert lab.tolist() == [[2, 3, 1, 0]]
    # pixels -> model frame: x * SIZE / W, y * SIZE / H
    expected = torch.tensor([[10 / 80, 5 / 60], [50 / 80, 40 / 60], [20 / 80, 30 / 60], [70 / 80, 10 / 60]]) * SIZE
    assert torch.allclose(coords[0], expected)
    # normalised input skips the division by the image size
    coords_n, _ = video_prompt([[0.5, 0.25]], [1], None, True, HW, SIZE, normalize_coords=False)
    assert coords_n.tolist() == [[[128.0, 64.0]]]


def test_training_boxes_carry_the_box_labels():
    gt = torch.zeros(2, 16, 16, dtype=torch.bool)
    gt[0, 2:6, 3:9] = True
    gt[1, 8:15, 1:4] = True
    corners, labels = jittered_boxes(gt, torch.Generator().manual_seed(0))
    assert corners.shape == (2, 2, 2) and labels.tolist() == [list(BOX_LABELS)] * 2


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: as_label_tensor([1, 4]), "point_labels: values [4.0] are not accepted"),
        (lambda: image_prompts([[1.0, 2.0]], None, None, None, HW, SIZE, 64), "must be given together"),
        (lambda: image_prompts(None, None, [5.0, 5.0, 1.0, 9.0], None, HW, SIZE, 64), "has x1 < x0"),
        (lambda: image_prompts(None, None, [[1.0, 2.0, 3.0]], None, HW, SIZE, 64), "box: expected shape (4,)"),
        (lambda: image_prompts([[float("nan"), 1.0]], [1], None, None, HW, SIZE, 64), "NaN or infinite"),
        (lambda: image_prompts(None, None, None, torch.zeros(1, 1, 32, 32), HW, SIZE, 64), "mask_input: expected"),
        (lambda: video_prompt(None, None, None, True, HW, SIZE), "give points with labels, a box, or both"),
        (lambda: video_prompt(None, None, [1, 2, 3, 4], False, HW, SIZE), "a box must come first"),
        (lambda: video_prompt([[1.0, 2.0]], [1, 1], None, True, HW, SIZE), "labels: expected shape (1,)"),
    ],
)
def test_bad_prompts_name_the_argument(call, message):
    with pytest.raises(InvalidInputError) as err:
        call()
    assert message in str(err.value)
