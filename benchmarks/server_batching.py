"""masklet serve with the prompt batcher off and on: N concurrent clients clicking on cached images.

Starts two ``masklet serve`` subprocesses on free 127.0.0.1 ports, one with ``--batch-max 1``
(batching off) and one with the batcher on (``--batch-max 8``, window ``--window-ms``, default 0),
then runs the same closed-loop load against them in interleaved rounds (off, on, off, on, ...),
so that both see the same machine noise, and prints per mode the clicks/s, p50 and p99 click
latency, the prompt requests per mask-decoder call (from ``/metrics``) and the on/off ratios.
On a small shared CPU machine the figures are noisy: compare the ratios of one run.

    PYTHONPATH=src python benchmarks/server_batching.py [--clients 8] [--seconds 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import io
import re
import threading
import time

import httpx
import numpy as np
from PIL import Image

import oracles  # noqa: F401  (tests/reference as the package `reference`)
from masklet.synthetic import make_scene
from reference.server import ServerProcess


def upload(url: str, images: list[np.ndarray]) -> list[str]:
    """Upload (and so encode) every image once; their ids."""
    ids = []
    for img in images:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        r = httpx.post(f"{url}/v1/images", content=buf.getvalue(), headers={"content-type": "image/png"}, timeout=120)
        r.raise_for_status()
        ids.append(r.json()["imageId"])
    return ids


def load(url: str, ids: list[str], hw: tuple[int, int], clients: int, seconds: float, seed: int) -> list[float]:
    """``clients`` threads clicking (one positive point, a random image) for ``seconds``: latencies."""
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(k: int) -> None:
        rng = np.random.default_rng(seed * 1000 + k)
        with httpx.Client(base_url=url, timeout=120) as http:
            while time.monotonic() < stop:
                point = rng.uniform(0, [hw[1], hw[0]]).tolist()
                body = {"pointCoords": [point], "pointLabels": [1], "lowResLogits": False}
                t = time.perf_counter()
                r = http.post(f"/v1/images/{ids[int(rng.integers(len(ids)))]}/predict", json=body)
                r.raise_for_status()
                with lock:
                    latencies.append(time.perf_counter() - t)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies


def per_call(url: str) -> float:
    """Prompt requests per mask-decoder call so far (1.0 with batching off)."""
    text = httpx.get(f"{url}/metrics").text
    requests = sum(float(v) for v in re.findall(r"^masklet_prompt_batch_size_sum\S* (\S+)$", text, re.MULTILINE))
    calls = sum(float(v) for v in re.findall(r"^masklet_prompt_decoder_calls_total\S* (\S+)$", text, re.MULTILINE))
    return requests / max(calls, 1.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="masklet-nano")
    ap.add_argument("--size", default="480x640", help="image HxW")
    ap.add_argument("--images", type=int, default=4, help="cached images the clicks are spread over")
    ap.add_argument("--clients", type=int, default=8, help="N concurrent clients")
    ap.add_argument("--seconds", type=float, default=4.0, help="per round and mode")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (off, on, off, on, ...)")
    ap.add_argument("--window-ms", type=float, default=0.0, help="--batch-window-ms of the batching server")
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    images = [make_scene(i + 1, size=(h, w)).image for i in range(args.images)]
    modes = {
        "off": ["--batch-max", "1"],
        "on": ["--batch-max", "8", "--batch-window-ms", str(args.window_ms)],
    }
    servers = {name: ServerProcess(args=["--model", args.model, *flags]) for name, flags in modes.items()}
    try:
        ids = {}
        for name, server in servers.items():
            server.start(timeout=300)
            ids[name] = upload(server.url, images)
            load(server.url, ids[name], (h, w), 2, 1.0, 0)  # warm-up
        lat: dict[str, list[float]] = {name: [] for name in modes}
        wall: dict[str, float] = {name: 0.0 for name in modes}
        for r in range(args.rounds):
            for name, server in servers.items():
                t = time.monotonic()
                lat[name] += load(server.url, ids[name], (h, w), args.clients, args.seconds, r + 1)
                wall[name] += time.monotonic() - t
        print(
            f"model {args.model}, {args.images} cached {h}x{w} images, {args.clients} concurrent clients, "
            f"{args.rounds} interleaved rounds of {args.seconds:g} s per mode"
        )
        print("(a noisy shared 2-core machine: read the ratios of one run, not the absolute figures)")
        stats = {}
        for name, server in servers.items():
            a = np.array(lat[name]) * 1000
            stats[name] = (len(a) / wall[name], float(np.percentile(a, 50)), float(np.percentile(a, 99)))
            rate, p50, p99 = stats[name]
            flags = " ".join(modes[name])
            print(
                f"  batching {name:3s} ({flags}): {rate:6.1f} clicks/s   p50 {p50:7.1f} ms   p99 {p99:7.1f} ms   "
                f"{per_call(server.url):.2f} requests per decoder call   ({len(a)} clicks)"
            )
        (r_off, p50_off, p99_off), (r_on, p50_on, p99_on) = stats["off"], stats["on"]
        print(f"  on / off: throughput x{r_on / r_off:.2f}   p50 x{p50_on / p50_off:.2f}   p99 x{p99_on / p99_off:.2f}")
    finally:
        for server in servers.values():
            server.stop()


if __name__ == "__main__":
    main()
