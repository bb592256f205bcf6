"""MaskData (issue 16, code shape 1): one container whose fields are filtered, moved and concatenated together."""

from __future__ import annotations

import pytest
import torch

from masklet.amg import MaskData


def _data(n: int, start: int = 0) -> MaskData:
    ids = torch.arange(start, start + n)
    return MaskData(
        logits=ids.float()[:, None, None].expand(n, 4, 5).clone(),
        iou=ids.float() / 10,
        stability=ids.float() / 20,
        boxes=torch.stack([ids, ids + 1, ids + 2, ids + 3], dim=1),
        points=torch.stack([ids.float(), ids.float() + 0.5], dim=1),
        crop_index=torch.zeros(n, dtype=torch.int64),
    )


def test_filter_keeps_every_field_in_step():
    data = _data(5)
    picked = data.filter(torch.tensor([False, True, False, True, True]))
    assert len(picked) == 3
    assert picked.iou.tolist() == pytest.approx([0.1, 0.3, 0.4])
    assert picked.boxes[:, 0].tolist() == [1, 3, 4]
    assert picked.logits[:, 0, 0].tolist() == [1.0, 3.0, 4.0]
    by_index = data.filter(torch.tensor([4, 0]))  # indices keep their order
    assert by_index.points[:, 0].tolist() == [4.0, 0.0]
    assert by_index.stability.tolist() == pytest.approx([0.2, 0.0])


def test_cat_and_shift():
    joined = MaskData.cat([_data(2), _data(3, start=10)])
    assert len(joined) == 5
    assert joined.boxes[:, 0].tolist() == [0, 1, 10, 11, 12]
    moved = joined.shifted(100, 7)
    assert moved.boxes[0].tolist() == [100, 8, 102, 10]
    assert moved.points[0].tolist() == [100.0, 7.5]
    assert torch.equal(moved.logits, joined.logits)  # logits stay in their crop's frame
    with pytest.raises(ValueError, match="no parts"):
        MaskData.cat([])


def test_fields_of_different_lengths_are_refused():
    data = _data(3)
    with pytest.raises(ValueError, match="different lengths"):
        data.replace(iou=torch.zeros(2))
