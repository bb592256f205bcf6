"""The server's frame documents read back as local results: shared by the remote video predictor and stream tracker."""

from __future__ import annotations

import torch

from .server.codec import rles_to_masks, unpack_array
from .video import TrackedFrame
from .video.health import TrackEvent

STREAM_LOST = "stream_lost"  # the final event's code when the server lost a stream (masklet serve --ray)


def tracked_frame(fr: dict, height: int, width: int) -> TrackedFrame:
    """A FrameResult as a TrackedFrame: exact logits when sent, else the masks as +1 / -1 logits."""
    if fr.get("maskLogits") is not None:
        logits = torch.from_numpy(unpack_array(fr["maskLogits"], "maskLogits"))
    else:
        masks = torch.from_numpy(rles_to_masks(fr["masks"], [len(fr["masks"])], (height, width)))
        logits = torch.where(masks, 1.0, -1.0)[:, None].float()
    scores = fr.get("objectScoreLogits")
    return TrackedFrame(
        fr["frameIdx"],
        list(fr["objIds"]),
        logits,
        None if scores is None else torch.tensor(scores, dtype=torch.float32),
    )


def server_events(fr: dict) -> list[TrackEvent]:
    """The track health events a frame document of the server carries (its own monitor's)."""
    return [TrackEvent(**e) for e in fr.get("events") or []]
