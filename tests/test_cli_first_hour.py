"""The first hour of a new user (issue 16): install, offline CLI, prompts, tracking errors, overlays,
duplicate masks, project files. Each test asserts exit codes and messages; all run on masklet-nano."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import masklet
from masklet.cli import main
from masklet.errors import MaskletError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def photo(tmp_path):
    """A 64x48 (WxH) picture with one bright square."""
    image = np.full((48, 64, 3), 40, dtype=np.uint8)
    image[10:30, 15:40] = (230, 200, 60)
    path = tmp_path / "photo.png"
    Image.fromarray(image).save(path)
    return path


@pytest.fixture()
def frames(tmp_path):
    """Three 33x45 (HxW, odd) frames of a moving square."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for t in range(3):
        image = np.full((33, 45, 3), 30, dtype=np.uint8)
        image[8:20, 5 + 3 * t : 20 + 3 * t] = (220, 60, 60)
        Image.fromarray(image).save(folder / f"{t:05d}.png")
    return folder


# ------------------------------------------------------------------ 1. install


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_makefile_finds_python3_takes_a_torch_index_and_explains_the_sam2_note():
    env = {
        k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHON", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")
    }
    env["PATH"] = os.path.dirname(shutil.which("python3") or sys.executable) + os.pathsep + env.get("PATH", "")
    plan = subprocess.run(
        ["make", "--no-print-directory", "-n", "test"], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout
    first = plan.splitlines()[0]
    assert re.search(r"python3? -m pip install", first) and not first.startswith("python -m"), first
    assert "--index-url" not in plan  # pip's configured index unless TORCH_INDEX names one
    chosen = subprocess.run(
        ["make", "--no-print-directory", "-n", "install", "TORCH_INDEX=https://download.pytorch.org/whl/cpu"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in chosen
    assert "sam2 1.1.0 requires torchvision" in plan and "expected" in plan
    venv = subprocess.run(
        ["make", "--no-print-directory", "-n", "install"],
        cwd=ROOT,
        env={**env, "VIRTUAL_ENV": "/opt/venv"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert venv.splitlines()[0].startswith("/opt/venv/bin/python -m pip")


def test_readme_shows_venv_and_cpu_and_cuda_torch():
    readme = (ROOT / "README.md").read_text()
    assert "python3 -m venv" in readme
    assert "https://download.pytorch.org/whl/cpu" in readme and "cu12" in readme


# ------------------------------------------------------------------ 2. offline, version, help


def test_version_has_one_source(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"masklet {masklet.__version__}"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and 'attr = "masklet.__version__"' in pyproject
    assert not re.search(r'^version = "', pyproject, re.M)


def test_help_mentions_the_packaged_model(capsys):
    for argv in ([], ["segment"], ["amg"], ["track"]):
        with pytest.raises(SystemExit) as exit_info:
            main([*argv, "--help"])
        assert exit_info.value.code == 0
        assert "masklet-nano" in " ".join(capsys.readouterr().out.split()), argv


def test_offline_error_names_the_cli_options(photo, tmp_path, capsys, monkeypatch):
    import huggingface_hub

    import masklet.checkpoints.loading as weights

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setattr(weights, "_hub_unreachable", lambda timeout=3.0: "cannot reach huggingface.co: test")
    code = main(["segment", str(photo), "--point", "20,20", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("masklet segment: error: ") and len(err.strip().splitlines()) == 1
    assert "--checkpoint" in err and "--model masklet-nano" in err and "load_model(" not in err
    assert not (tmp_path / "o").exists()


def test_missing_checkpoint_prints_the_path(photo, tmp_path, capsys):
    code = main(
        ["segment", str(photo), "--point", "20,20", "--checkpoint", "/missing.pt", "--out", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "'/missing.pt'" in err and "PosixPath" not in err
    assert err.startswith("masklet segment: error: ")
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ 3. recommended AMG options, progress


def test_amg_uses_the_models_recommended_options_and_says_so(photo, tmp_path, capsys):
    from masklet.checkpoints import recommended_amg_options

    recommended = recommended_amg_options("masklet-nano")
    assert recommended["pred_iou_thresh"] < 0.8 and recommended["stability_score_thresh"] < 0.95
    assert recommended_amg_options(photo) == {}
    code = main(
        [
            "amg",
            str(photo),
            "--model",
            "masklet-nano",
            "--points-per-side",
            "3",
            "--out",
            str(tmp_path / "a"),
            "--progress",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0
    assert f"pred_iou_thresh={recommended['pred_iou_thresh']:g} (masklet-nano)" in captured.out
    assert "points_per_side=3 (option)" in captured.out and "crop_n_layers=0 (default)" in captured.out
    assert "masklet amg: 9/9 prompts (100%)" in captured.err
    code = main(
        [
            "amg",
            str(photo),
            "--model",
            "masklet-nano",
            "--points-per-side",
            "3",
            "--out",
            str(tmp_path / "b"),
            "--pred-iou-thresh",
            "0.66",
            "--mask-nms-thresh",
            "0",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "pred_iou_thresh=0.66 (option)" in out and "mask_nms_thresh=0 (option)" in out


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--points-per-side", "0"], "points_per_side: expected an int >= 1, got 0"),
        (["--mask-nms-thresh", "1.5"], "mask_nms_thresh: expected a number in [0, 1] (0: off), got 1.5"),
    ],
)
def test_amg_bad_option_is_an_error_before_any_output(photo, tmp_path, capsys, option, message):
    out = tmp_path / "a"
    assert main(["amg", str(photo), "--model", "masklet-nano", *option, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("masklet amg: error: ")
    assert message in err
    assert not out.exists()


def test_demo_reads_the_same_recommended_options():
    source = (ROOT / "src" / "masklet" / "demo.py").read_text()
    assert "recommended_amg_options(model_name)" in source and "0.5" not in source


# ------------------------------------------------------------------ 4. prompts


@pytest.mark.parametrize("label", ["2", "-1", "3", "0.5"])
def test_segment_accepts_only_labels_0_and_1(photo, tmp_path, capsys, label):
    with pytest.raises(SystemExit) as exit_info:
        main(["segment", str(photo), "--point", f"20,20,{label}", "--model", "masklet-nano", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "LABEL must be 1 (foreground) or 0 (background)" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.png"]  # nothing written


def test_negative_coordinates_parse_and_outside_points_name_the_image_size(photo, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["segment", str(photo), "--point", "-10,-10", "--model", "masklet-nano", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "masklet segment: error: --point -10,-10 lies outside the image, which is 64x48 (WxH)" in err
    assert main(["segment", str(photo), "--box", "0,0,100,20", "--model", "masklet-nano", "--out", str(out)]) == 2
    assert "--box 0,0,100,20 lies outside the image, which is 64x48" in capsys.readouterr().err
    assert not out.exists()


def test_segment_without_prompt_is_an_error(photo, tmp_path, capsys):
    assert main(["segment", str(photo), "--model", "masklet-nano", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith("masklet segment: error: no prompt: give at least one --point")
    assert not (tmp_path / "o").exists()


def test_track_prompt_outside_the_video_names_its_size(frames, tmp_path, capsys):
    out = tmp_path / "t"
    assert main(["track", str(frames), "--prompt", "0:1:point=50,5", "--model", "masklet-nano", "--out", str(out)]) == 2
    assert "lies outside the image, which is 45x33 (WxH)" in capsys.readouterr().err
    assert not out.exists()


# ------------------------------------------------------------------ 5. tracking input and partial output


def test_track_of_a_photo_says_it_expects_a_video(photo, tmp_path, capsys):
    assert main(["track", str(photo), "--prompt", "0:1:point=5,5", "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert "is a single image; track expects a video file or a folder of frames" in err
    assert err.startswith("masklet track: error: ")
    assert not (tmp_path / "t").exists()


def test_track_detects_frames_of_different_sizes_before_loading_a_model(frames, tmp_path, capsys):
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(frames / "00003.png")
    # a missing checkpoint would fail later: the size check must come first
    code = main(
        ["track", str(frames), "--prompt", "0:1:point=5,5", "--checkpoint", "/missing.pt", "--out", str(tmp_path / "t")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "00003.png is 20x20 (WxH) but 00000.png is 45x33" in err
    assert not (tmp_path / "t").exists()


def test_failed_track_leaves_no_partial_output(frames, tmp_path, capsys, monkeypatch):
    import masklet.video as video
    from masklet.errors import InvalidInputError

    original = video.DavisPngWriter.write

    def failing(self, frame_idx, *args, **kwargs):
        if frame_idx == 1:
            raise InvalidInputError("disk full (test)")
        return original(self, frame_idx, *args, **kwargs)

    monkeypatch.setattr(video.DavisPngWriter, "write", failing)
    out = tmp_path / "t"
    code = main(["track", str(frames), "--prompt", "0:1:point=10,12", "--model", "masklet-nano", "--out", str(out)])
    assert code == 2 and "disk full (test)" in capsys.readouterr().err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]  # no temporary folder left either


def test_track_writes_odd_sized_overlay_padded_with_ids(frames, tmp_path, capsys):
    pytest.importorskip("av")
    from masklet.video import VideoFileFrames

    out = tmp_path / "t"
    assert (
        main(["track", str(frames), "--prompt", "0:1:point=10,12", "--model", "masklet-nano", "--out", str(out)]) == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["masks", "masks.json", "overlay.mp4"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "t"]
    with VideoFileFrames(out / "overlay.mp4") as video:
        assert (video.height, video.width) == (34, 46)  # padded to even sizes, not cropped to 32x44
        first = video[0]
    assert first[33].max() < 40 and first[:, 45].max() < 40  # the pad row and column are black
    assert abs(int(first[30, 40].mean()) - 30) < 20  # the last real pixels survive


def test_failed_demo_leaves_no_folder(tmp_path, capsys, monkeypatch):
    import masklet.demo as demo

    assert main(["demo", "--model", "/missing.pt", "--out", str(tmp_path / "d")]) == 2
    assert not (tmp_path / "d").exists()
    err = capsys.readouterr().err
    assert err.startswith("masklet demo: error: ")
    assert "/missing.pt" in err

    def broken(*args, **kwargs):
        raise MaskletError("broken (test)")

    monkeypatch.setattr(demo, "_write_demo", broken)
    assert main(["demo", "--out", str(tmp_path / "e")]) == 2
    assert not (tmp_path / "e").exists()
    assert capsys.readouterr().err.startswith("masklet demo: error: broken (test)")


# ------------------------------------------------------------------ 6. overlays


def test_annotated_overlay_has_contrasting_outline_labels_and_legend():
    from masklet.annotate import annotate_masks
    from masklet.io import overlay_masks, palette

    image = np.full((60, 80, 3), 128, np.uint8)
    masks = np.zeros((2, 60, 80), bool)
    masks[0, 20:50, 10:40] = True
    masks[1, 25:45, 50:75] = True
    plain = overlay_masks(image, masks)
    out = annotate_masks(image, masks, ["one", "two"])
    colors = palette(2)
    assert out.shape == plain.shape and out.dtype == np.uint8
    assert tuple(out[35, 9]) in ((0, 0, 0), (255, 255, 255))  # ring just outside mask 0's left edge
    assert tuple(out[35, 9]) != tuple(plain[35, 9])
    assert (out[25:45, 15:35] != plain[25:45, 15:35]).any()  # the label is drawn inside mask 0
    for i, color in enumerate(colors):  # legend swatches carry the mask colours
        assert tuple(out[5 + 14 * i + 5, 12]) == tuple(int(c) for c in color)


def test_segment_all_candidates_draws_every_candidate(photo, tmp_path, capsys):
    from masklet.io import palette

    base = ["segment", str(photo), "--point", "25,20", "--model", "masklet-nano"]
    assert main([*base, "--out", str(tmp_path / "best")]) == 0
    assert main([*base, "--all-candidates", "--out", str(tmp_path / "all")]) == 0
    best = np.array(Image.open(tmp_path / "best" / "photo_overlay.png"))
    every = np.array(Image.open(tmp_path / "all" / "photo_overlay.png"))
    assert (best != every).any()
    swatches = {tuple(int(c) for c in every[5 + 14 * i + 5, 12]) for i in range(3)}
    assert swatches == {tuple(int(c) for c in color) for color in palette(3)}


# ------------------------------------------------------------------ 7. duplicate masks


def test_mask_nms_removes_copies_that_box_nms_keeps():
    from masklet.mask_nms import mask_iou_nms

    shape = np.zeros((40, 40), bool)
    shape[10:20, 10:20] = True
    stray = shape.copy()
    stray[38, 38] = True  # one stray pixel: box IoU ~0.04, mask IoU 0.99
    other = np.zeros((40, 40), bool)
    other[25:35, 0:8] = True
    records = [
        {"segmentation": shape, "predicted_iou": 0.7},
        {"segmentation": stray, "predicted_iou": 0.9},
        {"segmentation": other, "predicted_iou": 0.5},
    ]
    kept = mask_iou_nms(records, 0.8)
    assert [r["predicted_iou"] for r in kept] == [0.9, 0.5]  # the better copy, order kept
    assert len(mask_iou_nms(records, 1.0)) == 3
    with pytest.raises(MaskletError, match="iou_thresh"):
        mask_iou_nms(records, 0)


def test_mask_generator_keeps_official_results_by_default():
    from masklet import MaskGenerator, load_model

    model = load_model("masklet-nano")
    assert MaskGenerator(model).mask_nms_thresh == 0.0
    with pytest.raises(MaskletError, match="mask_nms_thresh"):
        MaskGenerator(model, mask_nms_thresh=1.5)


# ------------------------------------------------------------------ 8-9. model card, project files


def test_model_card_documents_grayscale_and_the_training_log():
    card = (ROOT / "docs" / "masklet-nano.md").read_text()
    assert "grayscale" in card.lower() and "run 6" in card.lower()
    readme = (ROOT / "README.md").read_text()
    assert "docs/masklet-nano.md" in readme


def test_project_files():
    assert "Apache License" in (ROOT / "LICENSE").read_text() and "Version 2.0" in (ROOT / "LICENSE").read_text()
    assert "## Unreleased" in (ROOT / "CHANGELOG.md").read_text()
    hooks = (ROOT / ".pre-commit-config.yaml").read_text()
    for hook in ("id: ruff\n", "id: ruff-format", "id: mypy"):
        assert hook in hooks
    assert "[tool.ruff]" in (ROOT / "pyproject.toml").read_text()
