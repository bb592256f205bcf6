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
from masklet.official_config import config_from_official, save_official_yaml
from reference.official import SMALL, build_official_model, official_model_dict, save_official_checkpoint
from reference.pairs import test_image


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    model_dict = official_model_dict("sam2.1-hiera-tiny", **SMALL)
    save_official_checkpoint(build_official_model(model_dict, seed=6), folder / "small.pt")
    save_official_yaml(config_from_official(model_dict), folder / "small.yaml")
    return folder / "small.pt"


def test_segment_writes_masks_overlay_and_json(tmp_path, checkpoint):
    image_path = tmp_path / "scene.png"
    Image.fromarray(test_image(120, 170, seed=8)).save(image_path)
    out = tmp_path / "out"
    code = main(["segment", str(image_path), "--point", "60,40", "--point", "100,90,0",
                 "--box", "10,10,150,110", "--checkpoint", str(checkpoint), "--out", str(out)])
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
