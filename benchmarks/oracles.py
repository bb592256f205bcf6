"""The test oracles (``tests/reference``) for the benchmarks, importable as the package ``reference``.

A benchmark runs as ``python3 benchmarks/x.py`` with masklet installed (or ``PYTHONPATH=src``);
importing this sibling module loads ``tests/reference`` by its location, without editing
``sys.path``. ``reference.official`` binds the torchvision stand-in the official sam2 needs.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REFERENCE = Path(__file__).resolve().parents[1] / "tests" / "reference"


def load_reference() -> ModuleType:
    """The ``reference`` package from ``tests/reference`` (loaded once, then taken from sys.modules)."""
    if "reference" in sys.modules:
        return sys.modules["reference"]
    spec = importlib.util.spec_from_file_location(
        "reference", REFERENCE / "__init__.py", submodule_search_locations=[str(REFERENCE)]
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"no test oracles at {REFERENCE}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["reference"] = module
    spec.loader.exec_module(module)
    return module


load_reference()
