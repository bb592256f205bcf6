"""Video: session state, the tracking engine, the offline predictor, live streams, lazy frame sources and result writers.

Frame decoding of video files needs PyAV (``pip install 'masklet[video]'``); folders of images and
in-memory frames work without it.
"""

from .engine import TrackingEngine
from .frames import ArrayFrames, FolderFrames, FrameSource, VideoFileFrames, open_frames
from .health import HealthMonitor, TrackEvent
from .predictor import VideoPredictor
from .session import TrackedFrame, VideoState
from .stream import StreamTracker
from .writers import CocoRleWriter, DavisPngWriter, OverlayVideoWriter

__all__ = [
    "ArrayFrames",
    "CocoRleWriter",
    "DavisPngWriter",
    "FolderFrames",
    "FrameSource",
    "HealthMonitor",
    "OverlayVideoWriter",
    "StreamTracker",
    "TrackEvent",
    "TrackedFrame",
    "TrackingEngine",
    "VideoFileFrames",
    "VideoPredictor",
    "VideoState",
    "open_frames",
]
