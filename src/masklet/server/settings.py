"""Server settings: every limit and switch of ``masklet serve``, from CLI flags or ``MASKLET_*`` env."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Settings:
    """What the server loads and which bounds it enforces (see the README section "Serving")."""

    models: list[str] = field(default_factory=lambda: ["masklet-nano"])
    device: str = "cpu"
    dtype: str = "float32"
    api_keys: list[str] = field(default_factory=list)
    cors_origins: list[str] = field(default_factory=list)
    media_roots: list[Path] = field(default_factory=list)
    max_body_bytes: int = 100 * 2**20
    max_pixels: int = 50_000_000
    max_frames: int = 2000
    cache_bytes: int = 1 * 2**30
    max_sessions: int = 16
    session_bytes: int = 4 * 2**30
    session_ttl_s: float = 1800.0
    allow_url_fetch: bool = False  # fetch {"url": ...} images (public addresses only)
    url_fetch_timeout_s: float = 10.0
    url_fetch_allow_loopback: bool = False  # tests only: lets a fetch reach 127.0.0.1 (a local test server)
    batch_max: int = 8  # prompt requests decoded in one model call at most (1: batching off)
    batch_window_ms: float = 0.0  # how long a prompt batch waits for more requests (0: only those queued)
    batch_max_objects: int = 64  # objects (decoder rows) in one mask-decoder call at most

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Defaults, then ``MASKLET_*`` environment variables, then ``overrides`` (CLI flags)."""
        env = os.environ
        s = cls()

        def csv(name):
            return [v.strip() for v in env[name].split(",") if v.strip()]

        if "MASKLET_MODELS" in env:
            s.models = csv("MASKLET_MODELS")
        s.device = env.get("MASKLET_DEVICE", s.device)
        s.dtype = env.get("MASKLET_DTYPE", s.dtype)
        if "MASKLET_API_KEYS" in env:
            s.api_keys = csv("MASKLET_API_KEYS")
        if "MASKLET_API_KEY_FILE" in env:
            s.api_keys += [k.strip() for k in Path(env["MASKLET_API_KEY_FILE"]).read_text().splitlines() if k.strip()]
        if "MASKLET_CORS_ORIGINS" in env:
            s.cors_origins = csv("MASKLET_CORS_ORIGINS")
        if "MASKLET_MEDIA_ROOTS" in env:
            s.media_roots = [Path(p) for p in csv("MASKLET_MEDIA_ROOTS")]
        for name in ("max_body_bytes", "max_pixels", "max_frames", "cache_bytes", "max_sessions", "session_bytes"):
            key = f"MASKLET_{name.upper()}"
            if key in env:
                setattr(s, name, int(env[key]))
        if "MASKLET_SESSION_TTL_S" in env:
            s.session_ttl_s = float(env["MASKLET_SESSION_TTL_S"])
        for name in ("allow_url_fetch", "url_fetch_allow_loopback"):
            key = f"MASKLET_{name.upper()}"
            if key in env:
                setattr(s, name, env[key].strip().lower() in ("1", "true", "yes", "on"))
        if "MASKLET_BATCH_MAX" in env:
            s.batch_max = int(env["MASKLET_BATCH_MAX"])
        if "MASKLET_BATCH_WINDOW_MS" in env:
            s.batch_window_ms = float(env["MASKLET_BATCH_WINDOW_MS"])
        if "MASKLET_BATCH_MAX_OBJECTS" in env:
            s.batch_max_objects = int(env["MASKLET_BATCH_MAX_OBJECTS"])
        if "MASKLET_URL_FETCH_TIMEOUT_S" in env:
            s.url_fetch_timeout_s = float(env["MASKLET_URL_FETCH_TIMEOUT_S"])
        for name, value in overrides.items():
            if value is not None:
                setattr(s, name, value)
        s.media_roots = [Path(p).resolve() for p in s.media_roots]
        return s
