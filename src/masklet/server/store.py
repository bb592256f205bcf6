"""Bounded server state: the image cache (LRU under a byte budget) and the video session store."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..image import ImageEmbeddings
from .errors import ApiError


@dataclass
class CachedImage:
    """An uploaded image: its pixels (for automatic masks) and its encoder output."""

    image_id: str
    model: str
    pixels: np.ndarray
    embeddings: ImageEmbeddings

    @property
    def nbytes(self) -> int:
        return int(self.pixels.nbytes) + sum(t.numel() * t.element_size() for t in self.embeddings.levels)


class ImageCache:
    """Least-recently-used images whose total size stays under ``budget`` bytes."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._items: OrderedDict[str, CachedImage] = OrderedDict()
        self.nbytes = 0

    def get(self, image_id: str) -> CachedImage:
        """The image, or a 404 ``unknown_image`` (never uploaded, or evicted)."""
        item = self._items.get(image_id)
        if item is None:
            raise ApiError(404, "unknown_image", f"image {image_id!r} is unknown or was evicted; upload it again")
        self._items.move_to_end(image_id)
        return item

    def __contains__(self, image_id: str) -> bool:
        return image_id in self._items

    def put(self, item: CachedImage) -> None:
        """Insert, evicting the oldest images beyond the budget (an item above the budget is refused)."""
        if item.nbytes > self.budget:
            raise ApiError(
                413,
                "payload_too_large",
                f"image needs {item.nbytes} cache bytes, more than the cache budget of {self.budget}",
            )
        if item.image_id in self._items:
            self.nbytes -= self._items.pop(item.image_id).nbytes
        self._items[item.image_id] = item
        self.nbytes += item.nbytes
        while self.nbytes > self.budget:
            _, old = self._items.popitem(last=False)
            self.nbytes -= old.nbytes

    def pop(self, image_id: str) -> None:
        """Forget an image (no error if absent)."""
        item = self._items.pop(image_id, None)
        if item is not None:
            self.nbytes -= item.nbytes

    def __len__(self) -> int:
        return len(self._items)


def tensor_bytes(obj: Any) -> int:
    """Bytes of every tensor reachable through dicts, lists and dataclass fields of ``obj``."""
    seen: set[int] = set()

    def walk(x: Any) -> int:
        if id(x) in seen:
            return 0
        seen.add(id(x))
        if isinstance(x, torch.Tensor):
            return x.numel() * x.element_size()
        if isinstance(x, dict):
            return sum(walk(v) for v in x.values())
        if isinstance(x, (list, tuple)):
            return sum(walk(v) for v in x)
        if hasattr(x, "__dataclass_fields__"):
            return sum(walk(getattr(x, f)) for f in x.__dataclass_fields__)
        return 0

    return walk(obj)


@dataclass
class Session:
    """One video session: its state, the model, the prompt log and the latest per-frame results."""

    session_id: str
    model: str
    state: Any
    num_frames: int
    height: int
    width: int
    log: list[dict] = field(default_factory=list)
    results: dict[int, tuple[list[int], list[dict]]] = field(default_factory=dict)
    last_used: float = field(default_factory=time.monotonic)
    busy: Any = None  # asyncio.Lock serialising the session's operations
    predictor: Any = None  # the session's VideoPredictor (its options)
    tmpdir: Any = None  # TemporaryDirectory of an uploaded video file
    kind: str = "video"  # or "exemplar" (state: the ExemplarPredictor's bank)

    @classmethod
    def for_video(cls, session_id: str, model: str, state: Any, predictor: Any, tmpdir: Any = None) -> Session:
        """A video session over a predictor's ``init_state`` result (its size and frame count)."""
        return cls(
            session_id,
            model,
            state,
            state.num_frames,
            state.video_height,
            state.video_width,
            busy=asyncio.Lock(),
            predictor=predictor,
            tmpdir=tmpdir,
        )


class SessionStore:
    """Open sessions with an idle TTL and a count limit (answered with 429 and Retry-After)."""

    def __init__(self, max_sessions: int, ttl_s: float, max_bytes: int) -> None:
        self.max_sessions, self.ttl_s, self.max_bytes = max_sessions, ttl_s, max_bytes
        self._sessions: dict[str, Session] = {}

    def enforce_budget(self, keep: str) -> None:
        """Evict least recently used idle sessions (not ``keep``) while their tensors exceed the byte
        budget; a client replays an evicted session's log, so no work is lost."""
        sizes = {sid: tensor_bytes(s.state) for sid, s in self._sessions.items()}
        total = sum(sizes.values())
        for sid in sorted(self._sessions, key=lambda k: self._sessions[k].last_used):
            if total <= self.max_bytes:
                break
            if sid != keep and not self._sessions[sid].busy.locked():
                total -= sizes[sid]
                self.close(sid)

    def expire(self) -> None:
        """Drop sessions idle longer than the TTL (their memory goes with them)."""
        now = time.monotonic()
        for sid in [s for s, v in self._sessions.items() if now - v.last_used > self.ttl_s and not v.busy.locked()]:
            self.close(sid)

    def add(self, make: Any) -> Session:
        """Register the session ``make(session_id)`` builds, if there is room."""
        self.expire()
        if len(self._sessions) >= self.max_sessions:
            raise ApiError(
                429,
                "too_many_sessions",
                f"the server holds its limit of {self.max_sessions} sessions; close one or retry later",
                {"Retry-After": "5"},
            )
        session = make(uuid.uuid4().hex)
        self._sessions[session.session_id] = session
        return session

    def get(self, sid: str, kind: str = "video") -> Session:
        """The session of that kind, or a 404 ``unknown_session`` (never created, closed, expired or lost)."""
        self.expire()
        session = self._sessions.get(sid)
        if session is None or session.kind != kind:
            raise ApiError(404, "unknown_session", f"{kind} session {sid!r} is unknown or expired; create it again")
        session.last_used = time.monotonic()
        return session

    def close(self, sid: str) -> bool:
        """Forget a session; True if it existed."""
        session = self._sessions.pop(sid, None)
        if session is not None:
            frames = getattr(session.state, "frames", None)
            if frames is not None:
                frames.close()
            if session.tmpdir is not None:
                session.tmpdir.cleanup()
        return session is not None

    def nbytes(self) -> int:
        """Bytes of the tensors every open session holds."""
        return sum(tensor_bytes(s.state) for s in self._sessions.values())

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, sid: str) -> bool:
        """Whether a session of any kind is held under ``sid`` (the Ray ingress asks replicas this)."""
        return sid in self._sessions
