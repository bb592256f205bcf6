"""Frame sources (video files, image folders, arrays) and streaming result writers."""

from __future__ import annotations

import json
import sys
import wave

import numpy as np
import pytest
import torch
from PIL import Image

from masklet.errors import InvalidInputError, PredictorStateError, VideoDecodeError
from masklet.io import palette
from masklet.video.frames import (
    ArrayFrames,
    FolderFrames,
    FrameSource,
    VideoFileFrames,
    natural_key,
    open_frames,
)
from masklet.video.writers import CocoRleWriter, DavisPngWriter, OverlayVideoWriter

av = pytest.importorskip("av")
mask_utils = pytest.importorskip("pycocotools.mask")

H, W, T = 48, 64, 12


def _frames(t: int = T) -> np.ndarray:
    """(T, H, W, 3) smooth frames that change from one frame to the next."""
    y, x = np.mgrid[0:H, 0:W]
    return np.stack(
        [np.stack([(x * 3 + 10 * i) % 256, (y * 4 + 5 * i) % 256, np.full_like(x, 20 * i % 256)], -1) for i in range(t)]
    ).astype(np.uint8)


def _write_mp4(path, frames: np.ndarray, gop: int = 4) -> None:
    """H.264 with short GOPs and B-frames, so random access must seek and reorder."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=8)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.codec_context.gop_size = gop
        s.options = {"crf": "1", "bf": "2"}
        for f in frames:
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode())


@pytest.fixture(scope="module")
def mp4(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    _write_mp4(path, _frames())
    return path


# --------------------------------------------------------------------------------- frame sources


def test_natural_key():
    names = ["frame_10.png", "frame_2.png", "10.jpg", "2.jpg", "frame_1.png", "1.jpg"]
    assert sorted(names, key=natural_key) == ["1.jpg", "2.jpg", "10.jpg", "frame_1.png", "frame_2.png", "frame_10.png"]


def test_video_file_frames_random_access_matches_sequential(mp4):
    with VideoFileFrames(mp4, cache_size=4) as video:
        assert (len(video), video.height, video.width) == (T, H, W)
        sequential = [video[i] for i in range(T)]
        assert len(video._cache) <= 4
    with VideoFileFrames(mp4, cache_size=4) as video:
        for i in reversed(range(T)):
            np.testing.assert_array_equal(video[i], sequential[i])
            assert len(video._cache) <= 4
        for i in [5, 1, 9, 9, 2, 3, 11, 0]:
            np.testing.assert_array_equal(video[i], sequential[i])
        assert [f.shape for f in video] == [(H, W, 3)] * T
    original = _frames().astype(np.float32)
    for i, frame in enumerate(sequential):
        assert frame.dtype == np.uint8
        assert np.abs(frame.astype(np.float32) - original[i]).mean() < 4.0


def test_video_file_frames_from_write_video(tmp_path):
    from masklet.io import write_video

    path = tmp_path / "w.mp4"
    write_video(_frames(5), path, fps=5)
    video = open_frames(path)
    assert isinstance(video, VideoFileFrames)
    assert (len(video), video.height, video.width) == (5, H, W)
    last = video[4]
    np.testing.assert_array_equal(video[0], next(iter(video)))
    np.testing.assert_array_equal(video[4], last)
    video.close()


def test_video_file_errors(tmp_path):
    with pytest.raises(VideoDecodeError, match="no such file"):
        VideoFileFrames(tmp_path / "missing.mp4")
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video")
    with pytest.raises(VideoDecodeError, match="notes.mp4"):
        VideoFileFrames(fake)
    with pytest.raises(VideoDecodeError, match="no such file or folder"):
        open_frames(tmp_path / "missing")
    audio = tmp_path / "sound.wav"
    with wave.open(str(audio), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 800)
    with pytest.raises(VideoDecodeError, match="no video stream"):
        VideoFileFrames(audio)


def test_video_file_closed_and_missing_pyav(mp4, monkeypatch):
    video = VideoFileFrames(mp4)
    video.close()
    with pytest.raises(VideoDecodeError, match="closed"):
        video[0]
    monkeypatch.setitem(sys.modules, "av", None)  # makes `import av` fail
    with pytest.raises(InvalidInputError, match=r"pip install 'masklet\[video\]'"):
        VideoFileFrames(mp4)
    with pytest.raises(InvalidInputError, match=r"pip install 'masklet\[video\]'"):
        OverlayVideoWriter(mp4.with_name("o.mp4"))


def test_folder_frames_mixed_extensions(tmp_path):
    frames = _frames(4)
    for i, ext in zip([10, 2, 1, 3], [".png", ".JPG", ".bmp", ".tiff"]):
        Image.fromarray(frames[[10, 2, 1, 3].index(i)]).save(tmp_path / f"frame_{i}{ext}")
    (tmp_path / "notes.txt").write_text("junk")
    (tmp_path / "sub").mkdir()
    src = open_frames(tmp_path)
    assert isinstance(src, FolderFrames)
    assert [p.name for p in src.paths] == ["frame_1.bmp", "frame_2.JPG", "frame_3.tiff", "frame_10.png"]
    assert (len(src), src.height, src.width) == (4, H, W)
    np.testing.assert_array_equal(src[0], frames[2])  # lossless formats are exact
    np.testing.assert_array_equal(src[3], frames[0])


def test_folder_frames_errors(tmp_path):
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(VideoDecodeError, match="no images"):
        FolderFrames(tmp_path)
    Image.fromarray(_frames(1)[0]).save(tmp_path / "0.png")
    Image.fromarray(np.zeros((10, 20, 3), np.uint8)).save(tmp_path / "1.png")
    src = FolderFrames(tmp_path)
    src[0]
    with pytest.raises(InvalidInputError, match=r"1\.png.*10x20.*48x64"):
        src[1]


@pytest.mark.parametrize("index", [-1, 2, 1.0, True, "0"])
def test_bad_index(index):
    src = ArrayFrames(_frames(2))
    with pytest.raises(InvalidInputError, match=r"\[0, 1\]"):
        src[index]


def test_array_frames(tmp_path):
    frames = _frames(3)
    src = open_frames(frames)
    assert isinstance(src, ArrayFrames) and (len(src), src.height, src.width) == (3, H, W)
    np.testing.assert_array_equal(src[2], frames[2])
    paths = []
    for i, f in enumerate(frames):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(f).save(paths[-1])
    src = open_frames([str(p) for p in paths])
    np.testing.assert_array_equal(src[1], frames[1])
    assert open_frames(src) is src
    with pytest.raises(InvalidInputError, match="at least one"):
        ArrayFrames([])
    with pytest.raises(InvalidInputError, match="frame 1"):
        ArrayFrames([frames[0], np.zeros((5, 5, 3), np.uint8)])[1]
    with pytest.raises(InvalidInputError, match="accepted are"):
        open_frames(42)
    assert isinstance(src, FrameSource)


# --------------------------------------------------------------------------------------- writers


def _masks(n: int = 2) -> np.ndarray:
    """(n, H, W) bool masks: overlapping rectangles."""
    m = np.zeros((n, H, W), bool)
    for k in range(n):
        m[k, 5 + 6 * k : 25 + 6 * k, 8 + 10 * k : 40 + 5 * k] = True
    return m


def test_coco_rle_writer_round_trip(tmp_path):
    masks = _masks(3)
    path = tmp_path / "out.json"
    with CocoRleWriter(path, video_name="clip") as writer:
        writer.write(2, [1, 2], torch.from_numpy(masks[:2]))
        writer.write(0, [7], masks[2:].astype(np.uint8))
        writer.write(1, [4], np.zeros((1, H, W), bool))
        logits = torch.where(torch.from_numpy(masks[:2]), 3.0, -3.0)[:, None]  # (N, 1, H, W)
        writer.write(2, [5, 6], logits)  # replaces the first frame 2
    doc = json.loads(path.read_text())
    assert (doc["video"], doc["height"], doc["width"]) == ("clip", H, W)
    assert [f["frame_index"] for f in doc["frames"]] == [0, 1, 2]
    objects = doc["frames"][2]["objects"]
    assert [o["object_id"] for o in objects] == [5, 6]
    for obj, mask in zip(objects, masks[:2]):
        rle = {"size": obj["segmentation"]["size"], "counts": obj["segmentation"]["counts"].encode()}
        np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), mask)
        ref = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert obj["area"] == int(mask_utils.area(ref))
        assert obj["bbox"] == mask_utils.toBbox(ref).tolist()
    empty = doc["frames"][1]["objects"][0]
    assert empty["area"] == 0 and empty["bbox"] == [0, 0, 0, 0]


def test_davis_png_writer(tmp_path):
    masks = _masks(2)
    overlap = masks[0] & masks[1]
    assert overlap.any()
    with DavisPngWriter(tmp_path) as writer:
        writer.write(3, [4, 9], masks)
        logits = np.where(masks, 1.0, -1.0).astype(np.float32)
        logits[0][overlap] = 5.0  # object 4 is more confident where they overlap
        writer.write(4, [4, 9], logits[:, None])
    img = Image.open(tmp_path / "00003.png")
    assert img.mode == "P"
    pal = np.array(img.getpalette()[: 3 * 10]).reshape(10, 3)
    np.testing.assert_array_equal(pal[0], [0, 0, 0])
    np.testing.assert_array_equal(pal[1:], palette(9))
    values = np.array(img)
    assert (values[masks[1]] == 9).all()  # no logits: the last object wins
    assert (values[masks[0] & ~overlap] == 4).all() and (values[~(masks[0] | masks[1])] == 0).all()
    values = np.array(Image.open(tmp_path / "00004.png"))
    assert (values[overlap] == 4).all() and (values[masks[1] & ~overlap] == 9).all()
    for bad in ([0, 1], [1, 256]):
        with pytest.raises(InvalidInputError, match=r"1\.\.255"):
            DavisPngWriter(tmp_path).write(0, bad, masks)


def test_writers_reject_bad_input(tmp_path):
    writer = CocoRleWriter(tmp_path / "x.json")
    with pytest.raises(InvalidInputError, match="2 masks for 1 obj_ids"):
        writer.write(0, [1], _masks(2))
    with pytest.raises(InvalidInputError, match="shape"):
        writer.write(0, [1], np.zeros((H, W), bool))
    with pytest.raises(InvalidInputError, match="unique"):
        writer.write(0, [1, 1], _masks(2))
    with pytest.raises(InvalidInputError, match="frame_idx"):
        writer.write(-1, [1], _masks(1))
    writer.close()
    with pytest.raises(PredictorStateError):
        writer.write(0, [1], _masks(1))


def test_overlay_video_writer(tmp_path):
    frames, masks = _frames(6), _masks(2)
    path = tmp_path / "overlay.mp4"
    with OverlayVideoWriter(path, fps=8) as writer:
        for i, frame in enumerate(frames):
            writer.write(i, [1, 2], masks, frame)
        with pytest.raises(InvalidInputError, match="increasing order"):
            writer.write(3, [1, 2], masks, frames[3])
        with pytest.raises(InvalidInputError, match="obj_ids"):
            writer.write(9, [1], masks, frames[0])
    with VideoFileFrames(path) as video:
        assert (len(video), video.height, video.width) == (6, H, W)
        inside = masks[0] & ~masks[1]
        colour = palette(1)[0].astype(np.float32)  # object 1 is tinted with DAVIS colour 1
        before = np.abs(frames[0][inside] - colour).mean()
        after = np.abs(video[0][inside].astype(np.float32) - colour).mean()
        assert after < before
