"""Shared pytest setup: bind the torchvision stand-in into the official ``sam2`` package.

No CPU torchvision wheel exists here, but ``sam2`` imports ``torchvision.transforms`` and
``torchvision.ops.boxes`` at module level. ``tests/reference/torchvision`` is a minimal stand-in:
it is put on ``sys.path`` only while the two ``sam2`` modules that import it load, then withdrawn
again, because transformers treats any findable ``torchvision`` as the real one (it then imports
``InterpolationMode``, ``transforms.v2`` ...). The stand-in stays importable as
``reference.torchvision``; ``tests`` is put on ``sys.path`` so ``reference.official`` /
``reference.hf`` import from any test module.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Iterator

import pytest

_TESTS = os.path.dirname(os.path.abspath(__file__))
_REFERENCE = os.path.join(_TESTS, "reference")
_SAM2_TORCHVISION_USERS = ("sam2.utils.transforms", "sam2.automatic_mask_generator")


def _bind_torchvision_standin() -> None:
    """Import the sam2 modules that need torchvision with the stand-in visible, then hide it."""
    if importlib.util.find_spec("torchvision") is not None or importlib.util.find_spec("sam2") is None:
        return  # a real torchvision is installed, or there is no official sam2 to feed
    sys.path.insert(0, _REFERENCE)
    try:
        for name in _SAM2_TORCHVISION_USERS:
            importlib.import_module(name)
    finally:
        sys.path.remove(_REFERENCE)
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]


if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
_bind_torchvision_standin()


@pytest.fixture
def official_connected_components() -> Iterator[None]:
    """Patch the official ``get_connected_components`` with the OpenCV one for one test."""
    from reference.official import patched_connected_components

    with patched_connected_components():
        yield
