"""The command line on bad input: every numeric option refused at parse time in one line, every flag with
help and a default, --version, and no torch import before the arguments are parsed."""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from analyses import cli

ROOT = Path(__file__).resolve().parents[1]

BAD = [  # (argv, the option the one-line error must name)
    (["train", "--batch-size", "0"], "--batch-size"), (["train", "--width", "0"], "--width"),
    (["train", "--width", "-1"], "--width"), (["train", "--flush-every", "0"], "--flush-every"),
    (["train", "--checkpoint-every", "-1"], "--checkpoint-every"), (["train", "--lr", "0"], "--lr"),
    (["train", "--lr", "nan"], "--lr"), (["train", "--lr", "inf"], "--lr"), (["train", "--momentum", "1"], "--momentum"),
    (["train", "--momentum", "-0.1"], "--momentum"), (["train", "--dampening", "1.5"], "--dampening"),
    (["train", "--weight-decay", "-0.0001"], "--weight-decay"), (["train", "--steps", "0"], "--steps"),
    (["train", "--epochs", "0"], "--epochs"), (["train", "--seed", "-1"], "--seed"),
    (["train", "--num-workers", "-1"], "--num-workers"), (["train", "--input-size", "0"], "--input-size"),
    (["train", "--input-shape", "3,0,8"], "--input-shape"), (["train", "--lr-gamma", "0"], "--lr-gamma"),
    (["train", "--warmup-steps", "-1"], "--warmup-steps"), (["train", "--checkpoint-log", "0"], "--checkpoint-log"),
    (["train", "--checkpoint-steps", "5,-1"], "--checkpoint-steps"), (["train", "--lr-milestones", "x"], "--lr-milestones"),
    (["train", "--threads", "-1"], "--threads"), (["train", "--batch-size", "1.5"], "--batch-size"),
    (["laws", "mlp", "--lr", "0"], "--lr"), (["laws", "mlp", "--lr", "nan"], "--lr"),
    (["laws", "mlp", "--lr", "-0.1"], "--lr"), (["laws", "mlp", "--momentum", "1"], "--momentum"),
    (["laws", "mlp", "--momentum", "1.5"], "--momentum"), (["laws", "mlp", "--dampening", "2"], "--dampening"),
    (["laws", "mlp", "--weight-decay", "-1"], "--weight-decay"), (["laws", "mlp", "--num-classes", "0"], "--num-classes"),
    (["analyze", "mlp", "--certify-batch", "0"], "--certify-batch"),
    (["analyze", "mlp", "--certify-samples", "-1"], "--certify-samples"), (["analyze", "mlp", "--width", "0"], "--width"),
    (["analyze", "mlp", "--threads", "x"], "--threads"), (["demo", "--steps", "0"], "--steps"),
    (["demo", "--width", "-1"], "--width"),
]


@pytest.mark.parametrize("argv,option", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_numeric_option_is_one_line_at_parse_time(argv, option, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"argument {option}" in err and "error:" in err, err


def test_good_boundary_values_parse():
    parser = cli.build_parser(["train"])
    args = parser.parse_args(["train", "--momentum", "0", "--dampening", "1", "--weight-decay", "0", "--lr", "1e-9",
                              "--seed", "0", "--warmup-steps", "0", "--checkpoint-steps", "0,5", "--threads", "0"])
    assert (args.momentum, args.dampening, args.weight_decay, args.threads) == (0.0, 1.0, 0.0, 0)
    args = cli.build_parser(["laws"]).parse_args(["laws", "mlp", "--momentum", "0.999", "--dampening", "1"])
    assert args.momentum == 0.999 and args.dampening == 1.0


def test_version(capsys):
    import tomllib

    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"nmech {version}"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_flag_has_help_and_shows_its_default():
    from analyses.argtypes import HelpFormatter

    subs = _subparsers(cli.build_parser(["train"]))
    assert set(subs) >= {"analyze", "laws", "train", "evaluate", "report", "figures", "demo"}
    missing = []
    for name, sub in subs.items():
        fmt = HelpFormatter(prog=name)
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                continue
            text = fmt._get_help_string(action) if action.option_strings else (action.help or "")
            if not action.help or (action.option_strings and "default" not in text):
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, missing


def test_help_and_usage_errors_import_no_torch():
    """`--help` must answer at once: nothing before parsing may import torch (its import alone takes
    seconds; the timing itself is in benchmarks/cli_help_time.py, not in a test)."""
    code = textwrap.dedent("""
        import sys
        from analyses import cli
        for argv in (["--help"], ["train", "--help"], ["laws", "--help"], ["analyze", "--help"],
                     ["evaluate", "--help"], ["demo", "--help"], ["train", "--lr", "-1"]):
            try:
                cli.main(argv)
            except SystemExit as exc:
                print("ROW", argv[0], exc.code, "torch" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    rows = [line.split()[1:] for line in out.stdout.splitlines() if line.startswith("ROW ")]
    assert len(rows) == 7, out
    assert all(r[2] == "False" for r in rows), rows
    assert [r[1] for r in rows] == ["0"] * 6 + ["2"]


def test_edited_analysis_cache_is_recomputed_not_a_key_error(tmp_path, monkeypatch):
    """The issue's case: an edited analysis cache gave `'loss'`."""
    from analyses import analysis_cache

    monkeypatch.setenv("NMECH_CACHE_DIR", str(tmp_path))
    data = {"loss": "cross_entropy", "counts": {"translation": 1}, "symmetries": []}
    analysis_cache.store("k", data)
    assert analysis_cache.load("k") == data
    path = next(tmp_path.glob("analysis-k.json"))
    path.write_text(path.read_text().replace('"loss": "cross_entropy", ', ""))
    assert analysis_cache.load("k") is None


# -- hygiene -------------------------------------------------------------------------------------------------
_CLOCKS = {"time", "perf_counter", "monotonic", "process_time", "time_ns", "perf_counter_ns", "monotonic_ns"}


def _clock_names(tree: ast.AST) -> set[str]:
    """Names assigned from an expression that reads a clock (t0 = time.time(), dt = time.time() - t0, ...)."""
    names: set[str] = set()
    for _ in range(3):  # propagate through a few assignments
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and _reads_clock(node.value, names):
                names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def _reads_clock(node: ast.AST, names: set[str]) -> bool:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute) and sub.func.attr in _CLOCKS \
                and isinstance(sub.func.value, ast.Name) and sub.func.value.id == "time":
            return True
        if isinstance(sub, ast.Name) and sub.id in names:
            return True
    return False


def test_no_wall_clock_assertion_in_tests():
    """Timings belong in benchmarks/: an assertion on elapsed time fails on a loaded machine."""
    found = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        tree = ast.parse(path.read_text())
        names = _clock_names(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Assert) and _reads_clock(node.test, names):
                found.append(f"{path.name}:{node.lineno}")
    assert not found, found


def test_license_matches_pyproject():
    text = (ROOT / "LICENSE").read_text()
    assert re.search(r'^license = "MIT"$', (ROOT / "pyproject.toml").read_text(), re.M)
    assert text.startswith("MIT License") and "WITHOUT WARRANTY OF ANY KIND" in text
