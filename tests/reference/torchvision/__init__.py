"""Test-only stand-in for the few torchvision pieces the official ``sam2`` package imports.

It lives under ``tests/reference`` (put on ``sys.path`` by ``tests/conftest.py``) because no
CPU torchvision wheel is installable here. Only ``transforms.{ToTensor,Resize,Normalize}`` and
``ops.{nms,batched_nms,box_area,box_iou}`` exist, with torchvision's semantics.
"""

from __future__ import annotations

from . import ops, transforms

__version__ = "0.0.0+masklet.standin"

__all__ = ["__version__", "ops", "transforms"]
