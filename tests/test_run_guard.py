"""Run directories that are not lost: one writer at a time, no silent overwrite, one-line errors for bad
paths, SIGTERM handled like Ctrl-C, and a thread default that does not oversubscribe."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from model_zoo.train_cli import add_train_arguments, run_train
from model_zoo.training import TrainConfig, TrainingError, train
from symmetry_engine.numeric.runlog import RunWriter, read_run

ROOT = Path(__file__).resolve().parents[1]
ARGS0 = ["mlp", "--model-kw", "widths=[8]", "--dataset", "synthetic", "--input-size", "4", "--batch-size", "64",
         "--lr", "0.05", "--momentum", "0.9", "--weight-decay", "5e-4", "--deterministic", "--no-progress", "--seed", "1"]
ARGS = [*ARGS0, "--checkpoint-every", "7"]
CFG = dict(model="mlp", model_kwargs={"widths": [8]}, dataset="synthetic", input_size=4, batch_size=64, lr=0.05,
           momentum=0.9, weight_decay=5e-4, deterministic=True, progress=False, checkpoint_every=7, seed=1)


def _cli(*args: str, base: list[str] = ARGS) -> list[str]:
    return [sys.executable, "-m", "analyses.cli", "train", *base, *args]


# `nmech train` that stops with "set-up reached" if it ever gets to loading the data
_NO_SETUP = textwrap.dedent("""
    import sys
    import model_zoo.training as T

    def no_setup(*a, **k):
        raise SystemExit("set-up reached")

    T.load_dataset = no_setup
    from analyses import cli
    sys.exit(cli.main(sys.argv[1:]))
""")


def _cli_no_setup(*args: str) -> list[str]:
    return [sys.executable, "-c", _NO_SETUP, "train", *ARGS, *args]


def _tree(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_train_arguments(p)
    return p.parse_args(argv)


# -- one writer per run directory --------------------------------------------------------------------------
def test_second_trainer_is_refused_in_one_line_while_the_run_is_held(tmp_path):
    from symmetry_engine.numeric.runlock import RunLock

    run = tmp_path / "run"
    with RunLock(run, "test holder"):
        proc = subprocess.run(_cli("--steps", "5", "--out", str(run)), cwd=ROOT, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and f"is in use by pid {os.getpid()} (test holder)" in lines[0], proc.stderr
        assert sorted(p.name for p in run.iterdir()) == ["run.lock"]   # nothing written
    assert (run / "run.lock").read_bytes() == b""                       # released


def test_two_trainers_started_together_one_trains_and_the_run_evaluates(tmp_path):
    """A requeued job: two `nmech train` on one --out at once. Exactly one trains; the other exits 2 with
    one line naming it; the run the first wrote is complete and evaluates."""
    from symmetry_engine.numeric.evaluate import evaluate_run

    run, go = tmp_path / "run", tmp_path / "go"
    waiting = textwrap.dedent(f"""
        import os, sys, time
        from analyses import cli
        while not os.path.exists({str(go)!r}):
            time.sleep(0.01)
        sys.exit(cli.main(sys.argv[1:]))
    """)
    argv = ["train", *ARGS, "--steps", "40", "--out", str(run)]
    procs = [subprocess.Popen([sys.executable, "-c", waiting, *argv], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    time.sleep(0.5)
    go.touch()
    results = [(p.wait(timeout=600), *p.communicate()) for p in procs]
    codes = sorted(r[0] for r in results)
    assert codes == [0, 2], results
    loser = next(r for r in results if r[0] == 2)
    lines = loser[2].strip().splitlines()
    assert len(lines) == 1 and "is in use by pid" in lines[0] and "(nmech train)" in lines[0], loser[2]
    ev = evaluate_run(run)
    assert ev.meta["closed"] and ev.T == 40 and not any("checksum" in w for w in ev.warnings)
    assert all(not c.note for c in ev.checkpoints) and max(c.errors.get("translation", 0) for c in ev.checkpoints) < 1e-6


def test_tracker_writer_is_refused_while_another_process_writes(tmp_path):
    from symmetry_engine.symmetry import Member, Symmetry

    from symmetry_engine.numeric.layout import RecordLayout

    syms = [Symmetry("translation", (Member("b"),), "b")]
    w = RunWriter(tmp_path / "r", {}, syms, layout=RecordLayout(("translation",), ((0,),), 1))
    code = textwrap.dedent(f"""
        from symmetry_engine.numeric.layout import RecordLayout
        from symmetry_engine.numeric.runlog import RunWriter
        from symmetry_engine.numeric.runlock import RunLockedError
        from symmetry_engine.symmetry import Member, Symmetry
        try:
            RunWriter({str(tmp_path / 'r')!r}, {{}}, [Symmetry("translation", (Member("b"),), "b")], overwrite=True,
                      layout=RecordLayout(("translation",), ((0,),), 1))
        except RunLockedError as exc:
            print(exc)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert f"is in use by pid {os.getpid()} (tracker)" in out.stdout, out
    w.close()
    assert (tmp_path / "r" / "run.lock").read_bytes() == b""


def test_stale_lock_of_a_dead_process_is_named_and_taken_over(tmp_path):
    from symmetry_engine.numeric.runlock import RunLock

    run = tmp_path / "run"
    code = f"import os\nfrom symmetry_engine.numeric.runlock import RunLock\nRunLock({str(run)!r}, 'crashed job')\nos._exit(9)"
    dead = subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=120)
    assert dead.returncode == 9
    info = json.loads((run / "run.lock").read_text())
    messages: list[str] = []
    with RunLock(run, "next job", on_stale=messages.append) as lock:
        assert lock.stale is not None
    assert len(messages) == 1 and f"stale lock in {run} from pid {info['pid']} (crashed job)" in messages[0]
    with RunLock(run, "after a clean release", on_stale=messages.append):
        pass
    assert len(messages) == 1                           # a released lock is not stale


def test_lock_is_reentrant_within_a_process(tmp_path):
    from symmetry_engine.numeric.runlock import RunLock

    with RunLock(tmp_path / "r", "outer"):
        with RunLock(tmp_path / "r", "inner"):
            pass
        assert json.loads((tmp_path / "r" / "run.lock").read_text())["purpose"] == "outer"   # still held
    assert (tmp_path / "r" / "run.lock").read_bytes() == b""


# -- never overwrite without being asked ---------------------------------------------------------------------
def _tracker_api_run(run: Path) -> None:
    from analyses.report import write_report
    from symmetry_engine.numeric.evaluate import evaluate_run
    from symmetry_engine.numeric.tracker import Tracker
    from symmetry_engine.symmetry import Member, Symmetry

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    syms = [Symmetry("translation", (Member("0.bias"),), "0.bias")]
    tr = Tracker(model, opt, run, syms, flush_every=2)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    for _ in range(5):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    tr.close()
    write_report(evaluate_run(run), run / "report")


def test_train_refuses_a_tracker_api_run_and_leaves_every_byte(tmp_path, capsys):
    """The issue's case: `nmech train --out DIR` silently replaced a run written with the tracker API
    (no checkpoints/, so it looked empty) and left its report stale."""
    run = tmp_path / "api"
    _tracker_api_run(run)
    before = _tree(run)
    assert {"run.json", "stats.bin", "report/report.md"} <= set(before)
    assert run_train(_parse([*ARGS, "--steps", "5", "--out", str(run)])) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "written with the tracker API" in err[0] and "--overwrite" in err[0], err
    assert _tree(run) == before
    assert run_train(_parse([*ARGS, "--steps", "5", "--out", str(run), "--overwrite"])) == 0
    assert not (run / "report").exists()                                  # the stale report went with it
    meta = json.loads((run / "run.json").read_text())
    assert meta["train"]["steps"] == 5 and meta["closed"]


def test_own_run_without_checkpoint_restarts_but_another_config_is_refused(tmp_path):
    run = tmp_path / "run"
    train(TrainConfig(out=str(run), steps=5, **{**CFG, "checkpoint_every": None}), warn=lambda m: None)
    shutil.rmtree(run / "checkpoints")
    (run / "checkpoints.jsonl").unlink()                  # as if killed before its first checkpoint
    before = _tree(run)
    with pytest.raises(TrainingError, match=r"different configuration \(lr 0.05 → 0.1\)"):
        train(TrainConfig(out=str(run), steps=5, **{**CFG, "checkpoint_every": None, "lr": 0.1}))
    assert _tree(run) == before
    res = train(TrainConfig(out=str(run), steps=5, **{**CFG, "checkpoint_every": None}), warn=lambda m: None)
    assert res.resumed_from == 0 and read_run(run).closed


# -- bad paths: one specific line, before the slow set-up ----------------------------------------------------
@pytest.mark.parametrize("case,needle", [
    ("out_is_file", "is a file where a directory belongs"),
    ("parent_is_file", "is a file where a directory belongs"),
    ("checkpoints_is_file", "checkpoints is a file where a directory belongs"),
    ("run_json_is_dir", "run.json is a directory where a file belongs"),
])
def test_files_where_directories_belong(tmp_path, monkeypatch, case, needle):
    import model_zoo.training as T

    def no_setup(*a, **k):
        raise AssertionError("the slow set-up was reached")

    monkeypatch.setattr(T, "load_dataset", no_setup)
    out = tmp_path / "run"
    if case == "out_is_file":
        out.write_text("x")
    elif case == "parent_is_file":
        (tmp_path / "f").write_text("x")
        out = tmp_path / "f" / "run"
    elif case == "checkpoints_is_file":
        out.mkdir()
        (out / "checkpoints").write_text("x")
    else:
        (out / "run.json").mkdir(parents=True)
    with pytest.raises(TrainingError) as err:
        train(TrainConfig(out=str(out), steps=3, **CFG))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_bad_values_are_refused_before_anything_is_created(tmp_path):
    out = tmp_path / "never"
    for bad, needle in ((dict(lr=-1.0), "lr must be a finite number > 0"), (dict(momentum=1.0), "momentum must be"),
                        (dict(dampening=1.5), "dampening must be"), (dict(weight_decay=-1e-4), "weight_decay must"),
                        (dict(lr=float("nan")), "lr must"), (dict(batch_size=0), "batch_size must"),
                        (dict(flush_every=0), "flush_every must"), (dict(checkpoint_every=-1), "checkpoint_every"),
                        (dict(model_kwargs={"width": 0}), "width must"),
                        (dict(momentum=0.0, nesterov=True), "nesterov needs momentum > 0")):
        with pytest.raises(TrainingError, match=needle):
            train(TrainConfig(out=str(out), steps=3, **{**CFG, **bad}))
    assert not out.exists()


def test_read_only_run_directory_is_one_line(tmp_path):
    """A read-only --out: one line saying so, before the set-up (the child stops with "set-up reached" if
    it loads the data). A read-only tmpfs, since root ignores file modes; a non-root user gets a 0555 dir."""
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        proc = subprocess.run(_cli_no_setup("--steps", "3", "--out", str(ro / "run")), cwd=ROOT, capture_output=True,
                              text=True, timeout=300)
        ro.chmod(0o755)
        needle = "no permission"
    else:
        if not shutil.which("unshare"):
            pytest.skip("needs unshare to mount a read-only file system as root")
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        cli = " ".join(f"'{a}'" for a in _cli_no_setup("--steps", "3", "--out", str(mnt / "run")))
        proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                               f"mount -t tmpfs -o ro,size=64k tmpfs {mnt} || exit 99; exec {cli}"],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
        if proc.returncode == 99:
            pytest.skip(f"cannot mount a read-only tmpfs here: {proc.stderr.strip()}")
        needle = "read-only file system"
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and needle in lines[0], proc.stderr


# -- SIGTERM like Ctrl-C -----------------------------------------------------------------------------------
def test_sigterm_flushes_says_one_line_exits_143_and_resumes_identically(tmp_path):
    from analyses.argtypes import default_threads
    from model_zoo.train_files import list_checkpoints

    run, ref = tmp_path / "run", tmp_path / "ref"
    # 2000 steps (~2 ms each) leave seconds of margin: on a loaded machine this process can lose the CPU for
    # a second, and a signal that lands after training ends meets the default handler (exit -15)
    args = ("--steps", "2000", "--checkpoint-steps", "14", "--flush-every", "1000", "--out", str(run))
    proc = subprocess.Popen(_cli(*args, base=ARGS0), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (run / "checkpoints" / "step_00000014.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)                                       # let it run past the checkpoint
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err                    # the signal landed mid-run (2000 steps)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "interrupted by SIGTERM" in lines[0] and "resumes from step 14" in lines[0], err
    assert (run / "run.lock").read_bytes() == b""         # released: not a stale lock next time
    log = read_run(run)
    done = list_checkpoints(run)[-1]
    # flushed on the way out: with --flush-every 1000 nothing but that flush writes the steps after 14
    assert done == 14 and not log.closed and log.steps[-1] > 14
    assert len(log.warnings) == 1 and "not closed" in log.warnings[0]
    ck = torch.load(run / "checkpoints" / f"step_{done:08d}.pt", weights_only=True)
    assert ck["meta"]["threads"] == default_threads()     # --threads auto
    again = subprocess.run(_cli(*args, base=ARGS0), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "stale" not in again.stderr
    train(TrainConfig(out=str(ref), steps=2000, flush_every=1000, **{**CFG, "checkpoint_every": None,
                                                                    "checkpoint_steps": (14,)}), warn=lambda m: None)
    for name in ("stats.bin", "stats.crc", "eval.jsonl"):
        assert (run / name).read_bytes() == (ref / name).read_bytes(), name


def test_default_threads(monkeypatch):
    from analyses.argtypes import default_threads, threads

    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads() == 3 and threads("auto") == 3 and threads("0") == 0 and threads("5") == 5
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(2)), raising=False)
    assert default_threads() == 1                        # a 2-core machine: one thread
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert default_threads() == 8
