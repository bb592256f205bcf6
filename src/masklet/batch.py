"""``masklet batch amg|segment|track INPUT --out DIR``: label a dataset, locally or on Ray Data.

Each item (an image or a video) gives one JSON file ``DIR/<name>.json``, written atomically (temp file
then ``os.replace``), so a rerun after a crash or Ctrl-C skips the finished items and the final
outputs are byte-identical to an uninterrupted run. ``--ray`` maps the items over Ray Data actors
that each load the model once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InvalidInputError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_EXTS = (".mp4", ".mov", ".avi", ".mkv", ".webm")


@dataclass
class Item:
    """One unit of work: a name (the output file stem), its media path, and its prompts (segment/track)."""

    name: str
    path: str
    prompts: list[dict] = field(default_factory=list)


@dataclass
class Job:
    """What every worker needs to process items the same way (picklable for Ray)."""

    task: str
    model: str
    out: str
    device: str = "cpu"
    threads: int = 1
    amg_options: dict = field(default_factory=dict)


# ------------------------------------------------------------------ input discovery


def _safe_name(rel: str) -> str:
    return rel.replace(os.sep, "__").replace("/", "__")


def _images_in(folder: Path) -> list[Item]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    return [Item(_safe_name(str(p.relative_to(folder).with_suffix(""))), str(p)) for p in files]


def _coco_items(path: Path, image_root: Path | None, with_prompts: bool) -> list[Item]:
    """COCO: ``images[].file_name`` (relative to ``image_root`` or the JSON's folder), boxes as prompts."""
    try:
        doc = json.loads(path.read_text())
        images = doc["images"]
    except (ValueError, KeyError, TypeError) as err:
        raise InvalidInputError(f"{path}: not a COCO file with an 'images' list ({err})") from None
    root = image_root or path.parent
    boxes: dict[Any, list[dict]] = {}
    for ann in doc.get("annotations", []) if with_prompts else []:
        x, y, w, h = ann["bbox"]
        boxes.setdefault(ann["image_id"], []).append({"box": [x, y, x + w, y + h], "id": ann.get("id")})
    return [
        Item(
            _safe_name(str(Path(im["file_name"]).with_suffix(""))), str(root / im["file_name"]), boxes.get(im["id"], [])
        )
        for im in sorted(images, key=lambda im: str(im["file_name"]))
    ]


def _videos_in(folder: Path) -> list[Item]:
    """Video files, or frame folders; DAVIS layout (``JPEGImages/<res>/<seq>``) with first-frame
    ``Annotations/<res>/<seq>/*.png`` masks as prompts when no prompt file is given."""
    jpeg = (
        next((p for p in (folder / "JPEGImages").glob("*") if p.is_dir()), None)
        if (folder / "JPEGImages").is_dir()
        else None
    )
    if jpeg is not None:
        items = []
        for seq in sorted(p for p in jpeg.iterdir() if p.is_dir()):
            ann = folder / "Annotations" / jpeg.name / seq.name
            first = sorted(ann.glob("*.png"))[:1] if ann.is_dir() else []
            items.append(Item(seq.name, str(seq), [{"frame": 0, "mask_png": str(first[0])}] if first else []))
        return items
    items = [
        Item(_safe_name(str(p.relative_to(folder).with_suffix(""))), str(p))
        for p in sorted(folder.iterdir())
        if p.is_file() and p.suffix.lower() in VIDEO_EXTS
    ]
    items += [
        Item(p.name, str(p))
        for p in sorted(folder.iterdir())
        if p.is_dir() and any(f.suffix.lower() in IMAGE_EXTS for f in p.iterdir())
    ]
    return items


def discover(task: str, source: Path, prompts: Path | None = None, image_root: Path | None = None) -> list[Item]:
    """The items of ``source`` (folder, COCO JSON or DAVIS root) with prompts from ``prompts`` if given."""
    if not source.exists():
        raise InvalidInputError(f"{source}: no such file or folder")
    if task == "track":
        items = _videos_in(source) if source.is_dir() else [Item(_safe_name(source.stem), str(source))]
    elif source.suffix.lower() == ".json":
        items = _coco_items(source, image_root, with_prompts=task == "segment")
    elif source.is_dir():
        items = _images_in(source)
    else:
        items = [Item(_safe_name(source.stem), str(source))]
    if prompts is not None:
        if prompts.suffix.lower() == ".json" and "images" in (doc := json.loads(prompts.read_text())):
            by_name = {i.name: i.prompts for i in _coco_items(prompts, image_root, True)}
        else:
            doc = json.loads(prompts.read_text())
            if not isinstance(doc, dict):
                raise InvalidInputError(f"{prompts}: expected {{item name: [prompt, ...]}}")
            by_name = {
                _safe_name(str(Path(k).with_suffix(""))) if "." in Path(k).name else k: v for k, v in doc.items()
            }
        for item in items:
            item.prompts = list(by_name.get(item.name, []))
    if task in ("segment", "track"):
        missing = [i.name for i in items if not i.prompts]
        if len(missing) == len(items) and items:
            raise InvalidInputError(f"{task}: no prompts for any item (give --prompts FILE or a COCO/DAVIS input)")
    if not items:
        raise InvalidInputError(f"{source}: no {'videos' if task == 'track' else 'images'} found")
    return items


# ------------------------------------------------------------------ one item


def dumps(doc: Any) -> bytes:
    """Canonical JSON (sorted keys, compact, floats as Python repr): same input, same bytes."""
    return (json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n").encode()


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` either is complete or does not exist."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def output_path(job: Job, item: Item) -> Path:
    return Path(job.out) / f"{item.name}.json"


class Worker:
    """Holds the model (and the task's predictor) and turns items into output files."""

    def __init__(self, job: Job) -> None:
        import torch

        from . import load_model

        torch.set_num_threads(max(1, job.threads))
        self.job = job
        self.model = load_model(job.model, device=job.device)

    def amg(self, item: Item) -> dict:
        from .amg import MaskGenerator
        from .io import load_image

        records = MaskGenerator(self.model, output_mode="coco_rle", **self.job.amg_options).generate(
            load_image(item.path)
        )
        return {"image": item.name, "task": "amg", "annotations": records}

    def segment(self, item: Item) -> dict:
        import numpy as np

        from .image import ImagePredictor
        from .io import load_image
        from .masks import encode_rle

        pred = ImagePredictor(self.model)
        image = load_image(item.path)
        pred.set_image(image)
        out = []
        for i, p in enumerate(item.prompts):
            masks, scores, _ = pred.predict(p.get("points"), p.get("labels"), p.get("box"), multimask_output=False)
            out.append(
                {
                    "prompt": i,
                    "id": p.get("id"),
                    "score": float(np.asarray(scores).reshape(-1)[0]),
                    "segmentation": encode_rle(np.asarray(masks)[:1])[0],
                }
            )
        return {"image": item.name, "task": "segment", "height": image.shape[0], "width": image.shape[1], "masks": out}

    def track(self, item: Item) -> dict:
        import numpy as np
        from PIL import Image

        from .masks import encode_rle
        from .video import VideoPredictor

        vp = VideoPredictor(self.model)
        state = vp.init_state(item.path)
        for p in item.prompts:
            if "mask_png" in p:  # DAVIS: one palette PNG, an object per non-zero value
                ids = np.asarray(Image.open(p["mask_png"]))
                for obj in sorted(int(v) for v in np.unique(ids) if v):
                    vp.add_new_mask(state, int(p.get("frame", 0)), obj, ids == obj)
            elif "mask" in p:
                vp.add_new_mask(state, int(p["frame"]), int(p["obj_id"]), np.asarray(p["mask"], bool))
            else:
                vp.add_new_points_or_box(
                    state,
                    int(p.get("frame", 0)),
                    int(p["obj_id"]),
                    points=p.get("points"),
                    labels=p.get("labels"),
                    box=p.get("box"),
                    clear_old_points=False,
                )
        frames = []
        for fr in vp.propagate_in_video(state):
            masks = np.asarray(fr.masks.cpu() if hasattr(fr.masks, "cpu") else fr.masks).astype(bool)
            rles = encode_rle(masks.reshape(-1, *masks.shape[-2:])) if len(fr.obj_ids) else []
            frames.append({"frame": int(fr.frame_idx), "objects": {str(o): r for o, r in zip(fr.obj_ids, rles)}})
        return {"video": item.name, "task": "track", "frames": sorted(frames, key=lambda f: f["frame"])}

    def process(self, item: Item) -> str:
        """Compute and write one item unless its output exists; returns "done" or "skipped"."""
        path = output_path(self.job, item)
        if path.exists():
            return "skipped"
        doc = getattr(self, self.job.task)(item)
        write_atomic(path, dumps(doc))
        return "done"

    def __call__(self, batch: dict) -> dict:
        """Ray Data batch entry: columns of Item fields in, (name, status) out."""
        names = list(batch["name"])
        status = [
            self.process(Item(n, str(p), json.loads(pr))) for n, p, pr in zip(names, batch["path"], batch["prompts"])
        ]
        return {"name": names, "status": status}


# ------------------------------------------------------------------ runners


def pending(job: Job, items: list[Item]) -> list[Item]:
    """Items whose output does not exist yet (a rerun resumes from here)."""
    return [i for i in items if not output_path(job, i).exists()]


def run_local(job: Job, items: list[Item], progress: bool = True) -> dict[str, int]:
    """Process ``items`` in this process, with a progress bar on stderr."""
    todo = pending(job, items)
    counts = {"done": 0, "skipped": len(items) - len(todo)}
    if not todo:
        return counts
    worker = Worker(job)
    bar = _bar(len(items), counts["skipped"], progress)
    for item in todo:
        status = worker.process(item)
        counts[status] = counts.get(status, 0) + 1
        bar.update(1)
    bar.close()
    return counts


def run_ray(
    job: Job, items: list[Item], actors: int = 2, address: str | None = None, progress: bool = True
) -> dict[str, int]:
    """Process ``items`` on Ray Data: ``actors`` actors, each loading the model once."""
    try:
        import ray
        import ray.data
    except ImportError as err:
        raise InvalidInputError(f"--ray needs Ray Data: pip install 'masklet[ray]' ({err})") from None
    todo = pending(job, items)
    counts = {"done": 0, "skipped": len(items) - len(todo)}
    if not todo:
        return counts
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    rows = [{"name": i.name, "path": i.path, "prompts": json.dumps(i.prompts)} for i in todo]
    ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
        Worker,
        fn_constructor_args=(job,),
        batch_size=1,
        concurrency=actors,
        num_cpus=max(1, job.threads),
        num_gpus=1 if job.device.startswith("cuda") else 0,
    )
    bar = _bar(len(items), counts["skipped"], progress)
    for row in ds.iter_rows():
        counts[row["status"]] = counts.get(row["status"], 0) + 1
        bar.update(1)
    bar.close()
    return counts


def _bar(total: int, initial: int, enabled: bool) -> Any:
    try:
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, disable=not enabled, unit="item", file=sys.stderr)
    except ImportError:  # tqdm is optional: a silent stand-in

        class _Quiet:
            def update(self, n: int) -> None: ...
            def close(self) -> None: ...

        return _Quiet()


# ------------------------------------------------------------------ CLI


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``masklet batch`` on the CLI's subparsers."""
    p = sub.add_parser(
        "batch",
        help="label a dataset: automatic masks, prompted masks or tracks, resumable "
        "(--ray: on Ray Data, needs masklet[ray])",
    )
    p.add_argument("task", choices=["amg", "segment", "track"])
    p.add_argument("input", type=Path, help="folder of images or videos, a COCO JSON, or a DAVIS root (track)")
    p.add_argument("--out", type=Path, required=True, help="output folder: one <item>.json per image or video")
    p.add_argument(
        "--prompts", type=Path, help="prompts JSON ({item: [{points, labels, box} | {frame, obj_id, ...}]}) or COCO"
    )
    p.add_argument("--image-root", type=Path, help="folder the COCO file_names are relative to (default: the JSON's)")
    p.add_argument("--model", default="masklet-nano", help="model name or path (default masklet-nano)")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads per worker (default 1; same value, same bytes)"
    )
    p.add_argument("--points-per-side", type=int, help="amg: grid points per side (default 32)")
    p.add_argument("--ray", action="store_true", help="run on Ray Data actors that hold the model")
    p.add_argument("--actors", type=int, default=2, help="--ray: number of actors (default 2)")
    p.add_argument("--address", default=None, help="--ray: cluster address (default: a local one)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``masklet batch``; prints what was done and skipped."""
    from .checkpoints import recommended_amg_options

    amg_options: dict[str, Any] = {}
    if args.task == "amg":
        amg_options = dict(recommended_amg_options(args.model))
        if args.points_per_side is not None:
            amg_options["points_per_side"] = args.points_per_side
    items = discover(args.task, args.input, args.prompts, args.image_root)
    args.out.mkdir(parents=True, exist_ok=True)
    job = Job(args.task, args.model, str(args.out), args.device, args.threads, amg_options)
    start = time.perf_counter()
    if args.ray:
        counts = run_ray(job, items, args.actors, args.address, not args.no_progress)
    else:
        counts = run_local(job, items, not args.no_progress)
    print(
        f"masklet batch {args.task}: {counts.get('done', 0)} computed, {counts.get('skipped', 0)} skipped "
        f"(already done), {len(items)} items, {time.perf_counter() - start:.1f} s -> {args.out}"
    )
    return 0
