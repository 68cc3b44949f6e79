"""Mutation check: do the tests fail when the code is wrong?

Each mutant in `tools/mutants.py` is one small, realistic bug written as a search/replace on one
source file. For each, this script copies the repository to a temporary folder, applies the
mutant there (the working tree is never touched), runs the mutant's test files with this Python
and `PYTHONPATH=<copy>/src`, and prints one line:

    killed     the tests failed: they notice this bug
    survived   the tests passed: they would let this bug through
    error      the mutant no longer applies (its `old` text is not found exactly once) or pytest
               could not run (collection error, timeout): fix the list or the environment

    python tools/mutate.py                   every mutant
    python tools/mutate.py cache-key-train-on-inputs loop-clip-inf     some of them
    python tools/mutate.py --list            ids and what each breaks
    python tools/mutate.py --baseline        first run each named test file unmutated (must pass)

Run it before resolving work that touches the loop, data, checkpoints or metrics (README, Tests).
Exit status 0 when every mutant run was killed. Not part of `make test`: it takes minutes.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from mutants import MUTANTS, Mutant  # noqa: E402

# what a copy needs to run the tests: sources, tests, their data and the pytest settings
COPIED = ["src", "tests", "tools", "recipes", "benchmarks", "docs", "pyproject.toml", "README.md"]


def occurrences(mutant: Mutant, root: Path = ROOT) -> int:
    """How often the mutant's `old` text occurs in its file under `root` (it applies when exactly once)."""
    path = root / mutant.file
    return path.read_text(encoding="utf-8").count(mutant.old) if path.is_file() else 0


def _copy_repository(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", "*.egg-info", "runs", "results")
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        elif src.is_file():
            shutil.copy2(src, dest / name)


def _environment(copy: Path) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join([str(copy / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def _check_import(copy: Path, env: dict) -> None:
    """The tests must import the copy's tunewright, not an installed one (an editable install of
    another tree would make every mutant 'survive')."""
    out = subprocess.run([sys.executable, "-c", "import tunewright; print(tunewright.__file__)"], cwd=copy, env=env,
                         capture_output=True, text=True)
    if not out.stdout.strip().startswith(str(copy)):
        sys.exit(f"mutate: the tests would import tunewright from {out.stdout.strip() or out.stderr.strip()!r}, "
                 f"not from the copy {copy}")


def _pytest(copy: Path, env: dict, tests: list[str], timeout: float) -> tuple[int | None, str]:
    """(pytest's exit status or None on timeout, the first failed test and pytest's summary line)."""
    cmd = [sys.executable, "-m", "pytest", "-x", "-p", "no:cacheprovider", *tests]
    try:
        proc = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout,
                              start_new_session=True)
    except subprocess.TimeoutExpired:
        return None, f"no result after {timeout:.0f} s"
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    summary = next((ln.strip("= ") for ln in reversed(lines) if re.search(r"\b(passed|failed|error|no tests)", ln)),
                   lines[-1] if lines else proc.stderr.strip()[-200:])
    failed = next((ln.split()[1] for ln in lines if ln.startswith(("FAILED ", "ERROR "))), None)
    return proc.returncode, f"{failed} ({summary})" if failed else summary


def run(mutants: list[Mutant], baseline: bool, timeout: float) -> int:
    results = {"killed": 0, "survived": 0, "error": 0}
    with tempfile.TemporaryDirectory(prefix="tunewright-mutants-") as tmp:
        copy = Path(tmp)
        _copy_repository(copy)
        env = _environment(copy)
        _check_import(copy, env)
        if baseline:
            tests = sorted({t for m in mutants for t in m.tests})
            code, summary = _pytest(copy, env, tests, timeout * 4)
            print(f"baseline   {summary}", flush=True)
            if code != 0:
                print("mutate: the named tests fail without any mutant; fix that first", file=sys.stderr)
                return 2
        width = max(len(m.id) for m in mutants)
        for m in mutants:
            path = copy / m.file
            original = path.read_text(encoding="utf-8")
            t0 = time.perf_counter()
            if original.count(m.old) != 1:
                outcome, summary = "error", f"`old` occurs {original.count(m.old)} times in {m.file}, not once"
            else:
                path.write_text(original.replace(m.old, m.new), encoding="utf-8")
                try:
                    code, summary = _pytest(copy, env, list(m.tests), timeout)
                finally:
                    path.write_text(original, encoding="utf-8")
                outcome = {0: "survived", 1: "killed"}.get(code, "error")
            results[outcome] += 1
            print(f"{outcome:<10} {m.id:<{width}}  {summary} ({time.perf_counter() - t0:.0f} s; {' '.join(m.tests)})",
                  flush=True)
    total = sum(results.values())
    print(f"total: {total} mutants, {results['killed']} killed, {results['survived']} survived, "
          f"{results['error']} errors")
    return 0 if results["killed"] == total else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ids", nargs="*", help="mutant ids to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--baseline", action="store_true", help="first run the named tests without mutants")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per mutant's test run (default 900)")
    args = parser.parse_args(argv)
    by_id = {m.id: m for m in MUTANTS}
    unknown = [i for i in args.ids if i not in by_id]
    if unknown:
        parser.error(f"unknown mutant ids: {', '.join(unknown)} (see --list)")
    chosen = [by_id[i] for i in args.ids] if args.ids else MUTANTS
    if args.list:
        for m in chosen:
            print(f"{m.id:<36} {m.file}: {m.what}")
        return 0
    return run(chosen, args.baseline, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
