"""Plant one bug by hand (issue 15): copy src/ to a temp dir, apply one textual change, run pytest on it.

Usage: ``python tests/mutation/plant.py FILE OLD NEW -- PYTEST_ARGS``; prints KILLED or SURVIVED.
The worktree's src/ is never modified.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> int:
    path, old, new = sys.argv[1:4]
    args = sys.argv[sys.argv.index("--") + 1 :]
    tmp = Path(tempfile.mkdtemp(prefix="plant_"))
    shutil.copytree("src", tmp / "src", ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp / path
    source = target.read_text()
    if source.count(old) != 1:
        raise SystemExit(f"{old!r} occurs {source.count(old)} times in {path}")
    target.write_text(source.replace(old, new))
    env = dict(os.environ, PYTHONPATH=str(tmp / "src"))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", *args],
        capture_output=True,
        text=True,
        env=env,
    )
    print(result.stdout[-2500:])
    print("KILLED" if result.returncode else "SURVIVED", args)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
