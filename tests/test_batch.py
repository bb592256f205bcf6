"""``masklet batch``: 50 generated images through amg locally and on Ray Data (identical bytes), a run killed
half-way then resumed (no finished item recomputed, byte-identical), segment from COCO boxes, track from DAVIS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import masklet
from masklet.batch import Item, Job, Worker, discover
from masklet.cli import main
from masklet.masks import decode_rle
from masklet.synthetic import make_clip, make_scene

SRC = str(Path(__file__).resolve().parents[1] / "src")
N = 50
AMG = ["--points-per-side", "4", "--no-progress"]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    for i in range(N):
        Image.fromarray(make_scene(i, size=(40, 48)).image).save(root / f"img_{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def local_out(images, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local")
    assert main(["batch", "amg", str(images), "--out", str(out), *AMG]) == 0
    return out


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.json"))}


def test_local_amg_matches_the_mask_generator(images, local_out):
    files = _files(local_out)
    assert len(files) == N and not list(local_out.glob(".*.tmp"))
    model = masklet.load_model("masklet-nano")
    gen = masklet.MaskGenerator(
        model, output_mode="coco_rle", points_per_side=4, **masklet.checkpoints.recommended_amg_options("masklet-nano")
    )
    for i in (0, 17):
        ref = gen.generate(np.asarray(Image.open(images / f"img_{i:03d}.png").convert("RGB")))
        got = json.loads(files[f"img_{i:03d}.json"])["annotations"]
        assert [r["segmentation"] for r in ref] == [g["segmentation"] for g in got]


def test_ray_data_amg_is_byte_identical(images, local_out, tmp_path):
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert main(["batch", "amg", str(images), "--out", str(tmp_path), "--ray", "--actors", "2", *AMG]) == 0
    finally:
        ray.shutdown()
    assert _files(tmp_path) == _files(local_out)


def test_killed_run_resumes_without_recomputing(images, local_out, tmp_path):
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "masklet", "batch", "amg", str(images), "--out", str(tmp_path), *AMG]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(tmp_path.glob("*.json"))) < N // 2 and proc.poll() is None:
        time.sleep(0.02)
    proc.kill()
    proc.wait(10)
    first = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in tmp_path.glob("*.json")}
    assert N // 2 <= len(first) < N, len(first)  # killed half-way
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"{N - len(first)} computed, {len(first)} skipped" in out.stdout
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in tmp_path.glob("*.json")}
    assert all(after[name] == stamp for name, stamp in first.items())  # finished items untouched
    assert _files(tmp_path) == _files(local_out) and not list(tmp_path.glob(".*"))


def test_segment_from_coco_boxes(tmp_path):
    scene = make_scene(3, size=(48, 64))
    Image.fromarray(scene.image).save(tmp_path / "a.png")
    boxes = scene.boxes
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "height": 48, "width": 64}],
        "annotations": [
            {"id": 10 + k, "image_id": 1, "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]}
            for k, b in enumerate(boxes)
        ],
    }
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    out = tmp_path / "out"
    assert main(["batch", "segment", str(tmp_path / "coco.json"), "--out", str(out), "--no-progress"]) == 0
    doc = json.loads((out / "a.json").read_text())
    pred = masklet.ImagePredictor(masklet.load_model("masklet-nano"))
    pred.set_image(scene.image)
    assert [m["id"] for m in doc["masks"]] == [10 + k for k in range(len(boxes))]
    for m, b in zip(doc["masks"], boxes):
        ref = pred.predict(box=[float(b[0]), float(b[1]), float(b[2]), float(b[3])], multimask_output=False)[0][0]
        assert (decode_rle([m["segmentation"]])[0].numpy() == np.asarray(ref)).all()


def test_track_davis_layout(tmp_path):
    clip = make_clip(5, num_frames=4, size=(48, 64), num_objects=(2, 2))
    seq = tmp_path / "JPEGImages" / "480p" / "clip"
    ann = tmp_path / "Annotations" / "480p" / "clip"
    seq.mkdir(parents=True)
    ann.mkdir(parents=True)
    for t, frame in enumerate(clip.frames):
        Image.fromarray(frame).save(seq / f"{t:05d}.jpg", quality=95)
    ids = np.zeros(clip.frames[0].shape[:2], np.uint8)
    for k, m in enumerate(clip.masks[0]):
        ids[np.asarray(m, bool)] = k + 1
    Image.fromarray(ids).save(ann / "00000.png")
    (item,) = discover("track", tmp_path)
    assert item.name == "clip" and item.prompts
    out = tmp_path / "out"
    assert main(["batch", "track", str(tmp_path), "--out", str(out), "--no-progress"]) == 0
    doc = json.loads((out / "clip.json").read_text())
    assert [f["frame"] for f in doc["frames"]] == [0, 1, 2, 3]
    assert sorted(doc["frames"][0]["objects"]) == ["1", "2"]
    again = Worker(Job("track", "masklet-nano", str(out))).track(Item("clip", str(seq), item.prompts))
    assert again == doc
