"""The masklet command line: masklet segment writes masks, an overlay and a JSON with COCO RLE."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from masklet.cli import main
from masklet.masks import decode_rle
from reference.cli import run_track as _track
from reference.pairs import test_image


def test_segment_writes_masks_overlay_and_json(tmp_path, checkpoint):
    image_path = tmp_path / "scene.png"
    Image.fromarray(test_image(120, 170, seed=8)).save(image_path)
    out = tmp_path / "out"
    code = main(
        [
            "segment",
            str(image_path),
            "--point",
            "60,40",
            "--point",
            "100,90,0",
            "--box",
            "10,10,150,110",
            "--checkpoint",
            str(checkpoint),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    summary = json.loads((out / "scene.json").read_text())
    assert len(summary["masks"]) == 3
    scores = [m["score"] for m in summary["masks"]]
    assert scores == sorted(scores, reverse=True)
    assert summary["point_labels"] == [1, 0] and summary["box"] == [10.0, 10.0, 150.0, 110.0]
    for record in summary["masks"]:
        png = np.array(Image.open(out / record["mask_png"])) > 0
        assert png.shape == (120, 170)
        assert np.array_equal(decode_rle(record["rle"])[0].numpy(), png)
        assert record["area"] == int(png.sum())
    overlay = np.array(Image.open(out / summary["overlay_png"]))
    assert overlay.shape == (120, 170, 3)


def test_segment_reports_errors_clearly(tmp_path, checkpoint, capsys):
    missing = tmp_path / "nope.png"
    code = main(["segment", str(missing), "--point", "1,2", "--checkpoint", str(checkpoint), "--out", str(tmp_path)])
    assert code == 2
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["segment", str(missing), "--point", "1,2,3,4", "--out", str(tmp_path)])


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "masklet.cli", "segment", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--checkpoint" in result.stdout


# --------------------------------------------------------------------------- masklet track


def test_track_writes_json_pngs_and_overlay(tmp_path, checkpoint, clip_folder, capsys):
    from masklet.video import VideoFileFrames

    folder, prompts = clip_folder
    out = tmp_path / "out"
    assert _track(folder, prompts, out, checkpoint) == 0
    printed = capsys.readouterr().out
    assert "tracked 5 frame(s), 2 object(s)" in printed and "overlay.mp4" in printed

    doc = json.loads((out / "masks.json").read_text())
    assert doc["video"] == "frames" and (doc["height"], doc["width"]) == (64, 80)
    assert [f["frame_index"] for f in doc["frames"]] == [0, 1, 2, 3, 4]
    for record in doc["frames"]:
        assert [o["object_id"] for o in record["objects"]] == [1, 2]
        png = np.array(Image.open(out / "masks" / f"{record['frame_index']:05d}.png"))
        assert png.shape == (64, 80) and set(np.unique(png)) <= {0, 1, 2}
        for obj in record["objects"]:  # the PNG holds each object's mask, less overlaps
            mask = decode_rle(obj["segmentation"])[0].numpy()
            assert np.all(mask[png == obj["object_id"]])
    assert Image.open(out / "masks" / "00000.png").mode == "P"
    with VideoFileFrames(out / "overlay.mp4") as video:
        assert len(video) == 5 and (video.height, video.width) == (64, 80)


def test_track_reverse_and_both_directions(tmp_path, checkpoint, clip_folder):
    folder, _ = clip_folder
    prompts = ["4:1:point=40,30", "4:1:point=10,10,0"]
    assert _track(folder, prompts, tmp_path / "rev", checkpoint, "--reverse", "--start", "4", "--no-video") == 0
    doc = json.loads((tmp_path / "rev" / "masks.json").read_text())
    assert [f["frame_index"] for f in doc["frames"]] == [0, 1, 2, 3, 4]
    assert sorted(p.name for p in (tmp_path / "rev" / "masks").iterdir()) == [f"{t:05d}.png" for t in range(5)]
    assert not (tmp_path / "rev" / "overlay.mp4").exists()

    prompts = ["2:7:box=10,10,50,40"]
    out = tmp_path / "both"
    assert _track(folder, prompts, out, checkpoint, "--both-directions", "--max-frames", "1") == 0
    doc = json.loads((out / "masks.json").read_text())
    assert [f["frame_index"] for f in doc["frames"]] == [1, 2, 3]
    from masklet.video import VideoFileFrames

    with VideoFileFrames(out / "overlay.mp4") as video:
        assert len(video) == 3


@pytest.mark.parametrize(
    "bad",
    [
        "0:1",
        "0:1:point",
        "x:1:point=3,4",
        "0:1.5:point=3,4",
        "0:0:point=3,4",
        "0:1:point=3",
        "0:1:point=3,4,5,6",
        "0:1:point=3,4,2",
        "0:1:box=1,2,3",
        "0:1:blob=1,2",
        "0:1:point=a,b",
        "0:1:box=9,9,1,1",
    ],
)
def test_track_rejects_malformed_prompts(tmp_path, clip_folder, capsys, bad):
    folder, _ = clip_folder
    with pytest.raises(SystemExit) as exit_info:
        main(["track", str(folder), "--prompt", bad, "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert repr(bad) in err and "FRAME:OBJ:point=X,Y[,LABEL]" in err


def test_track_reports_bad_input_cleanly(tmp_path, checkpoint, clip_folder, capsys):
    folder, _ = clip_folder
    assert _track(folder, ["9:1:point=3,4"], tmp_path / "o", checkpoint) == 2
    assert "'9:1:point=3,4': frame 9 is out of range; the video has 5 frames (0..4)" in capsys.readouterr().err
    assert _track(folder, ["0:1:box=1,1,9,9", "0:1:box=2,2,9,9"], tmp_path / "o", checkpoint) == 2
    assert "'0:1:box=2,2,9,9': a second box" in capsys.readouterr().err
    assert _track(folder, ["0:1:point=3,4"], tmp_path / "o", checkpoint, "--start", "5") == 2
    assert "--start 5: out of range" in capsys.readouterr().err
    assert _track(tmp_path / "missing", ["0:1:point=3,4"], tmp_path / "o", checkpoint) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
