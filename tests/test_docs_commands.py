"""Every command in README.md and docs/user_guide.md runs, in order, and prints what the docs promise.

Commands are taken from the fenced code blocks (lines starting with ``nmech``, ``.venv/bin/nmech`` or
``make``; a line ending in ``\\`` continues on the next), run in a fresh directory per document through
``analyses.cli.main`` (``make demo`` through the recipe in the Makefile), and their output is checked per
sub-command. A command the checks do not know fails the test: add an expectation when you document a new
one. Inputs a command needs that no earlier command in the document makes are made by a fixture
(``make_inputs``): a tracked run for ``runs/mine``, checkpoints saved without the tracker for ``ckpts/`` (VGG on
generated CIFAR-10 pickles under ``data/cifar``) and ``my-ckpts/`` (the ``mypkg.models:make_net`` of the
guide, on digits); a command whose input is neither made nor known fails.

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
    (r"--total-steps \d+", "--total-steps 20", "a 39 000-step cosine schedule (the ckpts/ fixture trains 20 steps)"),
    (r"^(evaluate --checkpoints (?:(?!--batches).)*)$", r"\1 --batches 4", "16 replica steps per checkpoint"),
]


def doc_commands(path: Path) -> list[str]:
    """Command lines in the fenced code blocks of ``path`` (comments stripped, ``\\`` continuations joined)."""
    out = []
    for block in re.findall(r"```[\w-]*\n(.*?)```", path.read_text(), re.S):
        lines: list[str] = []
        for raw in block.splitlines():
            line = re.sub(r"\s+#\s.*$", "", raw).strip()
            if lines and lines[-1].endswith("\\"):
                lines[-1] = lines[-1][:-1].rstrip() + " " + line
            else:
                lines.append(line)
        out += [l for l in lines if re.match(r"(\.venv/bin/)?nmech\s|make\s", l)]
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
        steps = int(argv[argv.index("--steps") + 1])
        assert meta["closed"] and meta["steps_recorded"] == steps + 1
        if "--tensorboard" in argv:   # live scalars: one loss per step, read back from the event files
            loss = read_scalars(cwd / argv[argv.index("--tensorboard") + 1])["train/loss"]
            assert sorted(loss) == list(range(steps))
    elif cmd == "evaluate":
        ckpt = "--checkpoints" in argv
        if "--json" in argv:
            data = json.loads(out)
            assert data["groups"] and data["summary"]
            assert data["source"] == ("checkpoints" if ckpt else "run")
            if ckpt or "--strict" in argv:
                assert data["verdicts"]["broken"] == 0, data["verdicts"]
        else:
            assert "relative error" in out and re.search(r"^(scale|rescale)\s+\d+", out, re.M), out[:500]
            if ckpt:
                assert re.match(r"checkpoints \S+: \d+ checkpoints, steps \d+\.\.\d+", out) and \
                    "approximate: estimated from checkpoints" in out, out[:500]
        if "--report" in argv:
            report = cwd / argv[argv.index("--report") + 1]
            assert (report / "report.html").stat().st_size > 20_000 and (report / "report.md").stat().st_size > 1_000
            assert (report / "report.md").read_text().startswith("# Checkpoint evaluation" if ckpt else "# Run report")
    elif cmd in ("report", "demo"):
        m = re.search(r"^html report: (.+)$", out, re.M)
        assert m, out[-500:]
        page = Path(m.group(1)) if Path(m.group(1)).is_absolute() else cwd / m.group(1)
        assert page.stat().st_size > 20_000 and page.with_suffix(".md").exists()
        if "--tensorboard" in argv:
            n = int(re.search(r"^tensorboard: (\d+) scalars", out, re.M).group(1))
            back = read_scalars(cwd / argv[argv.index("--tensorboard") + 1])
            assert n > 0 and n == sum(len(v) for v in back.values())
    elif cmd == "figures":
        for name in ("figure 3:", "figure 4:"):
            path = re.search(rf"^{name} (.+)$", out, re.M).group(1)
            assert (cwd / path).stat().st_size > 10_000
    else:
        raise AssertionError(f"no expectation for `nmech {cmd}`: add one to tests/test_docs_commands.py")


def read_scalars(log_dir: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def own_loop_run(cwd: Path) -> None:
    """Stands in for the user guide's "your own training loop" (a tracked run at ``runs/mine``)."""
    from .report_fixtures import toy_run

    toy_run(cwd / "runs" / "mine", steps=12, every=6)


def write_cifar10(root: Path, per_batch: int = 64, seed: int = 0) -> None:
    """CIFAR-10's python pickles (``cifar-10-batches-py``) with generated images: a pattern per class plus
    noise, 10 classes, ``per_batch`` images in each of the five training batches and the test batch."""
    import pickle

    import numpy as np

    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    patterns = rng.integers(0, 255, (10, 3072))
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = rng.integers(0, 10, per_batch)
        data = np.clip(0.6 * patterns[labels] + 0.4 * rng.integers(0, 255, (per_batch, 3072)), 0, 255).astype(np.uint8)
        with open(folder / name, "wb") as fh:
            pickle.dump({"data": data, "labels": [int(v) for v in labels]}, fh)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, fh)


def vgg_cifar_checkpoints(cwd: Path) -> None:
    """``ckpts/`` and ``data/cifar`` of the guide's first checkpoint command: VGG-16-BN (width 1/8) trained
    20 steps without the tracker, with the optimizer and schedule the command describes (cosine over 20
    steps: the reduced ``--total-steps``), checkpoints at 0, 5, 10, 15, 20."""
    import shutil

    from analyses.cli import main

    write_cifar10(cwd / "data" / "cifar")
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["train", "vgg16_bn", "--width", "0.125", "--dataset", "cifar10", "--data-path", "data/cifar",
                     "--batch-size", "128", "--lr", "0.1", "--momentum", "0.9", "--weight-decay", "5e-4",
                     "--schedule", "cosine", "--steps", "20", "--checkpoint-every", "5", "--checkpoint-steps", "0",
                     "--no-track", "--no-progress", "--out", "runs/ckpt-source"])
    assert code == 0
    shutil.copytree(cwd / "runs" / "ckpt-source" / "checkpoints", cwd / "ckpts")


MYPKG = '''"""The user's model package of the guide's checkpoint commands."""
import torch.nn as nn


def make_net():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(4),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(16, 10))
'''


def mypkg_checkpoints(cwd: Path, monkeypatch) -> None:
    """``mypkg/models.py`` (importable) and ``my-ckpts/``: its ``make_net`` trained 30 steps on digits by a
    plain loop without the tracker (SGD lr 0.05, batch 64: the command's flags), checkpoints every 10 steps."""
    import torch
    import torch.nn.functional as F

    from model_zoo.datasets import load_dataset

    (cwd / "mypkg").mkdir()
    (cwd / "mypkg" / "__init__.py").write_text("")
    (cwd / "mypkg" / "models.py").write_text(MYPKG)
    monkeypatch.syspath_prepend(str(cwd))
    from mypkg.models import make_net

    torch.manual_seed(0)
    model = make_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = load_dataset("digits").train.tensors
    g = torch.Generator().manual_seed(0)
    (cwd / "my-ckpts").mkdir()
    for step in range(31):
        if step % 10 == 0:
            torch.save({"step": step, "model": model.state_dict(), "optimizer": opt.state_dict()},
                       cwd / "my-ckpts" / f"step_{step}.pt")
        idx = torch.randint(0, len(x), (64,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()


def make_inputs(argv: list[str], cwd: Path, monkeypatch) -> None:
    """Make what a documented command reads when no earlier command of the document made it."""
    if "runs/mine" in argv and not (cwd / "runs" / "mine").exists():
        own_loop_run(cwd)
    if "--checkpoints" in argv:
        d = argv[argv.index("--checkpoints") + 1].rstrip("/")
        if not (cwd / d).exists():
            makers = {"ckpts": lambda: vgg_cifar_checkpoints(cwd), "my-ckpts": lambda: mypkg_checkpoints(cwd, monkeypatch)}
            assert d in makers, f"no fixture makes the checkpoint directory {d!r}: add one to make_inputs"
            makers[d]()
    if any(a.startswith("mypkg.") for a in argv) and str(cwd) not in __import__("sys").path:
        monkeypatch.syspath_prepend(str(cwd))



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
        make_inputs(argv, tmp_path, monkeypatch)
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
    guide = doc_commands(ROOT / "docs" / "user_guide.md")
    assert not any(c.endswith("\\") or "..." in c.split() for c in guide)   # continuations joined, no elisions
    multi = [c for c in guide if c.startswith("nmech evaluate --checkpoints ckpts/")]
    assert len(multi) == 1 and multi[0].endswith("--schedule cosine --total-steps 39000")
    for c in guide:
        shlex.split(c)   # every line parses (an unjoined continuation would not)
    assert to_argv(".venv/bin/nmech analyze vgg16 --json > v.json")[1] == "v.json"
    if not FULL:
        assert to_argv("nmech analyze vgg16_bn --certify")[0] == ["analyze", "vgg16_bn", "--certify", "--width", "0.125"]
        assert to_argv("nmech laws vgg16_bn --width 0.5 --lr 0.1")[0] == ["laws", "vgg16_bn", "--width", "0.5", "--lr", "0.1"]
        assert "--steps" in to_argv("make demo")[0]
    assert make_recipe("demo").startswith("nmech demo")
