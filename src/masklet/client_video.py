"""Remote twin of :class:`~masklet.VideoPredictor` (see :mod:`masklet.client`); the stream tracker's twin lives in
:mod:`masklet.client_stream` and is re-exported here."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from . import errors as E
from .checks import is_int
from .client_frames import server_events, tracked_frame
from .client_stream import RemoteStreamTracker
from .masks import encode_rle
from .prompts import video_prompt
from .server.codec import npy_bytes
from .video import TrackedFrame
from .video.engine import check_frame, check_max_frames, check_obj_id, watch
from .video.frames import FolderFrames, VideoFileFrames, open_frames
from .video.health import HealthMonitor

__all__ = ["RemoteStreamTracker", "RemoteVideoPredictor", "RemoteVideoState", "server_events"]

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
        return tracked_frame(fr, state.video_height, state.video_width)

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
        return tracked_frame(fr, state.video_height, state.video_width)

    def clear_all_prompts_in_frame(
        self, state: RemoteVideoState, frame_idx: int, obj_id: int, need_output: bool = True
    ) -> TrackedFrame | None:
        check_frame(state, frame_idx)
        args = {"frameIdx": int(frame_idx), "objId": int(obj_id), "needOutput": bool(need_output)}
        fr = self._send(state, "POST", "/clear", json={**args, "logits": self.exact_logits})
        self._log(state, "clear", args, fr)
        return None if fr is None else tracked_frame(fr, state.video_height, state.video_width)

    def remove_object(
        self, state: RemoteVideoState, obj_id: int, need_output: bool = True
    ) -> tuple[list[int], list[TrackedFrame]]:
        out = self._send(
            state, "DELETE", f"/objects/{int(obj_id)}", params={"need_output": need_output, "logits": self.exact_logits}
        )
        state.log.append(("remove_object", {"obj_id": int(obj_id)}))
        state.obj_ids = list(out["objIds"])
        return out["objIds"], [tracked_frame(fr, state.video_height, state.video_width) for fr in out["updated"]]

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
                yield watch(health, tracked_frame(doc, state.video_height, state.video_width))
                doc = next(lines, None)
        finally:
            lines.close()  # type: ignore[attr-defined]  # a generator, typed as an Iterator
            state.log.append(
                (
                    "propagate",
                    {"start": start if start is not None else body["startFrameIdx"], "legs": [(reverse, done)]},
                )
            )
