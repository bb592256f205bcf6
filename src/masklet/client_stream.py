"""Remote twin of :class:`~masklet.StreamTracker`: one WebSocket stream, replayed when the server loses it."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from . import errors as E
from .client_frames import STREAM_LOST, tracked_frame
from .io import load_image
from .masks import encode_rle
from .prompts import video_prompt
from .server.codec import npy_bytes
from .video import TrackedFrame
from .video.engine import check_obj_id, watch
from .video.health import HealthMonitor

if TYPE_CHECKING:
    from .client import Client


class RemoteStreamTracker:
    """:class:`~masklet.StreamTracker` over a WebSocket: each ``track`` sends a frame and reads its masks.

    It keeps what it sent (frames and prompts) while that stays under ``replay_log_bytes``: when the
    server loses the stream (a Ray replica gone: a ``stream_lost`` event; a restart: an unasked ``end``
    or a dropped socket), it opens a new stream and replays the log, so the masks go on unchanged.
    """

    replay_log_bytes = 1 << 30  # beyond this the log is dropped and a lost stream raises

    def __init__(
        self, client: Client, model: str | None = None, *, health: HealthMonitor | None = None, **options: Any
    ) -> None:
        from dataclasses import asdict
        from urllib.parse import urlencode

        if health is not None and not isinstance(health, HealthMonitor):
            raise E.InvalidInputError(
                f"health: expected a masklet.video.HealthMonitor or None, got {type(health).__name__}"
            )
        self.health = (
            HealthMonitor() if health is None else health
        )  # watches here, as locally; the server's use its thresholds
        thresholds = {k: v for k, v in asdict(self.health).items() if k not in ("events", "_objects")}
        options = {**options, "health": thresholds}
        self.client, self.info = client, client.model_info(model)
        self._image_size = int(self.info["imageSize"])
        url = client.url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        try:
            query = urlencode({"model": self.info["name"], "options": json.dumps(options)})
        except TypeError as err:
            raise E.InvalidInputError(f"options: {err}") from None
        self._url = f"{url}/v1/streams?{query}"
        self._log: list[bytes | str] | None = []
        self._log_size = 0
        self._connect()
        self.frame_idx = -1
        self._hw: tuple[int, int] | None = None
        self._obj_ids: list[int] = []

    def _open(self) -> None:
        """Open the WebSocket and read its first event: ``ready`` (kept in ``_ready``), or an error raised here."""
        from websockets.sync.client import connect

        from .client import _error

        cm = connect(self._url, additional_headers=self.client.headers, max_size=2**28)
        ws = cm.__enter__()
        try:
            doc = json.loads(ws.recv(timeout=self.client.http.timeout.read))
        except BaseException:
            cm.__exit__(None, None, None)
            raise
        if doc.get("type") != "ready":
            cm.__exit__(None, None, None)
            raise _error(doc.get("status", 400), doc)
        self._cm, self.ws, self._ready = cm, ws, doc

    def _connect(self) -> None:
        """``_open`` with the client's retries while the server cannot hold a stream (down, or no replica)."""
        from websockets.exceptions import InvalidHandshake, WebSocketException

        for attempt in range(self.client.retries + 1):
            try:
                return self._open()
            except (OSError, InvalidHandshake, WebSocketException, E.MaskletError) as err:
                lost = not isinstance(err, E.MaskletError) or getattr(err, "code", None) == STREAM_LOST
                if not lost or attempt == self.client.retries:
                    if isinstance(err, E.MaskletError):
                        raise
                    from .client import RemoteError

                    raise RemoteError(f"cannot open a stream at {self.client.url}: {err}") from None
            time.sleep(min(self.client.backoff * 2**attempt, 2.0))

    def _send_recv(self, payload: bytes | str) -> dict | None:
        """One message and its answer; None when the stream is lost (replica gone, server restarted)."""
        from websockets.exceptions import WebSocketException

        try:
            self.ws.send(payload)
            doc = json.loads(self.ws.recv(timeout=self.client.http.timeout.read))
        except (OSError, WebSocketException):
            return None
        if doc.get("type") == "end" or (doc.get("type") == "error" and doc.get("error", {}).get("code") == STREAM_LOST):
            return None
        return doc

    def _resume(self) -> None:
        """A new stream with everything sent so far replayed on it (bounded by the client's retries)."""
        from .client import RemoteError, _error

        if self._log is None:
            raise RemoteError(
                f"stream_lost: the server lost the stream and its replay log passed "
                f"replay_log_bytes={self.replay_log_bytes}; open a new stream tracker"
            )
        for _ in range(self.client.retries + 1):
            try:
                self._cm.__exit__(None, None, None)
            except Exception:  # noqa: BLE001, S110 (the old socket is already gone)
                pass
            self._connect()
            for payload in self._log:
                doc = self._send_recv(payload)
                if doc is None:
                    break  # lost again: start over on yet another stream
                if doc["type"] == "error":
                    raise _error(doc.get("status", 400), doc)
            else:
                return
        raise RemoteError(f"stream_lost: could not resume the stream at {self.client.url}")

    @property
    def obj_ids(self) -> list[int]:
        return list(self._obj_ids)

    def _exchange(self, payload: bytes | str) -> dict:
        from .client import _error

        doc = self._send_recv(payload)
        for _ in range(self.client.retries + 1):
            if doc is not None:
                break
            self._resume()  # the server lost the stream: a new one, replayed, then this message again
            doc = self._send_recv(payload)
        if doc is None:
            from .client import RemoteError

            raise RemoteError(f"stream_lost: the stream at {self.client.url} keeps being lost")
        if doc["type"] == "error":
            raise _error(doc.get("status", 400), doc)
        if self._log is not None:
            self._log.append(payload)
            self._log_size += len(payload)
            if self._log_size > self.replay_log_bytes:
                self._log = None
        return doc

    def _frame(self, doc: dict) -> TrackedFrame:
        assert self._hw is not None
        self._obj_ids = list(doc["objIds"])
        return tracked_frame(doc, *self._hw)

    def track(self, frame: Any) -> TrackedFrame:
        """Send the next frame; returns every object's masks on it."""
        image = load_image(frame)
        if self._hw is not None and image.shape[:2] != self._hw:
            raise E.InvalidInputError(
                f"frame: every frame of a stream must be {self._hw[0]}x{self._hw[1]}, got {image.shape[0]}x{image.shape[1]}"
            )
        doc = self._exchange(npy_bytes(image))
        self._hw = image.shape[:2]
        self.frame_idx = doc["frameIdx"]
        return watch(self.health, self._frame(doc))

    def _require_frame(self) -> SimpleNamespace:
        if self._hw is None:
            raise E.PredictorStateError("no frame yet: call track(frame) before giving prompts")
        return SimpleNamespace(
            video_height=self._hw[0], video_width=self._hw[1], device=torch.device("cpu"), num_frames=None
        )

    def add_points(
        self, obj_id: int, points: Any, labels: Any, *, clear_old_points: bool = True, normalize_coords: bool = True
    ) -> TrackedFrame:
        state = self._require_frame()
        check_obj_id(obj_id)
        video_prompt(
            points,
            labels,
            None,
            clear_old_points,
            (state.video_height, state.video_width),
            self._image_size,
            normalize_coords,
        )
        return self._frame(
            self._exchange(
                json.dumps(
                    {
                        "op": "add_points",
                        "objId": int(obj_id),
                        "points": np.asarray(points, dtype=np.float64).tolist(),
                        "labels": np.asarray(labels).astype(int).tolist(),
                        "clearOldPoints": bool(clear_old_points),
                        "normalizeCoords": bool(normalize_coords),
                    }
                )
            )
        )

    def add_box(
        self, obj_id: int, box: Any, points: Any = None, labels: Any = None, *, normalize_coords: bool = True
    ) -> TrackedFrame:
        state = self._require_frame()
        check_obj_id(obj_id)
        video_prompt(
            points, labels, box, True, (state.video_height, state.video_width), self._image_size, normalize_coords
        )
        return self._frame(
            self._exchange(
                json.dumps(
                    {
                        "op": "add_box",
                        "objId": int(obj_id),
                        "box": np.asarray(box, dtype=np.float64).tolist(),
                        "points": None if points is None else np.asarray(points, dtype=np.float64).tolist(),
                        "labels": None if labels is None else np.asarray(labels).astype(int).tolist(),
                        "normalizeCoords": bool(normalize_coords),
                    }
                )
            )
        )

    def add_mask(self, obj_id: int, mask: Any) -> TrackedFrame:
        self._require_frame()
        m = np.asarray(mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask)
        if m.ndim != 2 or m.size == 0:
            raise E.InvalidInputError(
                f"mask: expected a 2-D (H, W) binary mask (bool or 0/1 numbers), got shape {m.shape}"
            )
        return self._frame(
            self._exchange(
                json.dumps({"op": "add_mask", "objId": int(obj_id), "mask": encode_rle(m.astype(bool)[None])[0]})
            )
        )

    def remove_object(self, obj_id: int) -> list[int]:
        self._require_frame()
        self._obj_ids = self._exchange(json.dumps({"op": "remove_object", "objId": int(obj_id)}))["objIds"]
        return self.obj_ids

    def reset(self) -> None:
        if self._hw is not None:
            self._obj_ids = self._exchange(json.dumps({"op": "reset"}))["objIds"]

    def close(self) -> None:
        """End the stream (the server answers a final ``end`` event)."""
        try:
            self.ws.send(json.dumps({"op": "close"}))
            self.ws.recv(timeout=5)
        except Exception:  # noqa: BLE001, S110 (the server may already be gone)
            pass
        self._cm.__exit__(None, None, None)
