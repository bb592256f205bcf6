"""``masklet serve --ray``: the HTTP API on Ray Serve, with strict per-image / per-session affinity.

Layout: one light ingress deployment (the only router) forwards each HTTP request to a
``MaskletReplica`` (each holds the models and a full ``create_app`` server). Calls that name an
image id, video session or job go to the replica recorded for that id, through a request router
that never falls back to another live replica; stateless calls (uploads, new sessions) spread by
power of two choices. A replica that died leaves its ids to any other replica, which answers
``unknown_image`` / ``unknown_session``: the client then re-uploads / replays (client.py).

Live streams (WebSocket ``/v1/streams``): the ingress holds the client's socket; the replica picked at
connect runs the app's stream route on a socket fed by per-message calls pinned to it, so a stream
never changes replica. The ``ready`` event names the replica (``replica``, also the accept header);
when that replica goes away the stream ends with an error event of code ``stream_lost`` (close
1012) and the client opens a new stream and replays what it sent (client_stream.py).

The pieces: routing (ray_routing.py), the replica (ray_replica.py), the ingress (ray_ingress.py);
this module builds the Serve application from them and runs it.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

from ray import serve
from ray.serve.config import RequestRouterConfig

from .ray_ingress import MaskletIngress, label_metrics
from .ray_replica import MaskletReplica
from .ray_routing import PIN, REPLICA_HEADER, STREAM_LOST, ReplicaMapRouter, request_key
from .settings import Settings

__all__ = [
    "PIN",
    "REPLICA_HEADER",
    "STREAM_LOST",
    "MaskletIngress",
    "MaskletReplica",
    "ReplicaMapRouter",
    "app_builder",
    "build_app",
    "label_metrics",
    "parse_autoscale",
    "request_key",
    "run",
]

log = logging.getLogger("masklet.server.ray")


def parse_autoscale(text: str) -> tuple[int, int]:
    """``MIN:MAX`` -> (min, max), both positive with min <= max."""
    try:
        lo, hi = (int(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--autoscale: expected MIN:MAX, got {text!r}") from None
    if lo < 1 or hi < lo:
        raise argparse.ArgumentTypeError(f"--autoscale: expected 1 <= MIN <= MAX, got {text!r}")
    return lo, hi


def build_app(
    settings: Settings,
    replicas: int = 1,
    autoscale: tuple[int, int] | None = None,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    max_ongoing_requests: int = 8,
    autoscale_options: dict | None = None,
) -> Any:
    """The Serve application: ingress + ``MaskletReplica`` (fixed count or autoscaling MIN:MAX)."""
    opts: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": num_cpus, "num_gpus": num_gpus},
        "max_ongoing_requests": max_ongoing_requests,
        "request_router_config": RequestRouterConfig(
            request_router_class=ReplicaMapRouter  # type: ignore[arg-type]  # ray's pydantic-v1 compat model hides the field type
        ),
        "health_check_period_s": 5,
        "graceful_shutdown_timeout_s": 5,
    }
    if autoscale:
        opts["autoscaling_config"] = {
            "min_replicas": autoscale[0],
            "max_replicas": autoscale[1],
            "target_ongoing_requests": 2,
            "upscale_delay_s": 5,
            "downscale_delay_s": 60,
            **(autoscale_options or {}),
        }
    else:
        opts["num_replicas"] = replicas
    threads = max(1, int(num_cpus))
    replica = serve.deployment(name="MaskletReplica", **opts)(MaskletReplica).bind(settings, threads)
    ingress = serve.deployment(
        name="MaskletIngress",
        num_replicas=1,
        max_ongoing_requests=1000,
        ray_actor_options={"num_cpus": 0},
    )(serve.ingress()(MaskletIngress))
    return ingress.bind(replica)


def app_builder(args: dict) -> Any:
    """Entry for ``serve deploy`` configs (``import_path: masklet.server.ray_app:app_builder``): ``args`` takes
    ``models``, ``device``, ``dtype``, ``replicas``, ``autoscale`` ("MIN:MAX"), ``num_cpus``, ``num_gpus``."""
    args = dict(args or {})
    models = args.pop("models", None)
    settings = Settings.from_env(
        models=[models] if isinstance(models, str) else models,
        device=args.pop("device", None),
        dtype=args.pop("dtype", None),
    )
    auto = args.pop("autoscale", None)
    return build_app(
        settings,
        replicas=int(args.pop("replicas", 1)),
        autoscale=parse_autoscale(auto) if auto else None,
        num_cpus=float(args.pop("num_cpus", 1)),
        num_gpus=float(args.pop("num_gpus", 0)),
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """``masklet serve --ray``: start (or join) a Ray cluster, deploy, serve until Ctrl-C."""
    import ray

    ray.init(address=args.address, ignore_reinit_error=True, include_dashboard=False)
    serve.start(http_options={"host": args.host, "port": args.port})
    num_gpus = 1.0 if settings.device.startswith("cuda") else 0.0
    app = build_app(
        settings, replicas=args.replicas, autoscale=args.autoscale, num_cpus=args.ray_num_cpus, num_gpus=num_gpus
    )
    serve.run(app, name="masklet", route_prefix="/")
    log.info("masklet on Ray Serve at http://%s:%d", args.host, args.port)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
    return 0
