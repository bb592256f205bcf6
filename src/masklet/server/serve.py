"""The ``masklet serve`` subcommand."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path
from types import FrameType


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``masklet serve`` on the CLI's subparsers."""
    p = sub.add_parser("serve", help="serve models over HTTP (needs masklet[server])")
    p.add_argument(
        "--model",
        action="append",
        default=None,
        metavar="NAME_OR_PATH",
        help="model to load once and serve; repeatable (default masklet-nano)",
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7463, help="port (default 7463)")
    p.add_argument("--device", default=None, help="torch device (default cpu, or MASKLET_DEVICE)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    p.add_argument(
        "--media-root",
        action="append",
        type=Path,
        default=None,
        dest="media_roots",
        help="folder whose files sessions may open by path; repeatable (default: none)",
    )
    p.add_argument("--cache-bytes", type=int, default=None, help="byte budget of the image cache")
    p.add_argument("--max-sessions", type=int, default=None, help="video sessions held at once")
    p.add_argument("--session-bytes", type=int, default=None, help="byte budget of the video sessions' tensors")
    p.add_argument("--max-body-bytes", type=int, default=None, help="largest request body")
    p.add_argument("--max-pixels", type=int, default=None, help="largest decoded image (pixels)")
    p.add_argument("--max-frames", type=int, default=None, help="most frames per video session")
    p.add_argument("--session-ttl", type=float, default=None, dest="session_ttl_s", help="idle session TTL (s)")
    p.add_argument(
        "--allow-url-fetch",
        action="store_true",
        default=None,
        help='fetch images given as {"url": ...} (public addresses only; off by default)',
    )
    p.add_argument(
        "--batch-max",
        type=int,
        default=None,
        metavar="N",
        help="prompt requests of one model decoded in one model call at most (default 8; 1 turns batching off)",
    )
    p.add_argument(
        "--batch-window-ms",
        type=float,
        default=None,
        metavar="MS",
        help="how long a prompt batch waits for more requests (default 0: none; requests queued while the "
        "model is busy are batched anyway)",
    )
    ray = p.add_argument_group('Ray Serve (needs masklet[ray]; see README "Scale-out on Ray")')
    ray.add_argument("--ray", action="store_true", help="serve through Ray Serve replicas with strict session affinity")
    scale = ray.add_mutually_exclusive_group()
    scale.add_argument("--replicas", type=int, default=1, help="fixed replica count (default 1)")
    scale.add_argument(
        "--autoscale", type=_autoscale, default=None, metavar="MIN:MAX", help="autoscale between MIN and MAX replicas"
    )
    ray.add_argument("--address", default=None, help="Ray cluster address (default: start a local one)")
    ray.add_argument("--ray-num-cpus", type=float, default=1.0, help="CPUs per replica (default 1)")
    p.set_defaults(run=run)


def _autoscale(text: str) -> tuple[int, int]:
    from .ray_app import parse_autoscale

    return parse_autoscale(text)


def run(args: argparse.Namespace) -> int:
    """Start uvicorn with the app; returns when the server stops (graceful on SIGINT / SIGTERM)."""
    import uvicorn

    from .app import create_app
    from .settings import Settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    overrides = {
        k: getattr(args, k)
        for k in (
            "device",
            "dtype",
            "media_roots",
            "cache_bytes",
            "max_sessions",
            "session_bytes",
            "max_body_bytes",
            "max_pixels",
            "max_frames",
            "session_ttl_s",
            "allow_url_fetch",
            "batch_max",
            "batch_window_ms",
        )
    }
    settings = Settings.from_env(models=args.model, **overrides)
    if not settings.api_keys and args.host not in ("127.0.0.1", "localhost", "::1"):
        logging.getLogger("masklet.server").error("no API keys set (MASKLET_API_KEYS) on a non-loopback host")
    if getattr(args, "ray", False):
        from .ray_app import run as run_ray

        return run_ray(args, settings)
    app = create_app(settings)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            """First signal: streams end with a final event and /ready turns 503, then uvicorn's
            graceful shutdown (in-flight requests finish) one second later; a second: at once."""
            ctx = app.state.ctx
            if ctx.shutting_down:
                return super().handle_exit(sig, frame)
            ctx.shutting_down = True
            loop = asyncio.get_event_loop()
            exit_later = super().handle_exit
            loop.call_soon_threadsafe(lambda: loop.call_later(1.0, exit_later, sig, frame))

    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="info", timeout_graceful_shutdown=30)
    Server(config).run()
    return 0
