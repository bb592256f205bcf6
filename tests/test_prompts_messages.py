"""masklet.prompts in detail: every bad prompt's whole message, and the shapes, dtypes, order and
devices of valid prompts (issue 15 mutation gate: each check here failed for a surviving mutant)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from masklet.errors import InvalidInputError
from masklet.prompts import Prompts, as_float_tensor, as_label_tensor, box_corner_labels, image_prompts, video_prompt

HW = (60, 80)
SIZE = 256
SIDE = 64
LABEL_HELP = "; use 1 (positive), 0 (negative), -1 (padding), 2 / 3 (box top-left / bottom-right)"


def image(points=None, labels=None, box=None, mask=None, normalize=True):
    return image_prompts(points, labels, box, mask, HW, SIZE, SIDE, normalize)


def video(points=None, labels=None, box=None, clear=True, normalize=True):
    return video_prompt(points, labels, box, clear, HW, SIZE, normalize)


CASES = [
    (lambda: as_float_tensor(object(), "point_coords"), "point_coords: expected an array of numbers, got object ("),
    (lambda: as_float_tensor([1.0, float("inf")], "box"), "box: contains NaN or infinite values"),
    (lambda: as_label_tensor([1, 4, 0.5]), "point_labels: values [0.5, 4.0] are not accepted" + LABEL_HELP),
    (lambda: as_label_tensor([-2]), "point_labels: values [-2.0] are not accepted" + LABEL_HELP),
    (lambda: image([[1.0, 2.0]]), "point_coords and point_labels must be given together"),
    (lambda: image(None, [1]), "point_coords and point_labels must be given together"),
    (lambda: image([1.0, 2.0], [1]), "point_coords: expected shape (N, 2) or (B, N, 2), got (2,)"),
    (lambda: image([[1.0, 2.0, 3.0]], [1]), "point_coords: expected shape (N, 2) or (B, N, 2), got (1, 3)"),
    (
        lambda: image([[1.0, 2.0], [3.0, 4.0]], [1]),
        "point_labels: expected shape (1, 2) to match point_coords, got (1,)",
    ),
    (
        lambda: image([[[1.0, 2.0]]], [[[1]]]),
        "point_labels: expected shape (1, 1) to match point_coords, got (1, 1, 1)",
    ),
    (lambda: image(np.zeros((1, 0, 2)), np.zeros((1, 0))), "point_coords: expected at least one point, got zero"),
    (lambda: image(box=[[1.0, 2.0, 3.0]]), "box: expected shape (4,) or (B, 4) in XYXY order, got (1, 3)"),
    (lambda: image(box=np.zeros((0, 4))), "box: expected shape (4,) or (B, 4) in XYXY order, got (0, 4)"),
    (lambda: image(box=np.zeros((1, 1, 4))), "box: expected shape (4,) or (B, 4) in XYXY order, got (1, 1, 4)"),
    (
        lambda: image(box=[[0.0, 0.0, 1.0, 1.0], [5.0, 5.0, 9.0, 1.0]]),
        "box: box 1 = [5.0, 5.0, 9.0, 1.0] has x1 < x0 or y1 < y0; boxes are [x0, y0, x1, y1] with x0 <= x1, y0 <= y1",
    ),
    (
        lambda: image(box=[5.0, 0.0, 3.0, 9.0]),
        "box: box 0 = [5.0, 0.0, 3.0, 9.0] has x1 < x0 or y1 < y0; boxes are [x0, y0, x1, y1] with x0 <= x1, y0 <= y1",
    ),
    (
        lambda: image(box=[5.0, 5.0, 1.0, 9.0]),
        "box: box 0 = [5.0, 5.0, 1.0, 9.0] has x1 < x0 or y1 < y0; boxes are [x0, y0, x1, y1] with x0 <= x1, y0 <= y1",
    ),
    (
        lambda: image([[[1.0, 2.0]]] * 3, [[1]] * 3, [[0.0, 0.0, 9.0, 9.0]] * 2),
        "box and point_coords describe different numbers of objects (2 boxes, 3 point sets); "
        "give one point set per box as (B, N, 2)",
    ),
    (
        lambda: image([[[1.0, 2.0]]] * 2, [[1]] * 2, [[0.0, 0.0, 9.0, 9.0]] * 3),
        "box and point_coords describe different numbers of objects (3 boxes, 2 point sets); "
        "give one point set per box as (B, N, 2)",
    ),
    (
        lambda: image(mask=torch.zeros(1, 1, 32, 32)),
        f"mask_input: expected low-resolution logits of shape (1, {SIDE}, {SIDE}) or (B, 1, {SIDE}, {SIDE}) "
        "(the low_res output of a previous predict), got (1, 1, 32, 32)",
    ),
    (
        lambda: image(mask=torch.zeros(2, 2, SIDE, SIDE)),
        f"mask_input: expected low-resolution logits of shape (1, {SIDE}, {SIDE}) or (B, 1, {SIDE}, {SIDE}) "
        f"(the low_res output of a previous predict), got (2, 2, {SIDE}, {SIDE})",
    ),
    (
        lambda: image([[[1.0, 2.0]]] * 2, [[1]] * 2, mask=torch.zeros(3, 1, SIDE, SIDE)),
        "mask_input: 3 masks for 2 objects; give one mask per object",
    ),
    (lambda: video([[1.0, 2.0]]), "points and labels must be given together"),
    (lambda: video(None, [1]), "points and labels must be given together"),
    (lambda: video(), "give points with labels, a box, or both"),
    (
        lambda: video(box=[0, 0, 1, 1], clear=False),
        "a box must come first: use clear_old_points=True when giving a box",
    ),
    (lambda: video([[[1.0, 2.0]]] * 2, [[1]] * 2), "points: expected shape (P, 2) with P >= 1, got (2, 1, 2)"),
    (lambda: video(np.zeros((0, 2)), []), "points: expected shape (P, 2) with P >= 1, got (0, 2)"),
    (lambda: video([[1.0, 2.0, 3.0]], [1]), "points: expected shape (P, 2) with P >= 1, got (1, 3)"),
    (lambda: video([1.0, 2.0], [1]), "points: expected shape (P, 2) with P >= 1, got (2,)"),
    (lambda: video([[1.0, 2.0]], [1, 1]), "labels: expected shape (1,) to match points, got (2,)"),
    (lambda: video(box=[1, 2, 3]), "box: expected 4 numbers (x0, y0, x1, y1), got shape (3,)"),
    (lambda: video(box=[float("nan")] * 4), "box: contains NaN or infinite values"),
    (lambda: image(box=[0.0, 0.0, float("inf"), 1.0]), "box: contains NaN or infinite values"),
    (lambda: image(mask=torch.full((1, SIDE, SIDE), float("nan"))), "mask_input: contains NaN or infinite values"),
    (lambda: as_label_tensor([1, float("nan")]), "point_labels: contains NaN or infinite values"),
    (lambda: image([[float("nan"), 1.0]], [1]), "point_coords: contains NaN or infinite values"),
    (lambda: video([[1.0, float("nan")]], [1]), "points: contains NaN or infinite values"),
]


@pytest.mark.parametrize(("call", "message"), CASES, ids=[m[:48] for _, m in CASES])
def test_bad_prompt_gets_its_whole_message(call, message):
    with pytest.raises(InvalidInputError) as err:
        call()
    text = str(err.value)
    if message.endswith("("):  # the numpy error text that follows is numpy's
        assert text.startswith(message)
    else:
        assert re.fullmatch(re.escape(message), text), text


def test_valid_image_prompts_shapes_dtypes_and_order():
    p = image([[[10.0, 20.0], [30.0, 40.0]]] * 2, [[1, 0]] * 2, [[0.0, 6.0, 40.0, 30.0], [8.0, 0.0, 80.0, 60.0]])
    coords, labels = p.points
    assert coords.shape == (2, 4, 2)
    assert coords.dtype == torch.float32
    assert labels.dtype == torch.int32
    assert labels.tolist() == [[2, 3, 1, 0]] * 2  # box corners first, then the clicks
    scale = torch.tensor([SIZE / 80, SIZE / 60])
    assert torch.allclose(coords[1, :2], torch.tensor([[8.0, 0.0], [80.0, 60.0]]) * scale)
    assert torch.allclose(coords[0, 2:], torch.tensor([[10.0, 20.0], [30.0, 40.0]]) * scale)
    assert p.mask is None
    # normalised boxes: scaled by the model size only
    q = image(box=[0.25, 0.5, 0.75, 1.0], normalize=False)
    assert q.points[0].tolist() == [[[64.0, 128.0], [192.0, 256.0]]]
    assert image([[0.5, 0.25]], [1], normalize=False).points[0].tolist() == [[[128.0, 64.0]]]
    # a box alone, and (h, w) / (B, h, w) masks become (B, 1, h, w)
    assert image(box=[1.0, 2.0, 3.0, 4.0]).points[1].tolist() == [[2, 3]]
    assert image(mask=torch.zeros(SIDE, SIDE)).mask.shape == (1, 1, SIDE, SIDE)
    assert image(mask=np.zeros((3, SIDE, SIDE))).mask.shape == (3, 1, SIDE, SIDE)
    assert image([[1.0, 1.0]], [1], mask=torch.ones(1, 1, SIDE, SIDE)).mask.dtype == torch.float32
    assert image([[1.0, 1.0]], torch.tensor([1.0])).points[1].dtype == torch.int32
    assert image() == Prompts(None, None)
    # 1-D labels of several points become one row
    assert image([[1.0, 2.0], [3.0, 4.0]], [1, 0]).points[1].tolist() == [[1, 0]]
    # a valid box whose x1 is left of its y0 (x and y are compared with their own axis only)
    assert image(box=[0.0, 9.0, 5.0, 12.0]).points[0].shape == (1, 2, 2)
    # zero-width and zero-height boxes (a line) are valid: only x1 < x0 or y1 < y0 is rejected
    assert image(box=[5.0, 5.0, 5.0, 9.0]).points[0].shape == (1, 2, 2)
    assert image(box=[5.0, 5.0, 9.0, 5.0]).points[0].shape == (1, 2, 2)


def test_valid_video_prompt_shapes_and_order():
    coords, labels = video([[40.0, 30.0]], [0], [8.0, 6.0, 72.0, 54.0])
    assert coords.shape == (1, 3, 2)
    assert labels.tolist() == [[2, 3, 0]]
    assert labels.dtype == torch.int32
    assert torch.allclose(
        coords, torch.tensor([[[8.0, 6.0], [72.0, 54.0], [40.0, 30.0]]]) * torch.tensor([3.2, SIZE / 60])
    )
    coords, labels = video([[[40.0, 30.0]]], [[1]])  # (1, P, 2) and (1, P) are accepted as is
    assert coords.shape == (1, 1, 2)
    assert labels.tolist() == [[1]]
    coords, labels = video(box=torch.tensor([[0.0, 0.0, 80.0, 60.0]]))
    assert coords.tolist() == [[[0.0, 0.0], [256.0, 256.0]]]
    assert labels.tolist() == [[2, 3]]
    assert labels.dtype == torch.int32
    coords, _ = video(box=[0.5, 0.5, 1.0, 1.0], normalize=False)
    assert coords.tolist() == [[[128.0, 128.0], [256.0, 256.0]]]


def test_prompts_move_to_a_device_and_floats_from_tensors():
    p = image([[1.0, 2.0]], [1], mask=torch.zeros(1, 1, SIDE, SIDE)).to(torch.device("meta"))
    assert p.points[0].device.type == "meta"
    assert p.points[1].device.type == "meta"
    assert p.mask.device.type == "meta"
    assert Prompts(None, None).to(torch.device("meta")) == Prompts(None, None)
    q = image([[1.0, 2.0]], [1], mask=torch.ones(1, 1, SIDE, SIDE))
    moved = q.to(torch.device("cpu"))
    assert torch.equal(moved.points[0], q.points[0])  # coordinates stay coordinates
    assert torch.equal(moved.points[1], q.points[1])
    assert torch.equal(moved.mask, q.mask)
    t = as_float_tensor(torch.tensor([1, 2], dtype=torch.int64, requires_grad=False), "x")
    assert t.dtype == torch.float32
    assert t.device.type == "cpu"
    assert t.tolist() == [1.0, 2.0]
    assert as_label_tensor(np.array([-1, 0, 1, 2, 3])).tolist() == [-1, 0, 1, 2, 3]
    grad = as_float_tensor(torch.ones(2, requires_grad=True), "x")  # detached, not numpy()'d directly
    assert grad.requires_grad is False
    assert grad.tolist() == [1.0, 1.0]
    assert box_corner_labels(2, device="meta").device.type == "meta"
    assert box_corner_labels(2).device.type == "cpu"
