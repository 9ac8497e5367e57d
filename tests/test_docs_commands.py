"""Every command in README.md and docs/user_guide.md runs, in order, and prints what the docs promise.

Commands are taken from the fenced code blocks (lines starting with ``nmech``, ``.venv/bin/nmech`` or
``make``), run in a fresh directory per document through ``analyses.cli.main`` (``make demo`` through the
recipe in the Makefile), and their output is checked per sub-command. A command the checks do not know
fails the test: add an expectation when you document a new one.

Heavy: run at a reduced size by default (narrower VGGs, fewer steps, smaller inputs; see ``REDUCE``);
``NMECH_DOCS_FULL=1`` runs every command exactly as written.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "docs/user_guide.md"]
NOT_RUN = {"make test": "it runs this very suite"}
FULL = os.environ.get("NMECH_DOCS_FULL") == "1"
# (pattern, replacement, why) applied to the nmech argument string unless NMECH_DOCS_FULL=1
REDUCE = [
    (r"^(analyze|laws)((?:(?! --width).)*\bvgg\w*)(?!.*--width)(.*)$", r"\1\2\3 --width 0.125", "full-width VGG-16"),
    (r"--input-shape 3,64,64", "--input-shape 3,32,32", "64×64 ResNet-18 certification"),
    (r"^(train .*)--steps \d+", r"\1--steps 20", "300 training steps"),
    (r"^demo(.*)$", r"demo\1 --steps 12 --width 0.0625", "the demo's 900 steps"),
]


def doc_commands(path: Path) -> list[str]:
    """Command lines in the fenced code blocks of ``path`` (comments stripped)."""
    out = []
    for block in re.findall(r"```[\w-]*\n(.*?)```", path.read_text(), re.S):
        block = re.sub(r"\\\n\s*", " ", block)       # a command continued with a trailing backslash is one line
        for line in block.splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if re.match(r"(\.venv/bin/)?nmech\s|make\s", line):
                out.append(line)
    return out


def make_recipe(target: str) -> str:
    """The nmech command a Makefile target runs (``$(BIN)/nmech ...``)."""
    text = (ROOT / "Makefile").read_text()
    m = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", text, re.M)
    assert m, f"Makefile has no target {target}"
    lines = [l.strip() for l in m.group(1).splitlines() if "nmech" in l]
    assert len(lines) == 1, f"make {target} should run one nmech command, found {lines}"
    return re.sub(r"^\$\(BIN\)/", "", lines[0])


def to_argv(line: str) -> tuple[list[str], str | None]:
    """nmech arguments (reduced unless NMECH_DOCS_FULL=1) and a file stdout is redirected to, if any."""
    line = re.sub(r"^\.venv/bin/", "", line)
    if line.startswith("make "):
        line = make_recipe(line.split()[1])
    redirect = None
    if ">" in line:
        line, redirect = (part.strip() for part in line.split(">", 1))
    args = line[len("nmech "):]
    if not FULL:
        for pattern, repl, _ in REDUCE:
            args = re.sub(pattern, repl, args)
    return shlex.split(args), redirect


def check(argv: list[str], out: str, cwd: Path) -> None:
    """What the output must show, per sub-command."""
    cmd = argv[0]
    if cmd == "analyze":
        if "--json" in argv:
            data = json.loads(out)
            assert data["symmetries"] and set(data["counts"]) == {"translation", "scale", "rescale"}
        else:
            assert re.search(r"symmetries: translation \d+, scale \d+, rescale \d+", out), out[:500]
            if "--certify" in argv:
                m = re.search(r"certified: (\d+)/(\d+)", out)
                assert m and m.group(1) == m.group(2) and int(m.group(1)) > 0, out[-800:]
        if "--graph" in argv:
            import networkx as nx

            graph = cwd / argv[argv.index("--graph") + 1]
            g = nx.read_graphml(graph) if graph.suffix == ".graphml" else None
            assert graph.stat().st_size > 1000 and (g is None or g.number_of_nodes() > 0)
            assert graph.with_suffix(".png").stat().st_size > 1000 and graph.with_suffix(".svg").exists()
    elif cmd == "laws":
        if "--json" in argv:
            assert json.loads(out)["laws"]
        elif "--latex" in argv:
            assert r"\section*{Laws" in out and re.search(r"\\subsection\*{(translation|scale|rescale)}", out)
        else:
            assert "Laws for" in out and re.search(r"^== (translation|scale|rescale) ==", out, re.M) and "exact_law" in out
    elif cmd == "train":
        run = cwd / argv[argv.index("--out") + 1]
        meta = json.loads((run / "run.json").read_text())
        assert meta["closed"] and meta["steps_recorded"] == int(argv[argv.index("--steps") + 1]) + 1
    elif cmd == "evaluate":
        if "--json" in argv:
            data = json.loads(out)
            assert data["groups"] and data["summary"]
            if "--checkpoints" in argv:
                assert data["source"] == "checkpoints" and data["verdicts"]["broken"] == 0, data["verdicts"]
        else:
            assert "relative error" in out and re.search(r"^(scale|rescale)\s+\d+", out, re.M), out[:500]
        if "--report" in argv:
            report = cwd / argv[argv.index("--report") + 1]
            assert (report / "report.md").stat().st_size > 1_000 and (report / "report.html").exists()
    elif cmd in ("report", "demo"):
        m = re.search(r"^html report: (.+)$", out, re.M)
        assert m, out[-500:]
        page = Path(m.group(1)) if Path(m.group(1)).is_absolute() else cwd / m.group(1)
        assert page.stat().st_size > 20_000 and page.with_suffix(".md").exists()
    elif cmd == "figures":
        for name in ("figure 3:", "figure 4:"):
            path = re.search(rf"^{name} (.+)$", out, re.M).group(1)
            assert (cwd / path).stat().st_size > 10_000
    else:
        raise AssertionError(f"no expectation for `nmech {cmd}`: add one to tests/test_docs_commands.py")


def own_loop_run(path: Path) -> None:
    """Stands in for the user guide's "your own training loop" (a tracked run at ``path``)."""
    from .report_fixtures import toy_run

    toy_run(path, steps=12, every=6)


@pytest.mark.heavy
@pytest.mark.parametrize("doc", DOCS)
def test_documented_commands_run(doc, tmp_path, monkeypatch):
    from analyses.cli import main

    commands = doc_commands(ROOT / doc)
    assert commands, f"no commands found in {doc}"
    monkeypatch.chdir(tmp_path)
    ran = 0
    for line in commands:
        key = re.sub(r"^\.venv/bin/", "", line)
        if key in NOT_RUN:
            continue
        argv, redirect = to_argv(line)
        if "runs/mine" in argv and not (tmp_path / "runs" / "mine").exists():
            own_loop_run(tmp_path / "runs" / "mine")
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse
                code = exc.code
        out = buf.getvalue()
        assert code == 0, f"`{line}` exited {code}"
        if redirect:
            (tmp_path / redirect).write_text(out)
            out = (tmp_path / redirect).read_text()
        check(argv, out, tmp_path)
        ran += 1
    assert ran == len([c for c in commands if re.sub(r"^\.venv/bin/", "", c) not in NOT_RUN])


def test_extraction_and_reduction():
    cmds = doc_commands(ROOT / "README.md")
    assert "make demo" in cmds and not any(c.startswith("#") for c in cmds)
    assert to_argv(".venv/bin/nmech analyze vgg16 --json > v.json")[1] == "v.json"
    if not FULL:
        assert to_argv("nmech analyze vgg16_bn --certify")[0] == ["analyze", "vgg16_bn", "--certify", "--width", "0.125"]
        assert to_argv("nmech laws vgg16_bn --width 0.5 --lr 0.1")[0] == ["laws", "vgg16_bn", "--width", "0.5", "--lr", "0.1"]
        assert "--steps" in to_argv("make demo")[0]
    assert make_recipe("demo").startswith("nmech demo")
