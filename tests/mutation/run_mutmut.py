"""Mutation gate (issue 15): run mutmut 3 on one core module at a time, each with its fast tests.

mutmut reads one configuration per run, so each module runs in its own scratch copy of the repo
(``build/mutation/<module>``) with a generated ``setup.cfg``; the repo's own files stay as they are.
Usage: ``python tests/mutation/run_mutmut.py [module ...] [--max-children N]`` (all modules when
none are named); ``make mutation`` runs it. Scores go to ``build/mutation/scores.json``.
Too slow for CI: a full run takes hours on a laptop (see docs/mutation-report.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: core module -> (source paths under src/, fast tests that pin it). Paths that do not exist in
#: this checkout (e.g. before a package split lands) are skipped with a note.
MODULES: dict[str, tuple[list[str], list[str]]] = {
    "masks": (["src/masklet/masks.py"], ["tests/test_masks.py", "tests/test_masks_messages.py"]),
    "transforms": (["src/masklet/transforms.py"], ["tests/test_transforms.py"]),
    "prompts": (["src/masklet/prompts.py"], ["tests/test_prompts.py", "tests/test_prompts_messages.py"]),
    # the fast unit tests come first: a mutant they kill never waits for the slow parity tests
    "image": (
        ["src/masklet/image.py"],
        ["tests/test_image_messages.py", "tests/test_image_predictor.py", "tests/test_image_parity.py"],
    ),
    "checkpoints": (
        ["src/masklet/checkpoints"],
        [
            "tests/test_checkpoint_messages.py",
            "tests/test_weights.py",
            "tests/test_sam2_compat.py",
            "tests/test_hf_weights.py",
        ],
    ),
    "amg": (
        ["src/masklet/amg", "src/masklet/mask_nms.py"],
        [
            "tests/test_amg_grid_decoder.py",
            "tests/test_amg.py",
            "tests/test_amg_data.py",
            "tests/test_amg_gaps.py",
            "tests/test_transforms.py",  # the Upsampler's evaluation against the shared upscaling
            "tests/test_nano.py",  # the m2m and min-region-area parity cases on a trained model
        ],
    ),
    "video": (
        ["src/masklet/video/engine.py", "src/masklet/video/session.py"],
        [
            "tests/test_video_engine_gaps.py",
            "tests/test_video_predictor.py",
            "tests/test_video_gaps.py",
            "tests/test_video_grouping.py",
            "tests/test_video_parity.py",
        ],
    ),
}


def scratch_copy(name: str, sources: list[str], tests: list[str]) -> Path:
    """A copy of src/ and tests/ with a setup.cfg that mutates ``sources`` and runs ``tests``."""
    work = ROOT / "build" / "mutation" / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "mutants")
    for folder in ("src", "tests", "benchmarks"):
        shutil.copytree(ROOT / folder, work / folder, ignore=ignore)
    only = [p + "/*" if (ROOT / p).is_dir() else p for p in sources]
    cfg = ["[mutmut]", "source_paths=", "    src", "only_mutate="]
    cfg += [f"    {p}" for p in only]
    cfg += ["also_copy=", "    tests", "    benchmarks", "pytest_add_cli_args_test_selection="]
    cfg += [f"    {t}" for t in tests]
    cfg += ["pytest_add_cli_args=", "    -x", "    -q", "    -p", "    no:cacheprovider"]
    (work / "setup.cfg").write_text("\n".join(cfg) + "\n")
    return work


def run_module(name: str, max_children: int) -> dict:
    sources, tests = MODULES[name]
    present = [p for p in sources if (ROOT / p).exists()]
    if not present:
        return {"module": name, "skipped": f"none of {sources} in this checkout"}
    work = scratch_copy(name, present, tests)
    env = dict(os.environ, PYTHONPATH=f"{work / 'mutants' / 'src'}{os.pathsep}{work / 'tests'}")
    subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children)], cwd=work, env=env)
    out = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=work, env=env, capture_output=True, text=True
    ).stdout
    counts: dict[str, int] = {}
    survivors = []
    for line in out.splitlines():
        if ":" not in line:
            continue
        key, status = (s.strip() for s in line.rsplit(":", 1))
        counts[status] = counts.get(status, 0) + 1
        if status == "survived":
            survivors.append(key)
    killed = counts.get("killed", 0) + counts.get("timeout", 0)
    scored = killed + counts.get("survived", 0)
    return {"module": name, "counts": counts, "score": killed / scored if scored else None, "survivors": survivors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help=f"any of {sorted(MODULES)}")
    parser.add_argument("--max-children", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    args = parser.parse_args()
    unknown = sorted(set(args.modules) - set(MODULES))
    if unknown:
        parser.error(f"unknown modules {unknown}; expected any of {sorted(MODULES)}")
    results = [run_module(m, args.max_children) for m in (args.modules or list(MODULES))]
    path = ROOT / "build" / "mutation" / "scores.json"
    path.write_text(json.dumps(results, indent=2))
    for r in results:
        print(r["module"], r.get("skipped") or f"score {r['score']} {r['counts']}")


if __name__ == "__main__":
    main()
