"""Generated event clips (an object leaves or is hidden, then returns) and example / query scene sets."""

from __future__ import annotations

import numpy as np
import pytest

from masklet.errors import InvalidInputError
from masklet.synthetic import EVENT_KINDS, make_event_clip, make_example_set


@pytest.mark.parametrize("event", EVENT_KINDS)
def test_event_clip_hides_object_one_for_a_stretch_then_shows_it(event):
    clip = make_event_clip(3, event, num_frames=24, size=(96, 128))
    assert clip.frames.shape == (24, 96, 128, 3) and clip.masks.shape[:2] == (24, len(clip.object_ids))
    area = clip.masks[:, 0].sum(axis=(1, 2))
    hidden = np.flatnonzero(area == 0)
    assert len(hidden) >= 6 and np.all(np.diff(hidden) == 1), "one contiguous stretch out of sight"
    assert area[0] > 0 and area[hidden[-1] + 1] > 0
    full = area[0]
    assert area[hidden[0] - 2] >= 0.5 * full, "the object goes from mostly seen to unseen within two frames"
    if event == "occlusion":
        assert clip.motions == ("occluded", "occluder") and clip.amodal_areas[hidden, 0].min() > 0
    else:
        assert clip.motions == ("exit",) and clip.amodal_areas[hidden, 0].max() == 0
    again = make_event_clip(3, event, num_frames=24, size=(96, 128))
    assert np.array_equal(again.frames, clip.frames) and np.array_equal(again.masks, clip.masks)


def test_event_clip_rejects_bad_arguments():
    with pytest.raises(InvalidInputError, match="event"):
        make_event_clip(0, "teleport")
    with pytest.raises(InvalidInputError, match="num_frames"):
        make_event_clip(0, "exit", num_frames=8)


def test_example_set_has_the_same_objects_on_every_scene():
    scenes = make_example_set(5, num_objects=3, num_support=2, num_query=10, size=128)
    assert scenes.images.shape == (12, 128, 128, 3) and scenes.masks.shape == (12, 3, 128, 128)
    assert scenes.masks[:2].any(axis=(2, 3)).all(), "every object is on every support scene"
    present = scenes.masks[2:].any(axis=(2, 3))
    assert 0 < (~present).sum() < present.size, "some objects are absent from some queries"
    assert not (scenes.masks.sum(axis=1) > 1).any(), "visible masks are disjoint"
    again = make_example_set(5, num_objects=3, num_support=2, num_query=10, size=128)
    assert np.array_equal(again.images, scenes.images)
    with pytest.raises(InvalidInputError, match="absent_share"):
        make_example_set(0, absent_share=1.0)
