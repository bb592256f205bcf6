"""Score mutmut's generated mutants of one module directly (issue 15 mutation gate).

mutmut 3.8.1 generates the mutants (``mutants/src/...`` with trampolines) but, on this repo, its
stats phase records no test hits and it stops with "could not find any test case for any
mutant". This driver skips that phase:

1. generation only (mutmut's own steps, no test run) into ``build/mutation/MODULE/mutants``;
2. one coverage pass of the module's tests with one coverage context per pytest node id, which
   maps every line of the unmutated functions (``x_f__mutmut_orig``) to the tests reaching it;
3. per mutant, the line(s) it changes (a diff against ``x_f__mutmut_orig``) pick the tests, and a
   forked child runs only those (``MUTANT_UNDER_TEST`` set, ``-x``: stop at the first failure,
   a per-mutant timeout from the measured test durations);
4. a survivor is run once more against the module's whole test selection (tests sharing a
   cached fixture attribute its lines to the first of them only), so selection never
   overstates survival.

Usage: ``nice -n 19 python tests/mutation/run_mutants.py MODULE [--reuse]``.
Writes ``build/mutation/MODULE/scores.json``.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
from run_mutmut import MODULES, scratch_copy  # this script's folder is on the path when it runs

_GENERATE = (
    "from mutmut.__main__ import copy_also_copy_files, copy_src_dir, create_mutants, setup_source_paths\n"
    "from mutmut.mutation.trampoline import set_mutant_under_test\n"
    "set_mutant_under_test('mutant_generation')\n"
    "copy_src_dir(); copy_also_copy_files(); setup_source_paths(); print(create_mutants(1))\n"
)

# run in a child with cwd = the scratch copy: coverage of the mutated files, one context per test
_COVER = r"""
import json, sys, time
import coverage, pytest
files, tests, out = json.loads(sys.argv[1])
cov = coverage.Coverage(data_file=out + ".cov", include=files)
durations = {}
class Contexts:
    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        cov.switch_context(item.nodeid)
        start = time.perf_counter()
        yield
        durations[item.nodeid] = time.perf_counter() - start
        cov.switch_context("")
cov.start()
code = pytest.main(["-q", "-p", "no:cacheprovider", *tests], plugins=[Contexts()])
cov.stop()
cov.save()
data = cov.get_data()
lines = {}
for f in data.measured_files():
    for line, ctxs in data.contexts_by_lineno(f).items():
        lines[f"{f}:{line}"] = sorted(c for c in ctxs if c)
json.dump({"code": int(code), "durations": durations, "lines": lines}, open(out, "w"))
"""


def generate(name: str, folder: str) -> Path:
    """A fresh scratch copy (``build/mutation/<folder>``) with mutmut's mutants of ``name`` (no test run)."""
    sources, tests = MODULES[name]
    present = [p for p in sources if (ROOT / p).exists()]
    work = scratch_copy(folder, present, tests)
    subprocess.run([sys.executable, "-c", _GENERATE], cwd=work, check=True, stdout=subprocess.DEVNULL)
    return work


def mutated_files(work: Path, sources: list[str]) -> list[Path]:
    out: list[Path] = []
    for source in sources:
        path = work / "mutants" / source
        out += sorted(path.rglob("*.py")) if path.is_dir() else [path] if path.exists() else []
    return [p for p in out if "__mutmut_orig" in p.read_text()]


def functions(path: Path) -> dict[str, tuple[int, list[str]]]:
    """Every generated function (``x_f__mutmut_orig`` and mutants) -> (first line, its lines)."""
    source = path.read_text()
    text = source.splitlines()
    out = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and re.search(r"__mutmut_(\d+|orig)$", node.name):
            out[node.name] = (node.lineno, text[node.lineno - 1 : node.end_lineno])
    return out


def changed_lines(orig: tuple[int, list[str]], mutant: list[str]) -> list[int]:
    """Line numbers (of the unmutated copy) that the mutant changes."""
    first, body = orig
    lines: set[int] = set()
    matcher = difflib.SequenceMatcher(a=body[1:], b=mutant[1:], autojunk=False)
    for tag, a0, a1, _b0, _b1 in matcher.get_opcodes():
        if tag != "equal":
            lines.update(range(first + 1 + a0, first + 1 + max(a1, a0 + 1)))
    return sorted(lines)


def statement_starts(path: Path) -> dict[int, int]:
    """Line -> first line of the innermost statement holding it (coverage records only those)."""
    spans = sorted(
        (node.lineno, -(node.end_lineno or node.lineno))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.stmt)
    )
    out: dict[int, int] = {}
    for start, neg_end in spans:  # inner statements come later and overwrite their lines
        for line in range(start, -neg_end + 1):
            out[line] = start
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid`` (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_one(name: str, items: list, timeout: float) -> str:
    """Run ``items`` (collected pytest items) in a forked child with mutant ``name`` active."""
    from _pytest.runner import runtestprotocol

    pid = os.fork()
    if pid == 0:  # child: the trampolines read MUTANT_UNDER_TEST at call time
        os.environ["MUTANT_UNDER_TEST"] = name
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        code = 0
        try:
            for i, item in enumerate(items):
                nextitem = items[i + 1] if i + 1 < len(items) else None
                if any(r.failed for r in runtestprotocol(item, nextitem=nextitem, log=False)):
                    code = 1  # -x: stop at the first failing test
                    break
        except BaseException:
            code = 1
        os._exit(code)
    # the limit is on the child's CPU time, so a loaded machine (nice 19 among busy peers) does
    # not turn slow runs into "timeouts"; wall time is capped at 20x the limit
    deadline = time.monotonic() + 20 * timeout
    while time.monotonic() < deadline and cpu_seconds(pid) < timeout:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return "survived" if os.waitstatus_to_exitcode(status) == 0 else "killed"
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return "timeout"


class MutantLoop:
    """pytest plugin: after collection, score every mutant instead of running the tests once."""

    def __init__(self, args: argparse.Namespace, work: Path, files: list[Path], covered: dict) -> None:
        self.args, self.work, self.files, self.covered = args, work, files, covered
        self.results: dict[str, dict] = {}
        self.generated = 0
        self.on_result: Any = None
        self.previous: dict[str, dict] = {}

    def pytest_runtestloop(self, session) -> bool:
        args, covered = self.args, self.covered
        durations: dict[str, float] = covered["durations"]
        items = {item.nodeid: item for item in session.items}
        missing = sorted(set(durations) - set(items))
        assert not missing, f"collected items differ from the coverage pass: {missing[:3]}"
        everything = [items[t] for t in durations]  # the suite's own order (fixtures stay valid)
        assert run_one("", everything, 600) == "survived", "the tests fail without any mutant"
        assert run_one("fail", everything, 600) == "killed", "the tests never reach the mutated module"
        mutants_dir = self.work / "mutants"
        everyone = [(p, f) for p in self.files for f in functions(p) if not f.endswith("__mutmut_orig")]
        self.generated = len(everyone)
        # a seeded random order: a run cut short (CPU is scarce) has scored a uniform random sample
        random.Random(args.seed).shuffle(everyone)
        if args.sample:
            everyone = everyone[: args.start + args.sample]
        everyone = everyone[args.start :]  # continue a sample scored by an earlier run (other tests)
        full_limit = max(args.min_timeout, 3 * sum(durations.values()) + 10)
        cache: dict[Path, tuple[dict, dict[int, int]]] = {}
        for path, fname in everyone:
            if path not in cache:
                cache[path] = (functions(path), statement_starts(path))
            funcs, starts = cache[path]
            module = ".".join(path.relative_to(mutants_dir / "src").with_suffix("").parts)
            name = f"{module}.{fname}"
            if args.only is not None and name not in args.only and fname not in args.only:
                continue
            if name in self.previous:
                self.results[name] = self.previous[name]  # --resume: scored by an earlier run
                continue
            orig = funcs[re.sub(r"__mutmut_\d+$", "__mutmut_orig", fname)]
            lines = changed_lines(orig, funcs[fname][1])
            reach = {starts.get(n, n) for n in lines}
            chosen = {t for n in reach for t in covered["lines"].get(f"{path}:{n}", [])}
            if not chosen:  # a default argument or the def line: coverage saw it at import only
                body_lines = range(orig[0] + 1, orig[0] + len(orig[1]))
                chosen = {t for n in body_lines for t in covered["lines"].get(f"{path}:{n}", [])}
            selected = [items[t] for t in durations if t in chosen]
            if not selected:
                status = "not covered"
            else:
                limit = max(args.min_timeout, 5 * sum(durations[t] for t in chosen) + 5)
                status = run_one(name, selected, limit)
                if status == "survived":  # confirm against the whole selection
                    status = run_one(name, everything, full_limit)
            self.results[name] = {"status": status, "lines": lines, "tests": len(selected)}
            print(status, name, lines, flush=True, file=sys.__stdout__)
            if self.on_result is not None:
                self.on_result()
        return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("module", choices=sorted(MODULES))
    parser.add_argument(
        "--reuse", action="store_true", help="keep existing mutants and coverage (a rerun after new tests: no)"
    )
    parser.add_argument("--only", nargs="*", default=None, help="mutant names (e.g. the survivors of a previous run)")
    parser.add_argument("--sample", type=int, default=0, help="score the first N of the seeded order (0: all)")
    parser.add_argument("--start", type=int, default=0, help="skip the first N of the seeded order (scored earlier)")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument(
        "--min-timeout", type=float, default=10.0, help="CPU seconds per mutant at least (timeout = killed)"
    )
    parser.add_argument("--resume", action="store_true", help="keep the results of an earlier run")
    parser.add_argument("--label", default="", help="scratch folder build/mutation/MODULE-LABEL (runs side by side)")
    parser.add_argument("--tests", nargs="*", default=None, help="test files instead of the MODULES table's")
    args = parser.parse_args()
    sources, tests = MODULES[args.module]
    tests = args.tests or tests
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    folder = f"{args.module}-{args.label}" if args.label else args.module
    work = ROOT / "build" / "mutation" / folder
    if not (args.reuse and (work / "mutants").exists()):
        work = generate(args.module, folder)
    mutants_dir = work / "mutants"
    files = mutated_files(work, sources)
    cover = work / "coverage.json"
    env = dict(os.environ, PYTHONPATH=f"{mutants_dir / 'src'}{os.pathsep}{mutants_dir / 'tests'}")
    if not (args.reuse and cover.exists()):
        payload = json.dumps([[str(f) for f in files], tests, str(cover)])
        subprocess.run([sys.executable, "-c", _COVER, payload], cwd=mutants_dir, env=env, check=True)
    covered = json.loads(cover.read_text())
    assert covered["code"] == 0, "the tests fail without any mutant"

    if os.environ.get("PYTHONPATH") != env["PYTHONPATH"]:
        # run again with the mutated copy first on the import path (read at start-up; nothing edits
        # sys.path): the mutants and their coverage are built, so the second run reuses them
        argv = [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]]
        os.execve(sys.executable, argv if "--reuse" in argv else [*argv, "--reuse"], env)
    os.chdir(mutants_dir)
    import pytest

    loop = MutantLoop(args, work, files, covered)
    out = work / ("scores_only.json" if args.only is not None else "scores.json")

    def write() -> dict:
        results = loop.results
        survived = sorted(k for k, v in results.items() if v["status"] in ("survived", "not covered"))
        summary = {
            "module": args.module,
            "sources": sources,
            "tests": tests,
            "started": started,
            "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "generated": loop.generated,
            "seed": args.seed,
            "mutants": len(results),
            "killed": len(results) - len(survived),
            "score": (len(results) - len(survived)) / len(results) if results else None,
            "survivors": survived,
        }
        out.write_text(json.dumps({"summary": summary, "results": results}, indent=2))
        return summary

    if args.resume and out.exists():
        loop.previous = json.loads(out.read_text())["results"]
    loop.on_result = write
    pytest.main(["-q", "-p", "no:cacheprovider", *tests], plugins=[loop])
    summary = write()
    print(json.dumps({k: v for k, v in summary.items() if k != "survivors"}, indent=2))


if __name__ == "__main__":
    main()
