"""masklet serve against in-process predictors: click latency, throughput, bytes on the wire.

Starts ``masklet serve`` (uvicorn, 127.0.0.1, a free port) in a subprocess and prints, in one run:
click latency over HTTP against ``ImagePredictor.predict`` in-process on a cached image (p50,
p99, the difference), clicks/s with 1, 4 and 8 concurrent clients (and p99/p50 at 4), bytes per
click, and bytes per embedding transfer (safetensors) against base64 JSON (pixano-inference's
``NDArrayFloat``) and JSON float lists.

    PYTHONPATH=src python benchmarks/server.py [--model masklet-nano] [--size 480x640] [--seconds 5]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

import masklet
from masklet.client import Client
from masklet.synthetic import make_scene


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(model: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "masklet", "serve", "--model", model, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start")


def pct(xs: list[float]) -> tuple[float, float]:
    a = np.array(xs) * 1000
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def clicks(predictor, n: int, seed: int, hw: tuple[int, int]) -> list[float]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        pt = rng.uniform(0, [hw[1], hw[0]], (1, 2))
        t = time.perf_counter()
        predictor.predict(pt, [1])
        out.append(time.perf_counter() - t)
    return out


def throughput(url: str, image: np.ndarray, clients: int, seconds: float) -> tuple[float, float, float]:
    lat: list[float] = []
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def run(seed: int) -> None:
        with Client(url) as c:
            p = c.image_predictor()
            p.set_image(image)
            rng = np.random.default_rng(seed)
            while time.monotonic() < stop:
                t = time.perf_counter()
                p.predict(rng.uniform(0, [image.shape[1], image.shape[0]], (1, 2)), [1])
                with lock:
                    lat.append(time.perf_counter() - t)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    p50, p99 = pct(lat)
    return len(lat) / (time.monotonic() - t0), p50, p99


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="masklet-nano")
    ap.add_argument("--size", default="480x640", help="image HxW")
    ap.add_argument("--clicks", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=5.0, help="per throughput run")
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    image = make_scene(1, size=(h, w)).image
    model = masklet.load_model(args.model)
    local = masklet.ImagePredictor(model)
    local.set_image(image)
    clicks(local, 10, 0, (h, w))
    proc, url = start(args.model)
    try:
        with Client(url) as c:
            remote = c.image_predictor()
            remote.set_image(image)
            clicks(remote, 10, 0, (h, w))
            lp50, lp99 = pct(clicks(local, args.clicks, 1, (h, w)))
            rp50, rp99 = pct(clicks(remote, args.clicks, 1, (h, w)))
            print(f"model {args.model}, image {h}x{w}, {args.clicks} clicks on a cached image")
            print(f"  in-process click   p50 {lp50:7.2f} ms   p99 {lp99:7.2f} ms")
            print(
                f"  HTTP click         p50 {rp50:7.2f} ms   p99 {rp99:7.2f} ms   (HTTP adds {rp50 - lp50:+.2f} ms to p50)"
            )
            ratios = {}
            for n in (1, 4, 8):
                rate, p50, p99 = throughput(url, image, n, args.seconds)
                ratios[n] = p99 / p50
                print(
                    f"  {n} client(s): {rate:7.1f} clicks/s   p50 {p50:7.2f} ms   p99 {p99:7.2f} ms   p99/p50 {p99 / p50:.2f}"
                )
            iid = remote._images[0][0]
            body = {"pointCoords": [[w / 3, h / 3]], "pointLabels": [1]}
            with_logits = c.http.post(f"/v1/images/{iid}/predict", json=body)
            masks_only = c.http.post(f"/v1/images/{iid}/predict", json={**body, "lowResLogits": False})
            print(
                f"  bytes per click: {len(masks_only.content)} (3 RLE masks + scores), "
                f"{len(with_logits.content)} with the low-res logits (base64 float32)"
            )
            st = c.http.get(f"/v1/images/{iid}/embeddings").content
            emb = local.get_embeddings()
            raw = sum(t.numel() * 4 for t in emb.levels)
            b64_json = len(
                json.dumps(
                    {
                        "imageEmbedding": [
                            {
                                "shape": list(t.shape),
                                "dtype": "float32",
                                "data": base64.b64encode(t.float().numpy().tobytes()).decode(),
                            }
                            for t in emb.levels
                        ]
                    }
                )
            )
            float_json = len(json.dumps([t.float().numpy().ravel().tolist() for t in emb.levels]))
            print(
                f"  embedding transfer: safetensors {len(st)} bytes vs raw tensors {raw} (ratio {len(st) / raw:.4f}); "
                f"base64 JSON {b64_json} ({b64_json / len(st):.2f}x); JSON floats {float_json} ({float_json / len(st):.2f}x)"
            )

            def verdict(ok: bool) -> str:
                return "met" if ok else "MISSED"

            print("targets:")
            print(f"  HTTP adds <= 5 ms to the in-process p50: {rp50 - lp50:+.2f} ms -> {verdict(rp50 - lp50 <= 5)}")
            print(f"  p99 <= 2x p50 with 4 clients: {ratios[4]:.2f}x -> {verdict(ratios[4] <= 2)}")
            print(
                f"  embedding transfer <= raw tensors: {len(st) / raw:.4f}x -> {verdict(len(st) <= raw)} "
                f"(safetensors header {len(st) - raw:+d} bytes)"
            )
    finally:
        proc.terminate()
        proc.wait(20)


if __name__ == "__main__":
    main()
