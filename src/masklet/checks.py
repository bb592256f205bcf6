"""Argument predicates shared by every public boundary: "a number but not a bool", "an int but not a bool".

``bool`` is an ``int`` subclass in Python, so ``isinstance(True, int)`` holds; every option that
takes a count, an index or a threshold must refuse it explicitly. The callers build their own
error messages (they name the argument and what it accepts); object ids, checked alike by every
predictor and remote twin, get :func:`check_obj_id`.
"""

from __future__ import annotations

import numbers
from typing import TypeGuard

import numpy as np

from .errors import InvalidInputError


def is_real(value: object) -> TypeGuard[float]:
    """A real number (Python or NumPy int or float), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_int(value: object, *, numpy: bool = True) -> TypeGuard[int]:
    """An int (also a NumPy integer unless ``numpy=False``), not a bool."""
    kinds = (int, np.integer) if numpy else int
    return isinstance(value, kinds) and not isinstance(value, bool)


def check_obj_id(obj_id: object) -> None:
    """Raise unless ``obj_id`` is an int (numpy ints too, bools not)."""
    if not is_int(obj_id):
        raise InvalidInputError(f"obj_id: expected an int, got {obj_id!r}")


def check_sam2_model(model: object, memory_for: str | None = None) -> None:
    """Raise unless ``model`` is a masklet ``Sam2Model``; with ``memory_for`` (what it is for, e.g.
    "track video"), also unless its config has memory."""
    from .model import Sam2Model  # imported here, so this module stays a leaf that any module can use

    if not isinstance(model, Sam2Model):
        raise InvalidInputError(
            f"model: expected a masklet Sam2Model (see masklet.load_model), got {type(model).__name__}"
        )
    if memory_for is not None and model.config.num_maskmem == 0:
        raise InvalidInputError(f"model: this config has no memory (num_maskmem=0) and cannot {memory_for}")
