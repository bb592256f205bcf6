"""``masklet serve``: SAM2 over HTTP (needs ``pip install 'masklet[server]'``).

The app is imported lazily, so the client can share :mod:`masklet.server.codec` without FastAPI.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Settings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "Settings":
        from .settings import Settings

        return Settings
    raise AttributeError(name)
