"""Shared pytest setup: bind the torchvision stand-in into the official ``sam2`` package, set markers.

The stand-in (``tests/reference/torchvision``, see :mod:`reference.standins`) is bound before any
test module imports ``sam2``. ``tests`` is on ``sys.path`` through pytest's ``pythonpath`` setting
(pyproject.toml), so ``reference.official`` / ``reference.hf`` import from any test module.

Markers: every test of a module in :data:`SLOW_MODULES` is marked ``slow``, and every test of a
module that imports a reference implementation is marked ``oracle``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from reference.standins import bind_torchvision_standin

bind_torchvision_standin()

#: Test modules that take minutes on a 2-core CPU (``-m "not slow"`` leaves them out).
SLOW_MODULES = frozenset(
    {
        "test_amg",
        "test_compiled",
        "test_image_parity",
        "test_image_predictor",
        "test_memory_parity",
        "test_nano",
        "test_option_parity",
        "test_sam2_compat",
        "test_train",
        "test_video_gaps",
        "test_video_parity",
        "test_video_predictor",
        "test_video_stream",
        "test_cli_parity",
    }
)
_ORACLE_IMPORTS = (
    "reference.official",
    "reference.hf",
    "reference.ultralytics_oracle",
    "import sam2",
    "from sam2",
    "transformers",
    "import cv2",
)


def markers_for(path: str) -> set[str]:
    """The ``slow`` / ``oracle`` markers every test of the module at ``path`` gets."""
    name = os.path.splitext(os.path.basename(path))[0]
    with open(path, encoding="utf-8") as f:
        text = f.read()
    found = {"slow"} if name in SLOW_MODULES else set()
    if any(token in text for token in _ORACLE_IMPORTS):
        found.add("oracle")
    return found


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests ``slow`` and ``oracle`` by their module (see :func:`markers_for`)."""
    cache: dict[str, set[str]] = {}
    for item in items:
        path = str(item.path)
        if path not in cache:
            cache[path] = markers_for(path)
        for name in sorted(cache[path]):
            item.add_marker(name)


@pytest.fixture
def official_connected_components() -> Iterator[None]:
    """Patch the official ``get_connected_components`` with the OpenCV one for one test."""
    from reference.official import patched_connected_components

    with patched_connected_components():
        yield


# ------------------------------------------------------------------ CLI fixtures (test_cli, test_cli_parity)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A small official-format checkpoint (seeded weights, seed 6) and its yaml beside it."""
    from masklet.checkpoints import config_from_official, save_official_yaml
    from reference.official import SMALL, build_official_model, official_model_dict, save_official_checkpoint

    folder = tmp_path_factory.mktemp("ckpt")
    model_dict = official_model_dict("sam2.1-hiera-tiny", **SMALL)
    save_official_checkpoint(build_official_model(model_dict, seed=6), folder / "small.pt")
    save_official_yaml(config_from_official(model_dict), folder / "small.yaml")
    return folder / "small.pt"


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    """A 5-frame 64x80 synthetic clip as a folder of PNGs, with a click and a box on frame 0."""
    import numpy as np
    from PIL import Image

    from masklet.synthetic import make_clip

    clip = make_clip(3, num_frames=5, size=(64, 80))
    folder = tmp_path_factory.mktemp("clip") / "frames"
    folder.mkdir()
    for t, frame in enumerate(clip.frames):
        Image.fromarray(frame).save(folder / f"{t:05d}.png")
    ys, xs = np.nonzero(clip.masks[0, 0])
    x0, y0, x1, y1 = clip.boxes[0, 1]
    point = f"0:1:point={xs[len(xs) // 2]},{ys[len(ys) // 2]}"
    box = f"0:2:box={x0:g},{y0:g},{x1:g},{y1:g}"
    return folder, [point, box]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI (``CI`` set, as ``.ci/run`` runs) a skipped test fails the run: CI installs every optional
    dependency (chromium, onnxruntime-web, OpenCV, the oracles), so a skip there is work left undone."""
    if not os.environ.get("CI"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped:
        reasons = sorted({str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else "" for report in skipped})
        print(f"\nCI: {len(skipped)} skipped test(s) fail the run: {reasons}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
