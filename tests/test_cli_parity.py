"""The command line against the library and the official package for the same prompts (issue 15):
a dropped --box, labels forced positive or box coordinates swapped in track must fail here."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from masklet import load_model
from masklet.cli import main
from masklet.masks import decode_rle
from masklet.video import VideoPredictor
from reference.cli import run_track as _track
from reference.official import SMALL, build_official_model, official_image_predictor, official_model_dict
from reference.pairs import test_image

SEED = 6  # the weights test_cli's checkpoint fixture saves


def test_segment_masks_are_the_official_masks_for_points_labels_and_box(tmp_path, checkpoint):  # noqa: F811
    image = test_image(120, 170, seed=8)
    Image.fromarray(image).save(tmp_path / "scene.png")
    points, labels, box = [[60.0, 40.0], [100.0, 90.0]], [1, 0], [10.0, 10.0, 150.0, 110.0]
    out = tmp_path / "out"
    assert (
        main(
            [
                "segment",
                str(tmp_path / "scene.png"),
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
        == 0
    )
    summary = json.loads((out / "scene.json").read_text())
    official = official_image_predictor(
        build_official_model(official_model_dict("sam2.1-hiera-tiny", **SMALL), seed=SEED)
    )
    official.set_image(image)
    ref_logits, ref_iou, _ = official.predict(point_coords=points, point_labels=labels, box=box, return_logits=True)
    order = np.argsort(-ref_iou, kind="stable")
    assert len(summary["masks"]) == len(order)
    informative = 0
    for record, k in zip(summary["masks"], order):
        mask = decode_rle(record["rle"])[0].numpy()
        assert abs(record["score"] - float(ref_iou[k])) <= 1e-4
        differ = mask != (ref_logits[k] > 0)
        assert np.all(np.abs(ref_logits[k][differ]) <= 1e-3), f"{int(differ.sum())} pixels differ from the official"
        informative += int(0.01 <= mask.mean() <= 0.9)
    assert informative >= 1, "every mask is empty or full: the comparison proves little"
    # the prompts matter: without the box or with the negative click positive, masks change
    for other in (
        {"point_coords": points, "point_labels": labels},
        {"point_coords": points, "point_labels": [1, 1], "box": box},
    ):
        alt, _, _ = official.predict(**other, return_logits=True)
        assert any(np.any((alt[i] > 0) != (ref_logits[i] > 0)) for i in range(len(alt)))


def test_track_masks_are_the_library_masks_for_the_same_prompts(tmp_path, checkpoint, clip_folder):  # noqa: F811
    folder, prompts = clip_folder
    out = tmp_path / "out"
    assert _track(folder, prompts, out, checkpoint) == 0
    doc = json.loads((out / "masks.json").read_text())

    predictor = VideoPredictor(load_model(checkpoint, config=checkpoint.with_suffix(".yaml")))
    state = predictor.init_state(folder)
    point = [float(v) for v in prompts[0].split("=")[1].split(",")]
    box = [float(v) for v in prompts[1].split("=")[1].split(",")]
    predictor.add_new_points_or_box(state, 0, 1, points=[point], labels=[1])
    predictor.add_new_points_or_box(state, 0, 2, box=box)
    library = {
        int(f): (list(ids), (logits > 0).cpu().numpy()) for f, ids, logits in predictor.propagate_in_video(state)
    }
    assert sorted(library) == [f["frame_index"] for f in doc["frames"]]
    informative = 0
    for record in doc["frames"]:
        ids, masks = library[record["frame_index"]]
        assert [o["object_id"] for o in record["objects"]] == ids
        for obj, mask in zip(record["objects"], masks):
            cli = decode_rle(obj["segmentation"])[0].numpy()
            assert np.array_equal(cli, mask[0]), f"frame {record['frame_index']} object {obj['object_id']}"
            informative += int(0 < cli.mean() < 1)
    assert informative >= 1
    # a box with x and y swapped tracks something else
    swapped = VideoPredictor(load_model(checkpoint, config=checkpoint.with_suffix(".yaml")))
    state = swapped.init_state(folder)
    _, _, logits = swapped.add_new_points_or_box(state, 0, 2, box=[box[1], box[0], box[3], box[2]])
    assert not np.array_equal((logits > 0).cpu().numpy()[0, 0], library[0][1][1, 0])
