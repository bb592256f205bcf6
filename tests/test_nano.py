"""The packaged masklet-nano checkpoint: loads offline (in masklet and in the official package),
segments and tracks held-out synthetic shapes, and gives the official automatic masks and video
tracking on data where masks are meaningful (not the degenerate blobs of random weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from masklet import MaskGenerator, load_model
from masklet.checkpoints import PACKAGED_CHECKPOINTS, packaged_checkpoint
from masklet.synthetic import make_clip, make_scene
from masklet.train.evaluate import evaluate_held_out as evaluate
from masklet.video import VideoPredictor
from reference.amg_compare import assert_same_masks, masks_of, official_records
from reference.informative import assert_informative
from reference.nano import HELD_OUT, nano_pair
from reference.video_compare import assert_same, later_objects, scenario

#: The nano's IoU and stability scores are less confident than real SAM2's, so the filters are
#: lowered from the official 0.8 / 0.95 until about 20-40 of a busy scene's masks survive.
NANO_FILTERS = dict(pred_iou_thresh=0.5, stability_score_thresh=0.7)


def test_packaged_files_load_offline_in_masklet_and_official(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    checkpoint = packaged_checkpoint("masklet-nano")
    assert checkpoint.name == PACKAGED_CHECKPOINTS["masklet-nano"] and checkpoint.suffix == ".pt"
    assert "nano" in checkpoint.name and checkpoint.with_suffix(".yaml").is_file()
    assert checkpoint.stat().st_size < 12 * 2**20
    official, ours = nano_pair()
    assert ours.image_size == 256
    assert 3e6 < sum(p.numel() for p in ours.parameters()) < 6e6
    for name, value in official.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[name], value, rtol=0, atol=0, msg=name)


def test_held_out_figures_clear_floors():
    """Small held-out sample; floors a broken pipeline (or random weights) cannot reach.

    The real figures come from ``python benchmarks/evaluate_synthetic.py``.
    """
    figures = evaluate("masklet-nano", scenes=12, clips=4, frames=8, amg_scenes=4, **NANO_FILTERS)
    assert figures["click_miou"] >= 0.55, figures
    assert figures["box_miou"] >= 0.6, figures
    # 0.85 on these clips; the run-2 nano, whose two tracks collapsed onto one object, scored 0.43
    assert figures["video_jf"] >= 0.6, figures
    assert figures["amg_recall"] >= 0.5, figures


@pytest.mark.parametrize(
    "options",
    [
        dict(points_per_side=16),
        dict(points_per_side=8, crop_n_layers=1),
        dict(points_per_side=16, use_m2m=True),
        dict(points_per_side=16, min_mask_region_area=20),
    ],
    ids=["defaults", "crop-layer", "m2m", "min-region-area"],
)
def test_automatic_masks_match_official_on_nano(options):
    official, ours = nano_pair()
    options = {**NANO_FILTERS, **options}
    image = make_scene(HELD_OUT + 1, num_shapes=(10, 14)).image  # 11 shapes, textured, overlapping
    reference = official_records(official, image, **options)
    assert len(reference) >= 20, f"only {len(reference)} official masks: the test proves little"
    if options.get("use_m2m"):  # the random-weights m2m case moved here (issue 15 item 6)
        assert_informative(masks_of(reference), min_fraction=0.5)
    assert_same_masks(MaskGenerator(ours, **options).generate(image), reference)


@pytest.mark.parametrize("story", [scenario, later_objects])
def test_video_tracking_matches_official_on_nano(tmp_path, story):
    from reference.official import patched_connected_components

    official, model = nano_pair(video=True)
    ours = VideoPredictor(model, fill_hole_area=official.fill_hole_area)
    clip = make_clip(HELD_OUT + 3, num_frames=8, size=(96, 128), num_objects=(3, 3))
    folder = tmp_path / "clip"
    folder.mkdir()
    for t, frame in enumerate(clip.frames):
        Image.fromarray(frame).save(folder / f"{t:05d}.jpg", quality=95)
    with patched_connected_components(), torch.inference_mode():
        ref = story(official, official.init_state(str(folder)), clip.masks)
    # the fraction rule (issue 15 item 6): this is where the random SAM2.1 video case moved
    assert_same(story(ours, ours.init_state(folder), clip.masks), ref, min_fraction=0.5)


def test_bfloat16_tracking_agrees_with_float32_on_nano():
    clip = make_clip(HELD_OUT + 5, num_frames=8, size=(256, 256), crossing=True)
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        predictor = VideoPredictor(load_model("masklet-nano", dtype=dtype))
        state = predictor.init_state(list(clip.frames))
        for n, mask in enumerate(clip.masks[0]):
            predictor.add_new_mask(state, 0, n + 1, mask)
        results[dtype] = np.stack([r.masks.numpy() for r in predictor.propagate_in_video(state)])
    full, low = results[torch.float32], results[torch.bfloat16]
    assert full[1:].any(axis=(2, 3)).all(), "objects lost in float32: the comparison proves little"
    inter = (full & low).sum(axis=(2, 3))
    union = np.maximum((full | low).sum(axis=(2, 3)), 1)
    assert float((inter / union)[1:].mean()) >= 0.95


def test_offline_demo_writes_pictures_and_video(tmp_path, monkeypatch):
    from masklet.cli import main
    from masklet.video import VideoFileFrames

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["demo", "--out", str(tmp_path)]) == 0
    for name in ("click.png", "box.png", "automatic.png", "tracking_frame0.png"):
        assert Image.open(tmp_path / name).size == (512, 384)
    with VideoFileFrames(tmp_path / "tracking.mp4") as video:
        assert len(video) == 16


def test_empty_masks_without_a_stability_filter_are_kept_like_official():
    """A flat image gives empty masks (stability 0/0 = NaN); with the stability filter at 0 the
    official keeps them (it filters only when the threshold is above 0), and so does masklet."""
    official, ours = nano_pair()
    options = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)
    image = np.zeros((120, 160, 3), dtype=np.uint8)
    reference = official_records(official, image, **options)
    ours_records = MaskGenerator(ours, **options).generate(image)
    assert len(reference) > 0 and all(np.isnan(r["stability_score"]) for r in reference)
    assert len(ours_records) == len(reference)
    assert all(np.isnan(r["stability_score"]) and r["area"] == 0 for r in ours_records)
