"""Streaming writers for video results: COCO RLE JSON, DAVIS palette PNGs and overlay videos.

Each writer takes one frame of results at a time (``write(frame_idx, obj_ids, masks)``), so memory
stays bounded on long videos. ``masks`` is (N, H, W) bool / 0-1, or (N, 1, H, W) / (N, H, W)
float logits (foreground where > 0), as numpy or torch. Writers are context managers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from masklet.checks import is_int, is_real
from masklet.errors import InvalidInputError, PredictorStateError
from masklet.formats import davis_colormap, save_davis_png
from masklet.io import ImageSource, load_image, overlay_masks
from masklet.masks import encode_rle, rle_area, rle_to_bbox

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["CocoRleWriter", "DavisPngWriter", "OverlayVideoWriter", "object_colors"]

_COLORMAP = davis_colormap()  # (256, 3), index 0 black


def object_colors(obj_ids: Sequence[int]) -> np.ndarray:
    """(N, 3) uint8 colours of object ids: the DAVIS colour of the id (ids above 255 wrap to 1..255)."""
    ids = np.asarray(obj_ids, dtype=np.int64)
    return _COLORMAP[np.where(ids > 255, (ids - 1) % 255 + 1, ids)]


def _check_frame(frame_idx: object, obj_ids: object, masks: object) -> tuple[int, list[int], np.ndarray, np.ndarray]:
    """Validate one frame of results: (frame_idx, ids, (N, H, W) bool masks, (N, H, W) scores).

    Scores rank overlapping objects: the logits when given, else zeros (the last object wins).
    """
    if not is_int(frame_idx) or frame_idx < 0:
        raise InvalidInputError(f"frame_idx: expected an int >= 0, got {frame_idx!r}")
    if isinstance(obj_ids, (str, bytes)) or not isinstance(obj_ids, Sequence):
        raise InvalidInputError(f"obj_ids: expected a sequence of ints, got {type(obj_ids).__name__}")
    if not all(is_int(i) and i >= 0 for i in obj_ids):
        raise InvalidInputError(f"obj_ids: expected ints >= 0, got {list(obj_ids)!r}")
    ids = [int(i) for i in obj_ids]
    if len(set(ids)) != len(ids):
        raise InvalidInputError(f"obj_ids: ids must be unique, got {ids}")
    if isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu()
        masks = (masks.float() if masks.is_floating_point() else masks).numpy()
    if not isinstance(masks, np.ndarray):
        raise InvalidInputError(f"masks: expected a numpy array or torch tensor, got {type(masks).__name__}")
    if masks.ndim == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]  # (N, 1, H, W) -> (N, H, W)
    if masks.ndim != 3:
        raise InvalidInputError(f"masks: expected shape (N, H, W) or (N, 1, H, W), got {tuple(masks.shape)}")
    if masks.shape[0] != len(ids):
        raise InvalidInputError(f"masks: got {masks.shape[0]} masks for {len(ids)} obj_ids; expected one mask per id")
    if np.issubdtype(masks.dtype, np.floating):
        return int(frame_idx), ids, masks > 0, masks.astype(np.float32)
    if masks.dtype != np.bool_ and not np.issubdtype(masks.dtype, np.integer):
        raise InvalidInputError(f"masks: expected bool, 0/1 integer or float logits, got {masks.dtype}")
    return int(frame_idx), ids, masks != 0, np.zeros(masks.shape, np.float32)


def _label_map(fg: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(H, W) int map: k + 1 where object k owns the pixel, 0 for background.

    Overlaps go to the highest score; ties (and plain masks, all scored 0) to the object listed last.
    """
    labels = np.zeros(fg.shape[1:], np.int64)
    best = np.full(fg.shape[1:], -np.inf, np.float32)
    for k in range(fg.shape[0]):
        take = fg[k] & (scores[k] >= best)
        labels[take], best[take] = k + 1, scores[k][take]
    return labels


def _check_presence(presence: Any, count: int) -> list[float] | None:
    """One probability in [0, 1] per object, as floats, or None."""
    if presence is None:
        return None
    if isinstance(presence, torch.Tensor):
        presence = presence.detach().float().cpu().numpy()
    values = np.asarray(presence, dtype=np.float64).reshape(-1) if not isinstance(presence, (str, bytes)) else None
    if values is None or values.shape != (count,) or not np.all((values >= 0) & (values <= 1)):
        raise InvalidInputError(f"presence: expected {count} probabilities in [0, 1], one per object, got {presence!r}")
    return [round(float(v), 6) for v in values]


def _event_dict(event: Any) -> dict[str, Any]:
    """A JSON dict of a track event (anything with ``to_dict``, or a dict)."""
    if isinstance(event, dict):
        return dict(event)
    if hasattr(event, "to_dict"):
        return event.to_dict()
    raise InvalidInputError(f"events: expected TrackEvent objects or dicts, got {type(event).__name__}")


def _mark_lost(image: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """Crossed-out squares of the given colours along the top-left edge: objects currently lost."""
    out = image.copy()
    h, w = out.shape[:2]
    side = max(6, min(h, w) // 12)
    diag = np.arange(side)
    for k, color in enumerate(colors):
        x0, y0 = 2 + k * (side + 2), 2
        if x0 + side > w or y0 + side > h:
            break
        square = out[y0 : y0 + side, x0 : x0 + side]
        square[:] = color
        square[[0, -1], :] = square[:, [0, -1]] = 255
        square[diag, diag] = square[diag, side - 1 - diag] = 0
    return out


class _Writer:
    """Context-manager plumbing shared by the writers."""

    _closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise PredictorStateError(f"{type(self).__name__}: write() called after close()")

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CocoRleWriter(_Writer):
    """Collect per-frame COCO RLEs and write them as one JSON file on close.

    Only the RLE strings are kept in memory. Writing a frame index twice replaces that frame.
    """

    def __init__(self, path: str | os.PathLike, video_name: str | None = None) -> None:
        self.path, self.video_name = Path(path), video_name
        self._frames: dict[int, list[dict[str, Any]]] = {}
        self._events: dict[int, list[dict[str, Any]]] = {}
        self._size: tuple[int, int] | None = None

    def write(
        self, frame_idx: int, obj_ids: Sequence[int], masks: Any, presence: Any = None, events: Sequence[Any] = ()
    ) -> None:
        """Encode the masks of frame ``frame_idx``, one per object id; ``presence`` (one probability
        per object) and ``events`` (:class:`~masklet.video.health.TrackEvent` s) are stored with it."""
        self._check_open()
        frame_idx, ids, fg, _ = _check_frame(frame_idx, obj_ids, masks)
        probs = _check_presence(presence, len(ids))
        notes = [_event_dict(e) for e in events]
        size = fg.shape[1:]
        if self._size is not None and size != self._size:
            raise InvalidInputError(f"masks: size {size} differs from earlier frames' {self._size}")
        self._size = size
        rles = encode_rle(fg)
        objects = [
            {"object_id": i, "segmentation": rle, "area": rle_area(rle), "bbox": rle_to_bbox(rle)}
            for i, rle in zip(ids, rles)
        ]
        if probs is not None:
            for entry, p in zip(objects, probs):
                entry["presence"] = p
        self._frames[frame_idx] = objects
        self._events[frame_idx] = notes

    def close(self) -> None:
        """Write the JSON file (frames sorted by index)."""
        if self._closed:
            return
        h, w = self._size if self._size is not None else (None, None)
        doc = {
            "video": self.video_name,
            "height": h,
            "width": w,
            "frames": [
                {
                    "frame_index": i,
                    "objects": self._frames[i],
                    **({"events": self._events[i]} if self._events[i] else {}),
                }
                for i in sorted(self._frames)
            ],
        }
        everything = [e for i in sorted(self._events) for e in self._events[i]]
        if everything:
            doc["events"] = everything
        self.path.write_text(json.dumps(doc))
        self._frames.clear()
        self._events.clear()
        super().close()


class DavisPngWriter(_Writer):
    """Write ``{frame_idx:05d}.png`` palette PNGs: pixel = object id (1..255), 0 = background."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def write(self, frame_idx: int, obj_ids: Sequence[int], masks: Any) -> None:
        """Write frame ``frame_idx``; overlaps go to the highest logit, else the last object."""
        self._check_open()
        frame_idx, ids, fg, scores = _check_frame(frame_idx, obj_ids, masks)
        if not all(1 <= i <= 255 for i in ids):
            raise InvalidInputError(f"obj_ids: DAVIS PNGs hold ids in 1..255, got {ids}")
        lut = np.array([0, *ids], np.uint8)  # label k + 1 -> id of object k
        save_davis_png(lut[_label_map(fg, scores)], self.folder / f"{frame_idx:05d}.png")


class OverlayVideoWriter(_Writer):
    """Encode frames with their masks blended in (colour by object id) into a video, frame by frame.

    Uses PyAV: H.264 for .mp4, MPEG-4 otherwise (as :func:`masklet.io.write_video`). Frames of odd
    width or height are padded with black by one pixel (yuv420p needs even sizes), never cropped.
    With ``annotate``, each object is outlined in a contrasting colour and tagged with its id,
    with a legend of ids and colours.
    """

    def __init__(self, path: str | os.PathLike, fps: float = 24.0, alpha: float = 0.5, annotate: bool = False) -> None:
        try:
            import av
        except ImportError:
            raise InvalidInputError("writing videos needs PyAV: pip install 'masklet[video]'") from None
        if not is_real(fps) or not fps > 0:
            raise InvalidInputError(f"fps: expected a positive number, got {fps!r}")
        if not is_real(alpha) or not 0 <= alpha <= 1:
            raise InvalidInputError(f"alpha: expected a float in [0, 1], got {alpha!r}")
        self._av: Any = av
        self.path: Path = Path(path)
        self.fps: float = float(fps)
        self.alpha: float = float(alpha)
        self.annotate: bool = bool(annotate)
        self._container: Any = None
        self._stream: Any = None
        self._size: tuple[int, int] | None = None
        self._last: int = -1  # index of the last frame written

    def _open(self, height: int, width: int) -> None:
        """Open the container once the frame size is known."""
        codec = "libx264" if self.path.suffix.lower() == ".mp4" else "mpeg4"
        self._container = self._av.open(os.fspath(self.path), mode="w")
        self._stream = self._container.add_stream(codec, rate=Fraction(self.fps).limit_denominator(1001))
        self._stream.width, self._stream.height = width + width % 2, height + height % 2  # yuv420p: pad
        self._stream.pix_fmt = "yuv420p"
        self._size = (height, width)

    def write(
        self, frame_idx: int, obj_ids: Sequence[int], masks: Any, frame: ImageSource, lost: Sequence[int] = ()
    ) -> None:
        """Blend the masks into ``frame`` (H, W, 3) and encode it; indices must increase.

        Objects in ``lost`` (ids) are marked by crossed-out squares of their colour at the top left.
        """
        self._check_open()
        frame_idx, ids, fg, scores = _check_frame(frame_idx, obj_ids, masks)
        if frame_idx <= self._last:
            raise InvalidInputError(
                f"frame_idx: frames must be written in increasing order, got {frame_idx} after {self._last}"
            )
        rgb = load_image(frame)
        if self._size is None:
            self._open(*rgb.shape[:2])
        if rgb.shape[:2] != self._size or fg.shape[1:] != self._size:
            raise InvalidInputError(
                f"frame: frame {rgb.shape[:2]} and masks {fg.shape[1:]} must both match the "
                f"video size {self._size} (HxW)"
            )
        labels = _label_map(fg, scores)  # resolve overlaps as the DAVIS PNGs do
        exclusive = labels[None] == np.arange(1, len(ids) + 1)[:, None, None]
        if self.annotate:
            from ..annotate import annotate_masks

            blended = annotate_masks(rgb, exclusive, [f"id {i}" for i in ids], object_colors(ids), alpha=self.alpha)
        else:
            blended = overlay_masks(rgb, exclusive, alpha=self.alpha, colors=object_colors(ids))
        lost_ids = [int(i) for i in lost]
        if lost_ids:
            blended = _mark_lost(blended, object_colors(lost_ids))
        h, w = self._stream.height, self._stream.width
        padded = np.zeros((h, w, 3), dtype=np.uint8)
        padded[: blended.shape[0], : blended.shape[1]] = blended
        picture = self._av.VideoFrame.from_ndarray(padded, format="rgb24")
        self._container.mux(self._stream.encode(picture))
        self._last = frame_idx

    def close(self) -> None:
        """Flush the encoder and finalise the file (nothing is written if no frame was)."""
        if self._container is not None and not self._closed:
            self._container.mux(self._stream.encode())
            self._container.close()
        super().close()
