"""Lazy frame sources: a video file, a folder of images or a list of frames behind one interface.

Every source gives ``len(source)`` and ``source[i]`` -> (H, W, 3) uint8 RGB, decoding or loading a
frame only when it is asked for, so memory does not grow with the length of the video.
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from masklet.checks import is_int
from masklet.errors import InvalidInputError, VideoDecodeError
from masklet.io import load_image

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "IMAGE_EXTENSIONS",
    "ArrayFrames",
    "FolderFrames",
    "FrameInput",
    "FrameSource",
    "VideoFileFrames",
    "natural_key",
    "open_frames",
]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


def natural_key(name: str) -> tuple[tuple[Any, ...], str]:
    """Sort key that orders digit runs by value: "frame_2.png" before "frame_10.png"."""
    parts = re.split(r"(\d+)", name.lower())  # str, digits, str, ... so types align by position
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), name


class FrameSource(ABC):
    """A random-access sequence of (H, W, 3) uint8 RGB frames; a context manager."""

    @abstractmethod
    def __len__(self) -> int: ...

    _size: tuple[int, int]  # (height, width) of every frame; set by subclasses

    @property
    def height(self) -> int:
        return self._size[0]

    @property
    def width(self) -> int:
        return self._size[1]

    @abstractmethod
    def _frame(self, index: int) -> np.ndarray:
        """Frame ``index``, already checked to lie in [0, len - 1]."""

    def __getitem__(self, index: int) -> np.ndarray:
        """Frame ``index`` as (H, W, 3) uint8 RGB; ``index`` must be an int in [0, len - 1]."""
        n = len(self)
        if not is_int(index):
            raise InvalidInputError(f"index: expected an int in [0, {n - 1}], got {type(index).__name__}")
        if not 0 <= index < n:
            raise InvalidInputError(f"index: expected an int in [0, {n - 1}], got {index}")
        return self._frame(int(index))

    def __iter__(self) -> Iterator[np.ndarray]:
        # Needed: out-of-range indices raise InvalidInputError, not the IndexError iter() expects.
        return (self[i] for i in range(len(self)))

    def close(self) -> None:  # noqa: B027 (a no-op default, not abstract)
        """Release files or decoders held by the source (nothing by default)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _ImageListFrames(FrameSource):
    """Frames loaded one at a time with :func:`masklet.io.load_image`; size set by frame 0."""

    def __init__(self, items: Sequence[Any] | np.ndarray, labels: Sequence[str]) -> None:
        self._items, self._labels = items, labels
        first = load_image(items[0])
        self._size: tuple[int, int] = first.shape[:2]

    def __len__(self) -> int:
        return len(self._items)

    def _frame(self, index: int) -> np.ndarray:
        frame = load_image(self._items[index])
        if frame.shape[:2] != self._size:
            (h, w), (h0, w0) = frame.shape[:2], self._size
            raise InvalidInputError(
                f"frames: {self._labels[index]} is {h}x{w} (HxW) but frame 0 "
                f"({self._labels[0]}) is {h0}x{w0}; all frames must have one size"
            )
        return frame


class FolderFrames(_ImageListFrames):
    """The images of a folder (.jpg .jpeg .png .bmp .webp .tif .tiff, any case), in natural order.

    Other files and hidden files (such as macOS ``._*`` companions) are ignored.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        folder = Path(path)
        if not folder.is_dir():
            raise VideoDecodeError(f"frames: '{folder}' is not a folder")
        files = sorted(
            (
                p
                for p in folder.iterdir()
                if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
            ),
            key=lambda p: natural_key(p.name),
        )
        if not files:
            raise VideoDecodeError(
                f"frames: folder '{folder}' holds no images (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
        self.paths: list[Path] = files
        super().__init__(files, [f"file '{p}'" for p in files])


class ArrayFrames(_ImageListFrames):
    """Frames from a (T, H, W, 3) array, or a list of arrays / paths / PIL images (loaded lazily)."""

    def __init__(self, frames: Sequence[Any] | np.ndarray) -> None:
        if isinstance(frames, np.ndarray) and (frames.ndim != 4 or frames.shape[-1] != 3):
            raise InvalidInputError(f"frames: expected a (T, H, W, 3) array, got shape {tuple(frames.shape)}")
        if len(frames) == 0:
            raise InvalidInputError("frames: expected at least one frame, got none")
        super().__init__(frames, [f"frame {i}" for i in range(len(frames))])


class VideoFileFrames(FrameSource):
    """Frames of a video file (mp4, mov, webm, mkv, avi, ...) decoded on demand with PyAV.

    Opening demuxes the file once (no decoding) to count frames and learn their timestamps.
    Reading frame i+1 after frame i continues decoding; any other index seeks to the nearest
    keyframe before it and decodes forward. The last ``cache_size`` decoded frames are kept.
    """

    def __init__(self, path: str | os.PathLike, cache_size: int = 16) -> None:
        try:
            import av
        except ImportError:
            raise InvalidInputError("reading videos needs PyAV: pip install 'masklet[video]'") from None
        self.path = Path(path)
        if not self.path.is_file():
            raise VideoDecodeError(f"video: no such file: '{self.path}'")
        self._av_error = (av.error.FFmpegError, OSError)
        try:
            self._container: Any = av.open(os.fspath(self.path))
        except self._av_error as e:
            raise VideoDecodeError(f"video: cannot open '{self.path}': {e}") from e
        try:
            if not self._container.streams.video:
                raise VideoDecodeError(f"video: '{self.path}' has no video stream")
            self._stream = self._container.streams.video[0]
            self._pts, keyframes = self._scan()
        except BaseException:
            self._container.close()
            raise
        self._index_of = {pts: i for i, pts in enumerate(self._pts)}
        self._seek_points = sorted({*keyframes, self._pts[0] - 1})  # last resort: before frame 0
        self._size = (self._stream.codec_context.height, self._stream.codec_context.width)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_size = max(1, int(cache_size))
        self._decoder: Iterator[Any] | None = None
        self._last = -1  # index of the last frame the decoder produced

    def _scan(self) -> tuple[list[int], list[int]]:
        """Demux every packet once: the sorted frame timestamps and the keyframes' timestamps."""
        pts: list[int] = []
        keyframes: list[int] = []
        try:
            for packet in self._container.demux(self._stream):
                if packet.size == 0:  # the end-of-stream flush packet
                    continue
                t = packet.pts if packet.pts is not None else packet.dts
                if t is None:
                    raise VideoDecodeError(f"video: '{self.path}' has packets without timestamps")
                pts.append(t)
                if packet.is_keyframe:
                    keyframes.append(t)
        except self._av_error as e:
            raise VideoDecodeError(f"video: cannot read '{self.path}': {e}") from e
        if not pts:
            raise VideoDecodeError(f"video: '{self.path}' holds no frames")
        return sorted(pts), keyframes

    def __len__(self) -> int:
        return len(self._pts)

    def _frame(self, index: int) -> np.ndarray:
        if self._container is None:
            raise VideoDecodeError(f"video: '{self.path}' is closed")
        if index in self._cache:
            self._cache.move_to_end(index)
        elif not (self._decoder is not None and index == self._last + 1 and self._decode_to(index)):
            self._seek_and_decode(index)
        return self._cache[index].copy()

    def _seek_and_decode(self, index: int) -> None:
        """Seek to the keyframe at or before frame ``index``; step further back on overshoot
        (a seek may land after the frame, e.g. with open GOPs), down to the start of the file."""
        target = self._pts[index]
        for start in [t for t in reversed(self._seek_points) if t <= target]:
            try:
                self._container.seek(start, stream=self._stream, backward=True)
            except self._av_error as e:
                raise VideoDecodeError(f"video: cannot seek in '{self.path}': {e}") from e
            self._decoder, self._last = self._container.decode(self._stream), -1
            if self._decode_to(index):
                return
        raise VideoDecodeError(f"video: cannot decode frame {index} of '{self.path}'")

    def _decode_to(self, index: int) -> bool:
        """Decode forward, caching frames, until frame ``index``; False if it was passed by."""
        target, decoder = self._pts[index], self._decoder
        if decoder is None:
            return False
        try:
            for frame in decoder:
                i = self._index_of.get(frame.pts)
                if i is None:
                    continue  # a frame the demuxer did not count (should not happen)
                self._remember(i, frame.to_ndarray(format="rgb24", width=self.width, height=self.height))
                self._last = i
                if frame.pts >= target:
                    return frame.pts == target
        except self._av_error as e:
            raise VideoDecodeError(f"video: cannot decode frame {index} of '{self.path}': {e}") from e
        self._decoder = None  # exhausted
        return False

    def _remember(self, index: int, rgb: np.ndarray) -> None:
        self._cache[index] = rgb
        self._cache.move_to_end(index)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def close(self) -> None:
        """Close the file; the source cannot be read afterwards."""
        if self._container is not None:
            self._container.close()
            self._container, self._decoder = None, None
            self._cache.clear()


FrameInput = FrameSource | str | os.PathLike | Sequence[Any] | np.ndarray


def open_frames(source: FrameInput) -> FrameSource:
    """A :class:`FrameSource` for a video file, an image folder, a list of frames or a (T, H, W, 3) array."""
    if isinstance(source, FrameSource):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            return FolderFrames(path)
        if path.is_file():
            return VideoFileFrames(path)
        raise VideoDecodeError(f"frames: no such file or folder: '{path}'")
    if isinstance(source, (list, tuple, np.ndarray)):
        return ArrayFrames(source)
    raise InvalidInputError(
        f"frames: unsupported type {type(source).__name__}; accepted are a FrameSource, a video "
        "file path, an image folder path, a list/tuple of images or a (T, H, W, 3) numpy array"
    )
