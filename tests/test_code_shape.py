"""The code shape the issue asks for, checked cheaply: CLI options defined once with library defaults,
no calls into other modules' private methods, modules split along their seams."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from masklet.amg import MaskGenerator
from masklet.cli import build_parser
from masklet.train import TrainConfig
from masklet.video import HealthMonitor

SRC = Path(__file__).resolve().parents[1] / "src" / "masklet"
MODEL_OPTIONS = ("--model", "--checkpoint", "--config", "--device", "--dtype")


def _subparser(name: str):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices[name]


@pytest.mark.parametrize("command", ["segment", "amg", "track", "demo"])
def test_model_options_on_every_model_subcommand(command):
    p = _subparser(command)
    flags = {s for a in p._actions for s in a.option_strings}
    assert set(MODEL_OPTIONS) <= flags
    dtype = next(a for a in p._actions if "--dtype" in a.option_strings)
    assert dtype.default == "float32" and set(dtype.choices) == {"float32", "bfloat16", "float16"}


def test_cli_defaults_come_from_the_library(tmp_path):
    parser = build_parser()
    args = parser.parse_args(["train", "--variant", "masklet-nano", "--out", str(tmp_path)])
    defaults = TrainConfig()
    for name in (
        "steps",
        "batch_size",
        "max_objects",
        "lr",
        "warmup_steps",
        "correction_rounds",
        "video_fraction",
        "prob_video_mask_prompt",
        "save_every",
        "seed",
    ):
        assert getattr(args, name) == getattr(defaults, name), name
    args = parser.parse_args(["track", "v", "--prompt", "0:1:point=1,1", "--out", str(tmp_path)])
    monitor = HealthMonitor()
    for name in ("lost_threshold", "lost_frames", "low_confidence", "min_area_ratio", "score_drop"):
        assert getattr(args, name) == getattr(monitor, name), name
    amg_help = _subparser("amg").format_help()
    import inspect

    sig = inspect.signature(MaskGenerator).parameters
    assert f"(default {sig['points_per_side'].default})" in amg_help
    assert f"(default {sig['pred_iou_thresh'].default:g};" in amg_help


def test_dtype_reaches_the_model(tmp_path, capsys):
    from masklet.cli import main
    from masklet.io import save_image
    from masklet.synthetic import make_scene

    photo = tmp_path / "scene.png"
    save_image(make_scene(1, size=64).image, photo)
    code = main(
        [
            "segment",
            str(photo),
            "--point",
            "30,30",
            "--model",
            "masklet-nano",
            "--dtype",
            "bfloat16",
            "--single",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 0 and "wrote 1 mask(s)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "segment",
                str(photo),
                "--point",
                "30,30",
                "--model",
                "masklet-nano",
                "--dtype",
                "int8",
                "--out",
                str(tmp_path / "p"),
            ]
        )
    assert exit_.value.code == 2 and not (tmp_path / "p").exists()


#: module -> private names of other modules' classes it must not call
_NO_PRIVATE_CALLS = {
    "video/stream.py": r"(engine|predictor|VideoPredictor|TrackingEngine)\._[a-z]",
    "client_video.py": r"(VideoPredictor|TrackingEngine)\._[a-z]",
    "client_stream.py": r"(StreamTracker|TrackingEngine)\._[a-z]",
    "client_exemplar.py": r"(ImagePredictor|ExemplarPredictor|exemplar)\._[a-z]",
    "server/routes/exemplars.py": r"predictor\._[a-z]",
    "server/video_ops.py": r"predictor\._[a-z]",
    "client.py": r"ImagePredictor\._[a-z]",
}


@pytest.mark.parametrize("module", sorted(_NO_PRIVATE_CALLS))
def test_no_calls_into_private_engine_methods(module):
    text = (SRC / module).read_text()
    assert not re.findall(_NO_PRIVATE_CALLS[module], text)


def test_track_step_returns_a_typed_result():
    import inspect

    from masklet.model import Sam2Model, TrackStepOutput

    assert inspect.signature(Sam2Model.track_step).return_annotation in (TrackStepOutput, "TrackStepOutput")


#: modules allowed past MAX_MODULE_LINES, and why: model/sam2.py is the composed model (~520 lines,
#: being tuned for speed on another branch); export/onnx.py is being split on the ONNX branch
LONG_MODULES = {"model/sam2.py": 560}
MAX_MODULE_LINES = 500


def test_every_source_module_stays_small():
    sizes = {str(p.relative_to(SRC)): len(p.read_text().splitlines()) for p in SRC.rglob("*.py")}
    assert len(sizes) > 100
    too_long = {m: n for m, n in sizes.items() if n > LONG_MODULES.get(m, MAX_MODULE_LINES)}
    assert not too_long, too_long


def test_no_test_imports_another_test_module_or_a_benchmark():
    tests = Path(__file__).resolve().parent
    for path in [*tests.glob("test_*.py"), *tests.glob("reference/*.py")]:
        text = path.read_text()
        assert not re.findall(
            r"^\s*(from|import) (test_\w+|server_util|evaluate_synthetic|benchmarks)\b", text, re.M
        ), path


def test_slow_and_oracle_markers(pytestconfig):
    from conftest import markers_for

    tests = Path(__file__).resolve().parent
    assert markers_for(str(tests / "test_amg.py")) == {"slow", "oracle"}
    assert markers_for(str(tests / "test_prompts.py")) == set()
    registered = " ".join(pytestconfig.getini("markers"))
    assert "slow:" in registered and "oracle:" in registered


def test_missing_opencv_skips_with_a_reason(monkeypatch):
    import sys

    from reference.official import OPENCV_MISSING, patched_connected_components

    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 now raises ImportError
    with pytest.raises(pytest.skip.Exception, match="OpenCV"):
        with patched_connected_components():
            pass
    assert "connected-components" in OPENCV_MISSING


def test_type_ignores_name_a_code_and_a_reason():
    bare = []
    for path in SRC.rglob("*.py"):
        for no, line in enumerate(path.read_text().splitlines(), 1):
            if "type: ignore" in line and not re.search(r"# type: ignore\[[a-z-]+(, [a-z-]+)*\]  # \S", line):
                bare.append(f"{path.relative_to(SRC)}:{no}")
    assert not bare, bare


def test_mypy_checks_every_module():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    config = tomllib.loads((SRC.parents[1] / "pyproject.toml").read_text())["tool"]["mypy"]
    ignored = {m for o in config.get("overrides", []) if o.get("ignore_errors") for m in o["module"]}
    assert not ignored, ignored
    assert config.get("warn_unused_ignores") is True


#: an edit of the import path: sys.path.insert / append / extend / remove / pop, or an assignment to
#: sys.path or a slice of it (spelled in pieces so this file does not match itself)
_SYS_PATH_EDIT = re.compile(r"\bsys\." + r"path(\.(insert|append|extend|remove|pop|clear)\(|(\[[^\]]*\])?\s*\+?=(?!=))")


def test_no_sys_path_edits_in_tests_or_benchmarks():
    root = SRC.parents[1]
    files = [*(root / "tests").rglob("*.py"), *(root / "benchmarks").rglob("*.py")]
    assert len(files) > 40
    edits = [
        f"{path.relative_to(root)}:{no}"
        for path in files
        for no, line in enumerate(path.read_text().splitlines(), 1)
        if _SYS_PATH_EDIT.search(line)
    ]
    assert not edits, edits
    assert _SYS_PATH_EDIT.search("sys." + "path.insert(0, here)")
    assert _SYS_PATH_EDIT.search("sys." + "path[:0] = [src]")
    assert not _SYS_PATH_EDIT.search("print(sys." + "path)")


def test_release_flags_and_official_class_paths_are_spelled_once():
    from masklet.checkpoints import OfficialClass
    from masklet.model.config import RELEASE_FLAGS

    texts = {str(p.relative_to(SRC)): p.read_text() for p in SRC.rglob("*.py")}
    for flag, value in RELEASE_FLAGS.items():
        spelled = sorted(m for m, t in texts.items() if f'"{flag}": {value!r}' in t)
        assert spelled == ["model/config.py"], (flag, spelled)
    paths = [v for k, v in vars(OfficialClass).items() if k.isupper()]
    assert len(paths) >= 10
    for path in paths:
        spelled = sorted(m for m, t in texts.items() if f'"{path}"' in t)
        assert spelled == ["checkpoints/official.py"], (path, spelled)


def test_no_benchmark_shadows_an_installed_module():
    """A benchmark runs with benchmarks/ first on sys.path, so ``click.py`` would replace the ``click``
    package for every import after it (httpx imports click)."""
    import importlib.util

    names = [path.stem for path in (SRC.parents[1] / "benchmarks").glob("*.py")]
    assert "oracles" in names
    shadowing = [name for name in names if importlib.util.find_spec(name) is not None]
    assert not shadowing, shadowing
    assert importlib.util.find_spec("click") is not None  # the check can see installed packages
