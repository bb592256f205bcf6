"""Score mutmut's generated mutants of one module directly (issue 15 mutation gate).

mutmut 3.8.1 generates the mutants (``mutants/src/...`` with trampolines) but, on this repo, its
stats phase records no test hits and it stops with "could not find any test case for any
mutant". This driver skips that phase: it imports torch, pytest and the mutated module once,
then forks one child per mutant with ``MUTANT_UNDER_TEST`` set (the trampolines' own switch)
and runs the module's fast tests there; a failing run kills the mutant.

Usage: ``python tests/mutation/run_mutants.py MODULE [--timeout S]`` after
``python tests/mutation/run_mutmut.py MODULE`` created ``build/mutation/MODULE/mutants``.
Writes ``build/mutation/MODULE/scores.json`` (killed / survived per mutant).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
from run_mutmut import MODULES  # this script's folder is on the path when it runs


def mutant_names(path: Path, module: str) -> list[str]:
    """``module.x_func__mutmut_N`` for every generated mutant in ``path``."""
    names = re.findall(r"^\s*def (x\w+__mutmut_\d+)\(", path.read_text(), flags=re.M)  # methods: xǁClassǁname
    return [f"{module}.{n}" for n in names]


def run_one(name: str, tests: list[str], timeout: float) -> str:
    pid = os.fork()
    if pid == 0:  # child: the trampolines read MUTANT_UNDER_TEST at call time
        os.environ["MUTANT_UNDER_TEST"] = name
        import pytest

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os._exit(int(pytest.main(["-x", "-q", "-p", "no:cacheprovider", *tests])))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return "survived" if os.waitstatus_to_exitcode(status) == 0 else "killed"
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return "timeout"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("module", choices=sorted(MODULES))
    parser.add_argument(
        "--reverse", action="store_true", help="last mutant first (a second runner can start at the end)"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant (a timeout counts as killed)")
    args = parser.parse_args()
    sources, tests = MODULES[args.module]
    work = ROOT / "build" / "mutation" / args.module / "mutants"
    paths = os.pathsep.join([str(work / "src"), str(work / "tests")])
    if os.environ.get("MASKLET_MUTANT_PATHS") != paths:  # run again with the mutated copy first on the path
        env = {**os.environ, "MASKLET_MUTANT_PATHS": paths}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (paths, os.environ.get("PYTHONPATH")) if p)
        os.execve(sys.executable, [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]], env)
    os.chdir(work)
    results: dict[str, str] = {}
    for source in sources:
        rel = Path(source).relative_to("src")
        module = ".".join(rel.with_suffix("").parts)
        __import__(module)  # imported once here, inherited by every child
        import pytest  # noqa: F401

        import conftest  # noqa: F401  (tests/conftest.py: binds the torchvision stand-in, imports sam2 once)

        # the setup proves itself: unmutated tests pass, and "fail" (every trampoline raises) is caught
        assert run_one("", tests, args.timeout) == "survived", "the tests fail without any mutant"
        assert run_one("fail", tests, args.timeout) == "killed", "the tests never reach the mutated module"
        names = mutant_names(work / source, module)
        for name in reversed(names) if args.reverse else names:
            results[name] = run_one(name, tests, args.timeout)
            print(results[name], name, flush=True)
    killed = sum(v != "survived" for v in results.values())
    score = killed / len(results) if results else None
    summary = {
        "module": args.module,
        "mutants": len(results),
        "killed": killed,
        "score": score,
        "survivors": sorted(k for k, v in results.items() if v == "survived"),
    }
    (work.parent / ("scores_reverse.json" if args.reverse else "scores.json")).write_text(
        json.dumps({"summary": summary, "results": results}, indent=2)
    )
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
