"""Segment by example: objects prompted on support images are found again on new images.

Each prompted example is decoded as SAM2 decodes a first video frame (no memory); its mask is
encoded by the memory encoder into the object's memory bank, and the mean of the image's finest
decoder features under the mask is kept as the example's prototype.

Two ways to segment a query (``query_mode``):

- ``"prototype"`` (default): each object's prototype (the mean of its memories' prototypes) is
  compared, by cosine similarity, with the query's finest features; the SAM heads decode the query
  without memory from one positive click at the most similar place, and presence is the calibrated
  peak similarity. It is training-free target-guided prompting (as PerSAM does for SAM): small SAM2
  models (masklet-nano) find far more with it than through memory attention.
- ``"memory"``: the query's features attend, through memory attention, to the object's memories
  (all given the temporal encoding of a conditioning frame; with ``object_pointers``, also the
  examples' object pointers) and the SAM heads decode the result with no prompt. Without object
  pointers and multimask output these are the semantics of Ultralytics'
  ``SAM2DynamicInteractivePredictor``, with its problems fixed: any int object ids, one bank per object (an object not prompted on a support image
gets no "absent" memory from it), cost proportional to the real number of objects, a bounded bank,
and presence reported as the sigmoid of the object score logit (a probability) rather than the
logit divided by 32.

Bank rule (per object, at most ``max_memory`` memories): prompted examples come first -- once
there are ``max_memory`` of them, a new example replaces the oldest; query results added with
``segment(..., update_memory=True)`` fill the remaining slots, the newest replacing the oldest.
"""

from .bank import Bank, Memory
from .predictor import (
    NANO_PRESENCE_CALIBRATION,
    PROTOTYPE_PRESENCE_CALIBRATION,
    QUERY_MODES,
    ExemplarPredictor,
    ExemplarResult,
    similarity_evidence,
)

__all__ = [
    "NANO_PRESENCE_CALIBRATION",
    "PROTOTYPE_PRESENCE_CALIBRATION",
    "QUERY_MODES",
    "Bank",
    "ExemplarPredictor",
    "ExemplarResult",
    "Memory",
    "similarity_evidence",
]
