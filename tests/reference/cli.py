"""CLI helpers shared by the CLI tests (their fixtures, ``checkpoint`` and ``clip_folder``, are in conftest.py)."""

from __future__ import annotations

from masklet.cli import main


def run_track(folder, prompts, out, checkpoint, *extra):
    """``masklet track`` on ``folder`` with ``--prompt`` s and the small checkpoint; returns the exit code."""
    args = [
        "track",
        str(folder),
        "--out",
        str(out),
        "--checkpoint",
        str(checkpoint),
        "--config",
        str(checkpoint.with_suffix(".yaml")),
    ]
    for prompt in prompts:
        args += ["--prompt", prompt]
    return main([*args, *extra])
