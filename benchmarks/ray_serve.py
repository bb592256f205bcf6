"""Ray Serve scale-out, in one run: encode throughput with 1 and 2 replicas, and the per-click cost of the
Serve path (proxy -> ingress -> pinned replica) against plain ``masklet serve`` (uvicorn, one process),
per click and per frame of a live stream (WebSocket ``/v1/streams``, one object tracked).

    PYTHONPATH=src python3 benchmarks/ray_serve.py [--size 256] [--images 16] [--clicks 40] [--cpus 2]

Each replica gets one CPU and one torch thread; with ``--cpus 2`` on a 2-core machine two replicas can
at best double encode throughput (less when the cores are shared). Clicks run one at a time.
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import numpy as np

import oracles  # noqa: E402,F401  (tests/reference as the package `reference`)
from masklet.client import Client  # noqa: E402
from masklet.synthetic import make_clip, make_scene  # noqa: E402
from reference.server import ServerProcess, free_port  # noqa: E402


def encode_throughput(url: str, images: list[np.ndarray], clients: int) -> float:
    """Images encoded per second by ``clients`` concurrent uploaders (each image new to the server)."""
    todo = list(range(len(images)))
    lock = threading.Lock()

    def work() -> None:
        with Client(url, retries=20) as c:
            p = c.image_predictor()
            while True:
                with lock:
                    if not todo:
                        return
                    i = todo.pop()
                p.set_image(images[i])

    t0 = time.perf_counter()
    threads = [threading.Thread(target=work) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(images) / (time.perf_counter() - t0)


def click_ms(url: str, image: np.ndarray, clicks: int) -> tuple[float, float]:
    """p50 / p90 ms of one click on an uploaded image, one click at a time."""
    rng = np.random.default_rng(0)
    h, w = image.shape[:2]
    with Client(url) as c:
        p = c.image_predictor()
        p.set_image(image)
        p.predict([[w / 2, h / 2]], [1])  # warm
        lat = []
        for _ in range(clicks):
            t = time.perf_counter()
            p.predict(rng.uniform(0, [w, h], (1, 2)), [1])
            lat.append((time.perf_counter() - t) * 1000)
    return float(np.percentile(lat, 50)), float(np.percentile(lat, 90))


def stream_frame_ms(url: str, size: int, frames: int) -> float:
    """p50 ms of one frame of a live stream (one object tracked), one frame at a time."""
    clip = make_clip(7, num_frames=frames + 2, size=(size, size), num_objects=(1, 1))
    with Client(url) as c:
        tracker = c.stream_tracker()
        tracker.track(clip.frames[0])
        tracker.add_points(1, [[size / 2, size / 2]], [1])
        tracker.track(clip.frames[1])  # warm
        lat = []
        for frame in clip.frames[2:]:
            t = time.perf_counter()
            tracker.track(frame)
            lat.append((time.perf_counter() - t) * 1000)
        tracker.close()
    return float(np.percentile(lat, 50))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256, help="image side (pixels)")
    ap.add_argument("--images", type=int, default=16, help="images per throughput run")
    ap.add_argument("--clicks", type=int, default=40)
    ap.add_argument("--frames", type=int, default=12, help="timed frames of the live stream")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    ap.add_argument("--model", default="masklet-nano")
    args = ap.parse_args()

    import ray
    from ray import serve

    from masklet.server.ray_app import build_app
    from masklet.server.settings import Settings

    def images(seed: int) -> list[np.ndarray]:
        return [make_scene(seed + i, size=args.size).image for i in range(args.images)]

    print(
        f"model {args.model}, {args.size}x{args.size} images, {os.cpu_count()} visible cores, Ray cluster of {args.cpus} CPUs"
    )
    plain = ServerProcess(env={"MASKLET_MODELS": args.model, "OMP_NUM_THREADS": "1"}).start(timeout=120)
    try:
        encode_throughput(plain.url, images(5000)[:2], clients=2)  # warm, as for the replicas
        plain_tput = encode_throughput(plain.url, images(1000), clients=2)
        plain_click = click_ms(plain.url, images(0)[0], args.clicks)
        plain_frame = stream_frame_ms(plain.url, args.size, args.frames)
    finally:
        plain.stop()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url = f"http://127.0.0.1:{port}"
    rows = []
    try:
        for n in (1, 2):
            serve.run(
                build_app(Settings(models=[args.model]), replicas=n, num_cpus=1), name="masklet", route_prefix="/"
            )
            import httpx

            while len(httpx.get(f"{url}/v1/ray/replicas", timeout=60).json()["replicas"]) != n:
                time.sleep(0.5)
            encode_throughput(url, images(5000 + 100 * n)[: 2 * n], clients=2 * n)  # warm every replica
            rows.append(
                (
                    n,
                    encode_throughput(url, images(2000 + 100 * n), clients=2 * n),
                    click_ms(url, images(0)[0], args.clicks),
                    stream_frame_ms(url, args.size, args.frames),
                )
            )
    finally:
        serve.shutdown()
        ray.shutdown()
    print(f"{'path':28s} {'encode img/s':>12s} {'click p50 ms':>13s} {'click p90 ms':>13s} {'frame p50 ms':>13s}")
    print(
        f"{'masklet serve (1 process)':28s} {plain_tput:12.2f} {plain_click[0]:13.1f} {plain_click[1]:13.1f} "
        f"{plain_frame:13.1f}"
    )
    for n, tput, (p50, p90), frame in rows:
        print(f"{f'Ray Serve, {n} replica(s)':28s} {tput:12.2f} {p50:13.1f} {p90:13.1f} {frame:13.1f}")
    one, two = rows[0][1], rows[1][1]
    print(
        f"2 replicas / 1 replica encode: x{two / one:.2f}; Serve overhead (1 replica): "
        f"{rows[0][2][0] - plain_click[0]:+.1f} ms per click p50, {rows[0][3] - plain_frame:+.1f} ms per stream frame p50"
    )


if __name__ == "__main__":
    main()
