"""Which replica a Ray Serve request runs on: the ids request paths name, replica pins, and the
request router that keeps a pinned request on its replica (see :mod:`masklet.server.ray_app`)."""

from __future__ import annotations

import re
from typing import Any

from ray.serve._private.request_router.pow_2_router import PowerOfTwoChoicesRequestRouter

PIN = "masklet-replica:"  # handle session_id prefix naming the replica a request must run on
REPLICA_HEADER = "x-masklet-replica"
_ID_PATHS = (
    (re.compile(r"^/v1/images/(?!embeddings$|predict_batch$)([^/]+)"), "image"),
    (re.compile(r"^/v1/videos/([^/]+)"), "video"),
    (re.compile(r"^/v1/jobs/([^/]+)"), "job"),
)
STREAM_LOST = "stream_lost"  # code of a stream's final error event when its replica went away


class ReplicaMapRouter(PowerOfTwoChoicesRequestRouter):
    """Power of two choices, except that a request pinned to a live replica runs there and only there
    (it waits for a free slot rather than falling back); a pin to a gone replica routes anywhere."""

    async def choose_replicas(self, candidate_replicas: list, pending_request: Any = None) -> list[list]:
        target = pending_request.metadata.session_id if pending_request is not None else ""
        if target and target.startswith(PIN):
            uid = target[len(PIN) :]
            for replica in candidate_replicas:
                if replica.replica_id.unique_id == uid:
                    pending_request.routing_context.should_backoff = True
                    return [[replica]]
        return await super().choose_replicas(candidate_replicas, pending_request)


def request_key(path: str) -> str | None:
    """The id (image, video session or job) a request path is about; None for stateless calls."""
    for pattern, _kind in _ID_PATHS:
        m = pattern.match(path)
        if m:
            return m.group(1)
    return None
