"""``masklet track``: objects through a video from clicks and boxes (COCO RLE JSON, DAVIS PNGs, overlay)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .common import add_model_options, add_server_option, check_inside, client, index, library_default, load_model


class Prompt(NamedTuple):
    """One ``--prompt``: a click (X, Y, LABEL) or a box (X0, Y0, X1, Y1) for an object on a frame."""

    frame: int
    obj: int
    kind: str  # "point" or "box"
    values: tuple[float, ...]
    text: str  # as given, for error messages


PROMPT_SYNTAX = "FRAME:OBJ:point=X,Y[,LABEL] or FRAME:OBJ:box=X0,Y0,X1,Y1 (OBJ in 1..255, LABEL 1 or 0)"
#: The HealthMonitor thresholds the command line offers, with their metavar and help.
_HEALTH = {
    "lost_threshold": ("P", "presence below this counts towards 'lost'"),
    "lost_frames": ("K", "frames of low presence or collapsed mask before 'lost'"),
    "low_confidence": ("P", "presence below this (but not lost) is 'low_confidence'"),
    "min_area_ratio": ("R", "a mask below R x its recent area counts towards 'lost'; 0 turns it off"),
    "score_drop": ("D", "an object score D logits below its recent level counts towards 'lost'; 0 turns it off"),
}


def parse_prompt(text: str) -> Prompt:
    """Parse ``FRAME:OBJ:point=X,Y[,LABEL]`` or ``FRAME:OBJ:box=X0,Y0,X1,Y1`` strictly."""

    def bad(why: str) -> argparse.ArgumentTypeError:
        return argparse.ArgumentTypeError(f"{text!r}: {why}; expected {PROMPT_SYNTAX}")

    parts = text.split(":")
    if len(parts) != 3 or "=" not in parts[2]:
        raise bad("expected FRAME:OBJ:KIND=VALUES")
    frame, obj, (kind, _, coords) = parts[0], parts[1], parts[2].partition("=")
    if not (frame.isascii() and frame.isdigit()):
        raise bad(f"FRAME {frame!r} is not an int >= 0")
    if not (obj.isascii() and obj.isdigit() and 1 <= int(obj) <= 255):
        raise bad(f"OBJ {obj!r} is not an int in 1..255")
    if kind not in ("point", "box"):
        raise bad(f"unknown kind {kind!r}")
    try:
        values = tuple(float(v) for v in coords.split(","))
    except ValueError:
        raise bad(f"coordinates {coords!r} are not numbers") from None
    if not all(math.isfinite(v) for v in values):
        raise bad(f"coordinates {coords!r} are not finite")
    if kind == "point" and len(values) not in (2, 3):
        raise bad(f"a point has 2 or 3 values, got {len(values)}")
    if kind == "point" and len(values) == 3 and values[2] not in (0, 1):
        raise bad(f"LABEL must be 1 (positive) or 0 (negative), got {coords.split(',')[2]!r}")
    if kind == "box" and len(values) != 4:
        raise bad(f"a box has 4 values, got {len(values)}")
    if kind == "box" and (values[0] > values[2] or values[1] > values[3]):
        raise bad("a box needs X0 <= X1 and Y0 <= Y1")
    return Prompt(int(frame), int(obj), kind, values, text)


def prompt_sets(prompts: Sequence[Prompt]) -> dict[tuple[int, int], dict]:
    """Group prompts by (frame, object), in order: ``{"points": [[x, y]...], "labels": [...], "box": ...}``."""
    from ..errors import InvalidInputError

    sets: dict[tuple[int, int], dict] = {}
    for p in prompts:
        entry = sets.setdefault((p.frame, p.obj), {"points": [], "labels": [], "box": None})
        if p.kind == "point":
            entry["points"].append(list(p.values[:2]))
            entry["labels"].append(int(p.values[2]) if len(p.values) == 3 else 1)
        elif entry["box"] is not None:
            raise InvalidInputError(
                f"--prompt {p.text!r}: a second box for frame {p.frame}, object {p.obj}; give one box per frame and object"
            )
        else:
            entry["box"] = list(p.values)
    return sets


def configure(sub: Any) -> None:
    """Register ``masklet track``; the health thresholds default to HealthMonitor's."""
    from ..video import HealthMonitor

    p = sub.add_parser(
        "track", help="track objects through a video from clicks and boxes (COCO RLE JSON, DAVIS PNGs, overlay video)"
    )
    p.add_argument("video", help="video file or folder of frames")
    p.add_argument(
        "--prompt",
        type=parse_prompt,
        action="append",
        required=True,
        metavar="FRAME:OBJ:KIND=VALUES",
        help="FRAME:OBJ:point=X,Y[,LABEL] (LABEL 1 positive, the default, or 0 negative) or "
        "FRAME:OBJ:box=X0,Y0,X1,Y1, in video pixels, OBJ in 1..255; repeatable, points of one "
        "frame and object accumulate",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    direction = p.add_mutually_exclusive_group()
    direction.add_argument("--reverse", action="store_true", help="track backward from the start frame")
    direction.add_argument(
        "--both-directions", action="store_true", help="track forward from the start frame, then backward from it"
    )
    p.add_argument(
        "--start", type=index, metavar="N", help="frame to start from (default: the earliest prompted frame)"
    )
    p.add_argument(
        "--max-frames",
        type=index,
        metavar="N",
        help="track at most N frames beyond the start frame (default: to the end of the video)",
    )
    add_model_options(p)
    add_server_option(p)
    p.add_argument("--no-video", action="store_true", help="do not write overlay.mp4 (which needs PyAV)")
    p.add_argument("--fps", type=float, default=24.0, metavar="F", help="frame rate of overlay.mp4 (default 24)")
    for name, (metavar, text) in _HEALTH.items():
        default = library_default(HealthMonitor, name)
        p.add_argument(
            f"--{name.replace('_', '-')}",
            type=type(default),
            default=default,
            metavar=metavar,
            help=f"{text} (default {default:g})",
        )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``masklet track`` and print what it tracked and wrote."""
    summary = run_track(args)
    ids = ", ".join(str(i) for i in summary["obj_ids"])
    print(
        f"tracked {summary['frames']} frame(s), {len(summary['obj_ids'])} object(s) (ids {ids}), "
        f"{summary['seconds_per_frame']:.3f} s/frame"
    )
    for name, path in summary["written"].items():
        print(f"  {name:12s} {path}")
    return 0


def run_track(args: argparse.Namespace) -> dict:
    """Write masks.json, masks/ and overlay.mp4 under ``--out``; returns a summary."""
    import os
    import shutil
    import tempfile
    import time
    from contextlib import ExitStack
    from importlib.util import find_spec

    from PIL import Image

    from ..errors import InvalidInputError
    from ..video import CocoRleWriter, DavisPngWriter, HealthMonitor, OverlayVideoWriter, VideoPredictor, open_frames
    from ..video.frames import IMAGE_EXTENSIONS

    sets = prompt_sets(args.prompt)
    health_options = {name: getattr(args, name) for name in _HEALTH}
    HealthMonitor(**health_options)  # check the options before any work
    lost_on: dict[int, list[int]] = {}  # frame -> ids of the objects lost there
    video_path = Path(args.video)
    if video_path.is_file() and video_path.suffix.lower() in IMAGE_EXTENSIONS:
        raise InvalidInputError(
            f"{args.video} is a single image; track expects a video file or a folder of frames "
            f"(for one image use: masklet segment {args.video} --point X,Y)"
        )
    if video_path.is_dir():
        check_frame_sizes(video_path)
    with open_frames(args.video) as frames:
        # check frame indices before loading the model, naming the option at fault
        n = len(frames)
        for p in args.prompt:
            if p.frame >= n:
                raise InvalidInputError(
                    f"--prompt {p.text!r}: frame {p.frame} is out of range; the video has {n} frames (0..{n - 1})"
                )
        start = args.start if args.start is not None else min(frame for frame, _ in sets)
        if start >= n:
            raise InvalidInputError(f"--start {start}: out of range; the video has {n} frames (0..{n - 1})")
        for p in args.prompt:
            check_inside(
                f"--prompt {p.text!r}", p.values[:2] if p.kind == "point" else p.values, frames.height, frames.width
            )

        if args.server:  # the same run on a masklet server
            predictor = client(args).video_predictor(args.model)
        else:
            predictor = VideoPredictor(load_model(args), progress=find_spec("tqdm") is not None)
        state = predictor.init_state(frames)
        for (frame_idx, obj_id), entry in sets.items():
            predictor.add_new_points_or_box(
                state,
                frame_idx,
                obj_id,
                points=entry["points"] or None,
                labels=entry["labels"] or None,
                box=entry["box"],
            )

        # write into a temporary folder beside --out and move the files in only when all succeeded
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{args.out.name}.", dir=args.out.parent))
        paths = {"masks.json": tmp / "masks.json", "masks/": tmp / "masks", "overlay.mp4": tmp / "overlay.mp4"}
        directions = [False, True] if args.both_directions else [args.reverse]
        done: set[int] = set()
        steps = 0
        try:
            with ExitStack() as stack:
                coco = stack.enter_context(CocoRleWriter(paths["masks.json"], video_name=Path(args.video).name))
                davis = stack.enter_context(DavisPngWriter(paths["masks/"]))
                overlay = (
                    None
                    if args.no_video
                    else stack.enter_context(OverlayVideoWriter(paths["overlay.mp4"], fps=args.fps, annotate=True))
                )
                # the overlay needs increasing frame indices: stream it only when tracking forward once
                streamed = overlay if directions == [False] else None
                began = time.perf_counter()
                for reverse in directions:
                    health = HealthMonitor(**health_options)
                    for result in predictor.propagate_in_video(state, start, args.max_frames, reverse, health=health):
                        logits = result.mask_logits.cpu()  # (N, 1, H, W); a later result of a frame replaces it
                        lost_on[result.frame_idx] = [i for i in result.obj_ids if health.is_lost(i)]
                        coco.write(result.frame_idx, result.obj_ids, logits, result.presence, result.events)
                        davis.write(result.frame_idx, result.obj_ids, logits)
                        if streamed is not None:
                            streamed.write(
                                result.frame_idx,
                                result.obj_ids,
                                logits,
                                state.frames[result.frame_idx],
                                lost=lost_on[result.frame_idx],
                            )
                        done.add(result.frame_idx)
                        steps += 1
                seconds = time.perf_counter() - began
                if overlay is not None and streamed is None:
                    # second pass in frame order, from the PNGs just written (one frame in memory at a time)
                    ids = np.array(state.obj_ids)
                    for frame_idx in sorted(done):
                        labels = np.array(Image.open(paths["masks/"] / f"{frame_idx:05d}.png"))  # (H, W) object ids
                        overlay.write(
                            frame_idx,
                            state.obj_ids,
                            labels[None] == ids[:, None, None],
                            state.frames[frame_idx],
                            lost=lost_on.get(frame_idx, []),
                        )
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        args.out.mkdir(parents=True, exist_ok=True)
        final = {name: args.out / path.name for name, path in paths.items()}
        for name, path in paths.items():
            if path.exists():
                if final[name].is_dir():
                    shutil.rmtree(final[name])
                os.replace(path, final[name])
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "frames": len(done),
        "obj_ids": state.obj_ids,
        "seconds_per_frame": seconds / steps if steps else 0.0,
        "written": {name: path for name, path in final.items() if path.exists()},
    }


def check_frame_sizes(folder: Path) -> None:
    """All frames of a folder must have one size; checked from the image headers before tracking."""
    from PIL import Image

    from ..errors import InvalidInputError
    from ..video.frames import FolderFrames

    paths = FolderFrames(folder).paths
    with Image.open(paths[0]) as first:
        size = first.size
    for path in paths[1:]:
        with Image.open(path) as im:
            if im.size != size:
                raise InvalidInputError(
                    f"frames: {path.name} is {im.size[0]}x{im.size[1]} (WxH) but {paths[0].name} is "
                    f"{size[0]}x{size[1]}; all frames of a video must have one size"
                )
