"""Bind the torchvision stand-in (``tests/reference/torchvision``) into the official ``sam2`` package.

No CPU torchvision wheel exists here, but ``sam2`` imports ``torchvision.transforms`` and
``torchvision.ops.boxes`` at module level. The stand-in is loaded under the name ``torchvision``
by its file location (no ``sys.path`` edit) only while the two ``sam2`` modules that import it load,
then withdrawn again, because transformers treats any importable ``torchvision`` as the real one
(it then imports ``InterpolationMode``, ``transforms.v2`` ...).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

STANDIN = Path(__file__).resolve().parent / "torchvision"
SAM2_TORCHVISION_USERS = ("sam2.utils.transforms", "sam2.automatic_mask_generator")


def bind_torchvision_standin() -> None:
    """Import the sam2 modules that need torchvision with the stand-in as ``torchvision``, then hide it."""
    if all(name in sys.modules for name in SAM2_TORCHVISION_USERS):
        return  # already bound (conftest, then a reference module)
    if importlib.util.find_spec("torchvision") is not None or importlib.util.find_spec("sam2") is None:
        return  # a real torchvision is installed, or there is no official sam2 to feed
    spec = importlib.util.spec_from_file_location(
        "torchvision", STANDIN / "__init__.py", submodule_search_locations=[str(STANDIN)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["torchvision"] = module
    try:
        spec.loader.exec_module(module)
        for name in SAM2_TORCHVISION_USERS:
            importlib.import_module(name)
    finally:
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
