"""Remote twins of :class:`~masklet.VideoPredictor` and :class:`~masklet.StreamTracker` (see :mod:`masklet.client`)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from . import errors as E
from .checks import is_int
from .io import load_image
from .masks import encode_rle
from .prompts import video_prompt
from .server.codec import npy_bytes, rles_to_masks, unpack_array
from .video import TrackedFrame
from .video.engine import check_frame, check_max_frames, check_obj_id, watch
from .video.frames import FolderFrames, VideoFileFrames, open_frames
from .video.health import HealthMonitor, TrackEvent

if TYPE_CHECKING:
    from .client import Client


@dataclass(eq=False)
class RemoteVideoState:
    """A server-side session: its id, video size, object ids and the client's copy of the prompt log."""

    session_id: str
    num_frames: int
    video_height: int
    video_width: int
    obj_ids: list[int] = field(default_factory=list)
    log: list[tuple[str, dict]] = field(default_factory=list)
    upload: Any = None  # rebuilds the creation request (for replay)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


_STREAM_LOST = "stream_lost"  # the final event's code when the server lost a stream (masklet serve --ray)


def _tracked(fr: dict, height: int, width: int) -> TrackedFrame:
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


def _frame_parts(source: Any) -> tuple[list[tuple[str, tuple[str, bytes, str]]], int]:
    """Multipart parts uploading a video source the way ``open_frames`` reads it, and its frame count."""
    frames = open_frames(source)  # the local checks: missing path, empty folder, bad arrays
    try:
        if isinstance(frames, VideoFileFrames):
            return [("video", (frames.path.name, frames.path.read_bytes(), "application/octet-stream"))], len(frames)
        if isinstance(frames, FolderFrames):
            return [("frames", (p.name, p.read_bytes(), "application/octet-stream")) for p in frames.paths], len(frames)
        return [
            ("frames", (f"{i:05d}.npy", npy_bytes(frames[i]), "application/x-npy")) for i in range(len(frames))
        ], len(frames)
    finally:
        if frames is not source:  # close only what was opened here
            frames.close()


class RemoteVideoPredictor:
    """:class:`~masklet.VideoPredictor` on a server; ``exact_logits`` also transfers float mask logits."""

    def __init__(self, client: Client, model: str | None = None, *, exact_logits: bool = False, **options: Any) -> None:
        self.client, self.info = client, client.model_info(model)
        self.model_name, self.exact_logits, self.options = self.info["name"], bool(exact_logits), options

    @property
    def image_size(self) -> int:
        return self.info["imageSize"]

    def init_state(
        self,
        source: Any,
        *,
        offload_video_to_cpu: bool = False,
        offload_state_to_cpu: bool = False,
        feature_cache_size: int = 2,
    ) -> RemoteVideoState:
        """Upload a video file, a frame folder, a list of frames or an array, and open a session."""
        if not is_int(feature_cache_size, numpy=False) or feature_cache_size < 1:
            raise E.InvalidInputError(f"feature_cache_size: expected an int >= 1, got {feature_cache_size!r}")
        parts, _ = _frame_parts(source)
        options = json.dumps(self.options)

        def upload() -> dict:
            return self.client.request(
                "POST", "/v1/videos", params={"model": self.model_name}, files=parts, data={"options": options}
            )

        info = upload()
        return RemoteVideoState(info["sessionId"], info["numFrames"], info["height"], info["width"], upload=upload)

    def close_state(self, state: RemoteVideoState) -> None:
        """Close the server session (frees its memory)."""
        self.client.request("DELETE", f"/v1/videos/{state.session_id}")

    # ------------------------------------------------------------ replay

    def _send(self, state: RemoteVideoState, method: str, path: str, **kwargs: Any) -> Any:
        """A session request; if the server lost the session, re-create it, replay the log, retry."""
        try:
            return self.client.request(method, f"/v1/videos/{state.session_id}{path}", **kwargs)
        except E.MaskletError as err:
            if getattr(err, "code", None) != "unknown_session" or state.upload is None:
                raise
        self.replay(state)
        return self.client.request(method, f"/v1/videos/{state.session_id}{path}", **kwargs)

    def replay(self, state: RemoteVideoState) -> None:
        """Open a new session on the same frames and re-apply every logged operation in order."""
        state.session_id = state.upload()["sessionId"]
        for op, args in state.log:
            base = f"/v1/videos/{state.session_id}"
            if op == "propagate":
                for reverse, done in args["legs"]:
                    if done > 0:
                        body = {
                            "startFrameIdx": args["start"],
                            "maxFrameNumToTrack": done - 1,
                            "direction": "backward" if reverse else "forward",
                        }
                        for _ in self._lines(base, body):
                            pass
            elif op == "remove_object":
                self.client.request("DELETE", f"{base}/objects/{args['obj_id']}", params={"need_output": False})
            else:
                self.client.request("POST", f"{base}/{op}", json=args)

    # ------------------------------------------------------------ operations

    def _log(self, state: RemoteVideoState, op: str, args: dict, fr: dict | None) -> None:
        state.log.append((op, args))
        if fr is not None:
            state.obj_ids = list(fr["objIds"])

    def add_new_points_or_box(
        self,
        state: RemoteVideoState,
        frame_idx: int,
        obj_id: int,
        points: Any = None,
        labels: Any = None,
        clear_old_points: bool = True,
        normalize_coords: bool = True,
        box: Any = None,
    ) -> TrackedFrame:
        """Same as :meth:`masklet.VideoPredictor.add_new_points_or_box`."""
        check_frame(state, frame_idx)
        check_obj_id(obj_id)
        video_prompt(
            points,
            labels,
            box,
            clear_old_points,
            (state.video_height, state.video_width),
            self.image_size,
            normalize_coords,
        )
        args = {
            "frameIdx": int(frame_idx),
            "objId": int(obj_id),
            "points": None if points is None else np.asarray(points, dtype=np.float64).tolist(),
            "labels": None if labels is None else np.asarray(labels).astype(int).tolist(),
            "clearOldPoints": bool(clear_old_points),
            "normalizeCoords": bool(normalize_coords),
            "box": None if box is None else np.asarray(box, dtype=np.float64).tolist(),
        }
        fr = self._send(state, "POST", "/points", json={**args, "logits": self.exact_logits})
        self._log(state, "points", args, fr)
        return _tracked(fr, state.video_height, state.video_width)

    def add_new_mask(self, state: RemoteVideoState, frame_idx: int, obj_id: int, mask: Any) -> TrackedFrame:
        """Same as :meth:`masklet.VideoPredictor.add_new_mask` (the mask travels as COCO RLE)."""
        check_frame(state, frame_idx)
        check_obj_id(obj_id)
        m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
        if (
            m.ndim != 2
            or m.size == 0
            or not (m.dtype == bool or np.issubdtype(m.dtype, np.number))
            or np.iscomplexobj(m)
        ):
            raise E.InvalidInputError(
                f"mask: expected a 2-D (H, W) binary mask (bool or 0/1 numbers), got {m.dtype} of shape {m.shape}"
            )
        if m.dtype != bool and not np.isin(m, (0, 1)).all():
            raise E.InvalidInputError("mask: a remote mask must be binary (bool or 0/1); it travels as COCO RLE")
        args = {"frameIdx": int(frame_idx), "objId": int(obj_id), "mask": encode_rle(m.astype(bool)[None])[0]}
        fr = self._send(state, "POST", "/mask", json={**args, "logits": self.exact_logits})
        self._log(state, "mask", args, fr)
        return _tracked(fr, state.video_height, state.video_width)

    def clear_all_prompts_in_frame(
        self, state: RemoteVideoState, frame_idx: int, obj_id: int, need_output: bool = True
    ) -> TrackedFrame | None:
        check_frame(state, frame_idx)
        args = {"frameIdx": int(frame_idx), "objId": int(obj_id), "needOutput": bool(need_output)}
        fr = self._send(state, "POST", "/clear", json={**args, "logits": self.exact_logits})
        self._log(state, "clear", args, fr)
        return None if fr is None else _tracked(fr, state.video_height, state.video_width)

    def remove_object(
        self, state: RemoteVideoState, obj_id: int, need_output: bool = True
    ) -> tuple[list[int], list[TrackedFrame]]:
        out = self._send(
            state, "DELETE", f"/objects/{int(obj_id)}", params={"need_output": need_output, "logits": self.exact_logits}
        )
        state.log.append(("remove_object", {"obj_id": int(obj_id)}))
        state.obj_ids = list(out["objIds"])
        return out["objIds"], [_tracked(fr, state.video_height, state.video_width) for fr in out["updated"]]

    def reset_state(self, state: RemoteVideoState) -> None:
        self._send(state, "POST", "/reset")
        state.log.append(("reset", {}))
        state.obj_ids = []

    # ------------------------------------------------------------ propagation

    def _lines(self, base: str, body: dict) -> Iterator[dict]:
        with self.client.http.stream("POST", f"{base}/propagate", json=body) as response:
            if response.status_code >= 400:
                response.read()
                from .client import _error

                raise _error(response.status_code, response.json())
            for line in response.iter_lines():
                if not line:
                    continue
                doc = json.loads(line)
                if doc["type"] == "error":
                    from .client import _error

                    raise _error(400, doc)
                if doc["type"] == "end":
                    if doc.get("reason") == "shutdown":
                        from .client import RemoteError

                        err = RemoteError(
                            f"the server shut down after {doc.get('frames')} of {doc.get('total')} frames; "
                            "they are kept in the log: call propagate_in_video again to continue"
                        )
                        err.status, err.code, err.request_id = 503, "server_shutdown", None  # type: ignore[attr-defined]  # as client._error sets them
                        raise err
                    return
                yield doc

    def propagate_in_video(
        self,
        state: RemoteVideoState,
        start_frame_idx: int | None = None,
        max_frame_num_to_track: int | None = None,
        reverse: bool = False,
        health: HealthMonitor | None = None,
    ) -> Iterator[TrackedFrame]:
        """Same as :meth:`masklet.VideoPredictor.propagate_in_video`, streamed frame by frame as the
        server computes it; closing the iterator early stops the server's work. The server sends each
        object's score, and ``health`` (default: a new monitor) watches them here, as locally."""
        if health is not None and not isinstance(health, HealthMonitor):
            raise E.InvalidInputError(
                f"health: expected a masklet.video.HealthMonitor or None, got {type(health).__name__}"
            )
        if start_frame_idx is not None:
            check_frame(state, start_frame_idx, "start_frame_idx")
        check_max_frames(max_frame_num_to_track)
        monitor = HealthMonitor() if health is None else health
        thresholds = {k: v for k, v in asdict(monitor).items() if k not in ("events", "_objects")}
        body = {
            "startFrameIdx": start_frame_idx,
            "maxFrameNumToTrack": max_frame_num_to_track,
            "direction": "backward" if reverse else "forward",
            "logits": self.exact_logits,
            "health": thresholds,
        }
        first = self._first_line(state, body)
        return self._follow(state, body, first, bool(reverse), monitor)

    def _first_line(self, state: RemoteVideoState, body: dict) -> tuple[Iterator[dict], dict | None]:
        """Open the stream and read its first line eagerly, so bad state raises at the call (and a lost session replays)."""
        for attempt in (0, 1):
            lines = self._lines(f"/v1/videos/{state.session_id}", body)
            try:
                return lines, next(lines, None)
            except E.MaskletError as err:
                if attempt or getattr(err, "code", None) != "unknown_session" or state.upload is None:
                    raise
                self.replay(state)
        raise AssertionError("unreachable")

    def _follow(
        self,
        state: RemoteVideoState,
        body: dict,
        first: tuple[Iterator[dict], dict | None],
        reverse: bool,
        health: HealthMonitor,
    ) -> Iterator[TrackedFrame]:
        lines, doc = first
        done, start = 0, None
        try:
            while doc is not None:
                start = doc["frameIdx"] if start is None else start
                done += 1
                yield watch(health, _tracked(doc, state.video_height, state.video_width))
                doc = next(lines, None)
        finally:
            lines.close()  # type: ignore[attr-defined]  # a generator, typed as an Iterator
            state.log.append(
                (
                    "propagate",
                    {"start": start if start is not None else body["startFrameIdx"], "legs": [(reverse, done)]},
                )
            )


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
                lost = not isinstance(err, E.MaskletError) or getattr(err, "code", None) == _STREAM_LOST
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
        if doc.get("type") == "end" or (
            doc.get("type") == "error" and doc.get("error", {}).get("code") == _STREAM_LOST
        ):
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
        return _tracked(doc, *self._hw)

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
