"""Planted one-line bugs, each applied to a *copy* of the tree; the relevant tests must fail on every one.

Why: a suite is only as good as the bugs it catches (issue 12). Each mutation is anchored by an exact
source string that must occur exactly once — a missing or ambiguous anchor stops the script with a
non-zero exit, so it can never silently test nothing. The unmutated copy must pass each test subset
first (otherwise "caught" would mean nothing). Runs with CI=1 (derandomized Hypothesis examples) and
one torch thread. Usage::

    python tools/mutants.py [--only NAME ...] [--list] [--timeout S]

Exit status 0 only when the baseline passes and every mutant is caught. Results: docs/testing.md.
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
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTEST = ["-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-p", "no:logging"]
ANALYZER = ["tests/test_props_analyzer.py", "-k", "soundness"]
CERTIFY = ["tests/test_props_analyzer.py", "-k", "json or tampered"]
LAWS = ["tests/test_props_laws.py", "-k", "exact_laws"]


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    anchor: str
    replacement: str
    tests: tuple[str, ...]


MUTANTS = [
    Mutant("false homogeneity: tanh/gelu/sigmoid/... read as positively homogeneous",
           "symmetry_engine/graph/op_semantics.py",
           'OpSemantics("block", False, False, "not positively homogeneous")',
           'OpSemantics("unary", True, False, "not positively homogeneous")', tuple(ANALYZER)),
    Mutant("false shift-equivariance: ReLU passes a bias shift on to a normalizer",
           "symmetry_engine/graph/op_semantics.py",
           'OpSemantics("unary", True, False, "positively homogeneous activation")',
           'OpSemantics("unary", True, True, "positively homogeneous activation")', tuple(ANALYZER)),
    Mutant("false shift-equivariance of pooling: windows that see different shifts pass them on",
           "symmetry_engine/graph/shift.py",
           "if not out.pure and not self._const(sh, dims, nd):",
           "if False:",
           tuple(ANALYZER)),
    Mutant("certification accepts anything",
           "symmetry_engine/graph/certify.py",
           "ok = g_rel <= GRAD_TOL and (single <= LOSS_TOL if single is not None else joint <= LOSS_TOL)",
           "ok = True", tuple(CERTIFY)),
    Mutant("dropped weight-decay term in the derived SGD update",
           "symmetry_engine/symbolic/optimizers.py",
           "direction = g if spec.decoupled else g + theta * LAM",
           "direction = g", tuple(LAWS)),
    Mutant("wrong reduction axis: axis-1 members read the tracker's axis-0 sums",
           "symmetry_engine/numeric/tracker_plan.py",
           "plan.offset[1] = plan.passes[0].cols.start",
           "plan.offset[1] = plan.passes[0].rows.start", tuple(LAWS)),
    Mutant("perturbed law coefficient: N_(n+1) scaled by 1 + 1e-6",
           "symmetry_engine/symbolic/discrete.py",
           'step = {"N": B(th1, th1)}',
           'step = {"N": B(th1, th1) * (1 + sp.Rational(1, 10**6))}', tuple(LAWS)),
    Mutant("dropped group member: producer biases left out of scale/rescale groups",
           "symmetry_engine/graph/scaling_layers.py",
           "members = [(wkey, 0)] + ([(self.pkey(b), 0)] if b is not None else [])",
           "members = [(wkey, 0)]", tuple(ANALYZER)),
    Mutant("swapped sign in a rescale group: consumer columns scaled by +1",
           "symmetry_engine/graph/scaling_layers.py",
           "self.incidence(key, use, waxis, w, int(s), -1)",
           "self.incidence(key, use, waxis, w, int(s), 1)", tuple(ANALYZER)),
]


def copy_tree(dst: Path) -> None:
    """Tracked and untracked-but-not-ignored files only (no venv, runs, caches)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for f in filter(None, files):
        src = ROOT / f
        if src.is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / f)


def apply(tree: Path, m: Mutant) -> None:
    path = tree / m.path
    text = path.read_text()
    n = text.count(m.anchor)
    if n != 1:
        raise SystemExit(f"mutants: anchor for {m.name!r} found {n} times in {m.path} (must be exactly once)")
    path.write_text(text.replace(m.anchor, m.replacement))


def run_tests(tree: Path, tests: tuple[str, ...], timeout: int) -> tuple[int, str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1", "CI": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("HYPOTHESIS_PROFILE", None)
    t0 = time.time()
    try:
        p = subprocess.run([sys.executable, *PYTEST, *tests], cwd=tree, env=env, capture_output=True, text=True,
                           timeout=timeout)
        rc, out = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired:
        rc, out = -1, "timeout"
    failed = re.findall(r"^FAILED (\S+)", out, re.M)
    return rc, (failed[0] if failed else out.strip().splitlines()[-1] if out.strip() else ""), time.time() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="substrings of mutant names to run")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per test run")
    args = ap.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.only or any(s in m.name for s in args.only)]
    if args.list:
        for m in chosen:
            print(f"{m.name}  [{m.path}]  tests: {' '.join(m.tests)}")
        return 0
    with tempfile.TemporaryDirectory(prefix="nmech-mutants-") as tmp:
        base = Path(tmp) / "base"
        copy_tree(base)
        for m in chosen:  # every anchor is checked before anything runs
            if (base / m.path).read_text().count(m.anchor) != 1:
                apply(base, m)  # raises with the message
        ok = True
        for tests in sorted({m.tests for m in chosen}):
            rc, last, dt = run_tests(base, tests, args.timeout)
            print(f"baseline  {' '.join(tests)}: rc {rc} ({dt:.0f} s) {'' if rc == 0 else last}", flush=True)
            ok &= rc == 0
        if not ok:
            print("mutants: the unmutated tree fails a subset; nothing can be concluded", file=sys.stderr)
            return 2
        caught = 0
        for i, m in enumerate(chosen):
            tree = Path(tmp) / f"m{i}"
            shutil.copytree(base, tree)
            apply(tree, m)
            rc, first, dt = run_tests(tree, m.tests, args.timeout)
            status = "CAUGHT" if rc not in (0, 5) else "MISSED"
            caught += status == "CAUGHT"
            print(f"{status}  {m.name}  ({dt:.0f} s)  by {first}", flush=True)
            shutil.rmtree(tree, ignore_errors=True)
        print(f"mutants: {caught}/{len(chosen)} caught")
        return 0 if caught == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
