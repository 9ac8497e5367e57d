"""Fault injection on run directories: kills at any byte, torn tails, flipped bits, full disks.

The kills are real process deaths (``os._exit`` in a child process: nothing is flushed or cleaned up),
placed by byte: every write into a run directory goes through ``runfile._write``, which the child
replaces by one that writes a prefix of the chosen write and dies. A reference run counts the bytes
and says which file each write went to, so kill points can be drawn at random over the whole byte
stream and also placed inside a write of each file. After every kill the same call is made again
and the run directory must end byte for byte like the uninterrupted one.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from model_zoo.training import TrainConfig, TrainingError, train
from symmetry_engine.numeric import runfile
from symmetry_engine.numeric.runfile import RunLogError, read_records
from symmetry_engine.numeric.runlog import RunWriter, read_run

ROOT = Path(__file__).resolve().parents[1]
KILLED = 137
BASE = dict(model="mlp", model_kwargs={"widths": [8]}, dataset="synthetic", input_size=4, batch_size=64, steps=30,
            lr=0.05, momentum=0.9, weight_decay=5e-4, deterministic=True, progress=False, checkpoint_every=7, seed=1,
            flush_every=4)   # 12 steps per epoch: evaluations at 12, 24, 30; checkpoints at 7, 14, 21, 28, 30
pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").exists(),
                                reason="fault injection names files through /proc/self/fd (Linux)")


def _cfg(out: Path, **kw) -> TrainConfig:
    return TrainConfig(out=str(out), **{**BASE, **kw})


def snapshot(d: Path) -> dict[str, bytes]:
    """Every file under ``d`` (but the lock, whose content names a process) by relative path."""
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file() and p.name != "run.lock"}


def _quiet(_msg: str) -> None:
    pass


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run (symmetries found once), its files, and the writes it made: (file, bytes)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # as the tests (autouse fixture): checkpoints record the thread count
    try:
        return _reference(tmp_path_factory.mktemp("faults"))
    finally:
        torch.set_num_threads(threads)


def _reference(base: Path) -> dict:
    run = base / "run"
    train(_cfg(run), warn=_quiet)
    syms = read_run(run).symmetries
    shutil.rmtree(run)
    writes: list[tuple[str, int]] = []
    orig = runfile._write

    def counting(fd: int, data: bytes) -> None:
        writes.append((os.path.basename(os.readlink(f"/proc/self/fd/{fd}")), len(data)))
        orig(fd, data)

    runfile._write = counting
    try:
        train(_cfg(run), syms, warn=_quiet)
    finally:
        runfile._write = orig
    files = snapshot(run)
    shutil.rmtree(run)
    return {"dir": run, "syms": syms, "files": files, "writes": writes}


def _die_at_byte(cfg: TrainConfig, syms, kill_at: int) -> None:  # pragma: no cover - runs in the child
    """Child: train, dying (no cleanup at all) once ``kill_at`` bytes have been written."""
    import torch

    torch.set_num_threads(1)
    written = [0]
    orig = runfile._write

    def dying(fd: int, data: bytes) -> None:
        room = kill_at - written[0]
        if len(data) >= room:
            orig(fd, bytes(memoryview(data)[:room]))
            os._exit(KILLED)
        written[0] += len(data)
        orig(fd, data)

    runfile._write = dying
    train(cfg, syms, warn=_quiet)


def _run_until_byte(cfg: TrainConfig, syms, kill_at: int) -> int:
    """Train in a child process that dies at byte ``kill_at``; its exit code (KILLED when it died there).

    Children are forked from a fork server that has imported torch but never run autograd (a child
    forked from this process, which has, may not use autograd)."""
    import multiprocessing as mp

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "torch._inductor", "model_zoo.training", "tests.test_faults"])  # deterministic mode imports torch._inductor
    proc = ctx.Process(target=_die_at_byte, args=(cfg, syms, kill_at))
    proc.start()
    proc.join(300)
    if proc.exitcode is None:
        proc.kill()
        proc.join()
    return proc.exitcode


def _kill_points(writes: list[tuple[str, int]], n_random: int, seed: int) -> list[tuple[str, int]]:
    """A byte inside a write of each kind of file, plus ``n_random`` uniform over the whole stream."""
    starts = np.cumsum([0] + [n for _, n in writes])
    points, seen = [], set()
    for k, (name, n) in enumerate(writes):
        kind = re.sub(r"\d+", "N", name)
        if kind not in seen and n > 1:
            seen.add(kind)
            points.append((f"inside a write of {kind}", int(starts[k] + max(1, n // 2))))
    rng = np.random.default_rng(seed)
    points += [("random", int(b)) for b in rng.integers(1, int(starts[-1]), size=n_random)]
    return points


def test_kill_at_any_byte_then_same_call_ends_like_an_uninterrupted_run(reference):
    """Kills inside every kind of write (stats.bin, stats.crc, run.json, eval.jsonl, checkpoints and
    their index) and at random bytes; then the same call again: every file byte-identical."""
    n_random = int(os.environ.get("NMECH_FAULT_POINTS", "12"))
    points = _kill_points(reference["writes"], n_random, seed=9)
    kinds = {p for p, _ in points}
    assert {"inside a write of stats.bin", "inside a write of stats.crc", "inside a write of eval.jsonl",
            "inside a write of checkpoints.jsonl", "inside a write of step_N.pt.tmp"} <= kinds, kinds
    run = reference["dir"]
    for what, byte in points:
        if run.exists():
            shutil.rmtree(run)
        code = _run_until_byte(_cfg(run), reference["syms"], byte)
        assert code == KILLED, f"kill at byte {byte} ({what}) never came: exit {code}"
        train(_cfg(run), reference["syms"], warn=_quiet)
        got = snapshot(run)
        assert got.keys() == reference["files"].keys(), (what, byte)
        bad = [name for name in got if got[name] != reference["files"][name]]
        assert not bad, f"kill at byte {byte} ({what}): {bad} differ after resuming"


def test_killed_again_while_resuming(reference):
    """A second kill during the resume (while tails are repaired) still ends byte-identical."""
    run = reference["dir"]
    total = sum(n for _, n in reference["writes"])
    rng = np.random.default_rng(4)
    for first, second in zip(rng.integers(total // 3, total, size=3), rng.integers(1, total // 2, size=3)):
        if run.exists():
            shutil.rmtree(run)
        assert _run_until_byte(_cfg(run), reference["syms"], int(first)) == KILLED
        assert _run_until_byte(_cfg(run), reference["syms"], int(second)) in (KILLED, 0)
        train(_cfg(run), reference["syms"], warn=_quiet)
        assert snapshot(run) == reference["files"], (first, second)


# -- torn tails at every byte offset (a tiny synthetic log: only the framing is under test) --------------------
SIZE = 5


def _records(n: int) -> np.ndarray:
    r = np.arange(n * SIZE, dtype=float).reshape(n, SIZE) / 7.0
    r[:, 0] = np.arange(n)
    return r


def _log(d: Path, n: int = 10, flush_every: int = 3) -> None:
    from symmetry_engine.numeric.runfile import RecordFile

    w = RecordFile(d / "stats.bin", SIZE, keep=0)
    for k in range(0, n, flush_every):
        w.append(_records(n)[k:k + flush_every])
        w.flush()
    w.close()


def test_stats_torn_at_every_byte_of_its_last_record(tmp_path):
    from symmetry_engine.numeric.runfile import RecordFile

    d = tmp_path / "r"
    d.mkdir()
    _log(d)
    whole = {p.name: p.read_bytes() for p in d.iterdir()}
    rec = SIZE * 8
    stats, crc = d / "stats.bin", d / "stats.crc"
    for cut in range(len(whole["stats.bin"]) - rec, len(whole["stats.bin"])):
        stats.write_bytes(whole["stats.bin"][:cut])
        data, warns = read_records(stats, SIZE)
        assert data.shape[0] == 9 and np.array_equal(data, _records(10)[:9])   # blocks 0-2 verified
        assert len(warns) == 1 and "block 3 (records 9–9) is cut short" in warns[0]
        w = RecordFile(stats, SIZE, keep=9)            # resume: keep what is verified, write the rest again
        w.append(_records(10)[9:])
        w.close()
        assert stats.read_bytes() == whole["stats.bin"] and read_records(stats, SIZE)[1] == []
    for cut in range(len(whole["stats.crc"]) - 16, len(whole["stats.crc"])):
        stats.write_bytes(whole["stats.bin"])
        crc.write_bytes(whole["stats.crc"][:cut])
        data, warns = read_records(stats, SIZE)
        assert data.shape[0] == 9 and "1 records after its last checksummed block" in warns[-1]
        assert len(warns) == (1 if cut == len(whole["stats.crc"]) - 16 else 2), warns
        assert cut == len(whole["stats.crc"]) - 16 or "torn entry" in warns[0]
        w = RecordFile(stats, SIZE, keep=9)
        assert stats.stat().st_size == 9 * SIZE * 8 and read_records(stats, SIZE)[1] == []
        w.append(_records(10)[9:])
        w.close()
        assert stats.read_bytes() == whole["stats.bin"] and crc.read_bytes() == whole["stats.crc"]


def test_jsonl_torn_at_every_byte_of_its_last_line(tmp_path):
    from symmetry_engine.numeric.runfile import read_jsonl

    path = tmp_path / "eval.jsonl"
    for n in range(4):
        runfile.append_jsonl(path, {"step": n, "loss": 1.0 / (n + 1)})
    whole = path.read_bytes()
    last = whole.rstrip(b"\n").rfind(b"\n") + 1
    for cut in range(last, len(whole)):
        path.write_bytes(whole[:cut])
        log = read_jsonl(path)
        assert [e["step"] for e in log.entries] == [0, 1, 2] and log.torn == cut - last
        assert (log.warning is not None) == (cut > last)
        with pytest.raises(RunLogError, match="torn line") if cut > last else _nothing():
            runfile.append_jsonl(path, {"step": 3, "loss": 0.25})   # never glued onto a torn line
        runfile.truncate_file(path, log.size_keeping(3))
        runfile.append_jsonl(path, {"step": 3, "loss": 0.25})
        assert path.read_bytes() == whole
    path.write_bytes(whole.replace(b'"step": 1', b'"step: 1'))
    with pytest.raises(RunLogError, match="line 2 is damaged"):
        read_jsonl(path)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("name", ["stats.bin", "stats.crc", "eval.jsonl", "checkpoints.jsonl"])
def test_torn_tail_of_an_interrupted_run_resumes_and_finishes(reference, name):
    """An interrupted run whose log ends in a torn write (every byte of the last record or line of
    ``name``): the same call resumes, repairs the tail and finishes byte-identical."""
    run = reference["dir"]
    starts = np.cumsum([0] + [n for _, n in reference["writes"]])
    # kill right after a write into `name` in mid-run has completed, then tear that write at a few offsets
    ks = [i for i, (f, _) in enumerate(reference["writes"]) if f == name]
    k = ks[len(ks) // 2]
    n_bytes = reference["writes"][k][1]
    offsets = sorted({0, 1, n_bytes // 2, n_bytes - 1})
    for off in offsets:
        if run.exists():
            shutil.rmtree(run)
        assert _run_until_byte(_cfg(run), reference["syms"], int(starts[k + 1])) == KILLED
        path = run / name
        size = path.stat().st_size
        runfile.truncate_file(path, size - n_bytes + off)
        train(_cfg(run), reference["syms"], warn=_quiet)
        assert snapshot(run) == reference["files"], (name, off)


def test_damaged_middle_line_refuses_and_changes_nothing(reference):
    """Not a torn tail but a changed line: refused in one line naming file and line, before any file
    (stats.bin in particular) is cut."""
    run = reference["dir"]
    if run.exists():
        shutil.rmtree(run)
    total = sum(n for _, n in reference["writes"])
    assert _run_until_byte(_cfg(run), reference["syms"], total * 3 // 4) == KILLED
    ev = run / "eval.jsonl"
    ev.write_bytes(ev.read_bytes().replace(b'"step": 12', b'"step": 12,,', 1))
    before = snapshot(run)
    with pytest.raises(TrainingError) as err:
        train(_cfg(run), reference["syms"], warn=_quiet)
    assert "eval.jsonl line 1 is damaged" in str(err.value) and "\n" not in str(err.value)
    assert snapshot(run) == before


# -- checksums: a flipped byte is found and named -------------------------------------------------------------
def test_flipped_exponent_byte_is_named_and_the_good_prefix_used(tmp_path):
    """The issue's case: one flipped exponent byte silently changed a group's error from 1.9e-7 to
    1e-315. Now the block holding it is named and the records before it are used."""
    from symmetry_engine.numeric.evaluate import evaluate_run

    run = tmp_path / "run"
    train(_cfg(run, dtype="float64", steps=24, flush_every=8, checkpoint_every=None), warn=_quiet)
    R = json.loads((run / "run.json").read_text())["record_size"]
    clean = evaluate_run(run, checkpoints=False)
    stats = run / "stats.bin"
    raw = bytearray(stats.read_bytes())
    raw[(13 * R + 3) * 8 + 7] ^= 0x40          # record 13 (each step is written as its own block), exponent byte
    stats.write_bytes(bytes(raw))
    log = read_run(run)
    assert log.T == 12 and any("block 13 (records 13–13) fails its checksum" in w for w in log.warnings)
    ev = evaluate_run(run, checkpoints=False)
    assert any("fails its checksum" in w for w in ev.warnings) and ev.T == 12
    worst = max(g.err_exact for g in ev.groups)
    assert worst <= 1e-9 and worst <= max(g.err_exact for g in clean.groups) * 10 + 1e-12


def test_checkpoint_hashes_name_a_damaged_or_swapped_file(tmp_path):
    """The issue's cases: a damaged checkpoint, or one swapped in from another run, showed only as
    "1.0e+00"; one from another model as "outside the log". Each is now named, at evaluation and on resume."""
    from symmetry_engine.numeric.checkpoint_index import verify_checkpoint
    from symmetry_engine.numeric.evaluate import evaluate_run

    a, b = tmp_path / "a", tmp_path / "b"
    train(_cfg(a, steps=14), warn=_quiet)
    train(_cfg(b, steps=14, seed=2), warn=_quiet)
    ck = a / "checkpoints"
    good7 = (ck / "step_00000007.pt").read_bytes()
    assert verify_checkpoint(a, ck / "step_00000007.pt") is None
    shutil.copy(b / "checkpoints" / "step_00000007.pt", ck / "step_00000007.pt")       # swapped from another run
    raw = bytearray((ck / "step_00000014.pt").read_bytes())
    raw[len(raw) // 2] ^= 1
    (ck / "step_00000014.pt").write_bytes(bytes(raw))                                    # damaged
    shutil.copy(b / "checkpoints" / "step_00000014.pt", ck / "step_00000003.pt")       # never written by this run
    notes = {Path(c.path).name: c.note for c in evaluate_run(a).checkpoints}
    assert "differs from the checkpoint written at step 7" in notes["step_00000007.pt"]
    assert "differs from the checkpoint written at step 14" in notes["step_00000014.pt"]
    assert "not recorded in checkpoints.jsonl" in notes["step_00000003.pt"]
    # resume: none usable → refused, nothing changed
    before = snapshot(a)
    with pytest.raises(TrainingError, match="no checkpoint can be read") as err:
        train(_cfg(a, steps=21), warn=_quiet)
    assert str(err.value).count("differs from the checkpoint") == 2 and snapshot(a) == before
    # with the good step 7 back, resume skips the damaged 14 (and says why) and rewrites it correctly
    (ck / "step_00000007.pt").write_bytes(good7)
    (ck / "step_00000003.pt").unlink()
    warnings: list[str] = []
    assert train(_cfg(a, steps=21), warn=warnings.append).resumed_from == 7
    assert any("step 14" in w and "differs" in w for w in warnings), warnings
    assert all(verify_checkpoint(a, p) is None for p in ck.glob("*.pt"))


# -- full disk ----------------------------------------------------------------------------------------------
def test_injected_disk_full_is_one_line_and_resumable(reference, monkeypatch):
    run = reference["dir"]
    if run.exists():
        shutil.rmtree(run)
    total = sum(n for _, n in reference["writes"])
    written = [0]
    orig = runfile._write

    def full(fd: int, data: bytes) -> None:
        if written[0] + len(data) > total // 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written[0] += len(data)
        orig(fd, data)

    monkeypatch.setattr(runfile, "_write", full)
    with pytest.raises(TrainingError) as err:
        train(_cfg(run), reference["syms"], warn=_quiet)
    msg = str(err.value)
    assert msg.startswith("no space left on the device") and str(run) in msg and "\n" not in msg
    assert "the same command resumes from step" in msg
    monkeypatch.setattr(runfile, "_write", orig)       # space freed
    train(_cfg(run), reference["syms"], warn=_quiet)
    assert snapshot(run) == reference["files"]


def _unshare_ok() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d && umount $d && rmdir $d"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


def test_disk_full_on_a_small_tmpfs(tmp_path, reference):
    """A real ENOSPC: `nmech train` on a 256 KiB tmpfs says so in one line; after the file system grows,
    the same command resumes and ends with the uninterrupted run's statistics."""
    if not _unshare_ok():
        pytest.skip("cannot mount a tmpfs here (needs unshare --user --mount); the injected-error test covers ENOSPC")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    args = ["train", "mlp", "--model-kw", "widths=[8]", "--dataset", "synthetic", "--input-size", "4",
            "--batch-size", "64", "--steps", "30", "--lr", "0.05", "--momentum", "0.9", "--weight-decay", "5e-4",
            "--deterministic", "--no-progress", "--checkpoint-every", "7", "--seed", "1", "--flush-every", "4",
            "--threads", "1", "--out", str(mnt / "run")]
    cli = " ".join([sys.executable, "-m", "analyses.cli", *[f"'{a}'" for a in args]])
    script = textwrap.dedent(f"""
        mount -t tmpfs -o size=96k tmpfs {mnt}
        {cli} >{tmp_path}/out1 2>{tmp_path}/err1; echo $? >{tmp_path}/rc1
        mount -o remount,size=8m {mnt}
        {cli} >{tmp_path}/out2 2>{tmp_path}/err2; echo $? >{tmp_path}/rc2
        cp -r {mnt}/run {tmp_path}/run
    """)
    subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script], cwd=ROOT, timeout=600,
                   check=True)
    err1 = (tmp_path / "err1").read_text().strip().splitlines()
    assert (tmp_path / "rc1").read_text().strip() == "2", err1
    assert len(err1) == 1 and "no space left on the device" in err1[0] and "resumes from step" in err1[0], err1
    assert (tmp_path / "rc2").read_text().strip() == "0", (tmp_path / "err2").read_text()
    ref_run = tmp_path / "ref"
    train(_cfg(ref_run, flush_every=4), reference["syms"], warn=_quiet)
    assert (tmp_path / "run" / "stats.bin").read_bytes() == (ref_run / "stats.bin").read_bytes()
    assert (tmp_path / "run" / "eval.jsonl").read_bytes() == (ref_run / "eval.jsonl").read_bytes()


def test_record_file_write_error_rolls_back_and_keeps_records(tmp_path, monkeypatch):
    from symmetry_engine.numeric.runfile import RecordFile

    d = tmp_path / "r"
    d.mkdir()
    w = RecordFile(d / "stats.bin", SIZE, keep=0)
    w.append(_records(3))
    w.flush()
    calls = [0]
    orig = runfile._write

    def half_then_fail(fd: int, data: bytes) -> None:
        calls[0] += 1
        orig(fd, bytes(memoryview(data)[:len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runfile, "_write", half_then_fail)
    w.append(_records(6)[3:])
    with pytest.raises(OSError):
        w.flush()
    assert read_records(d / "stats.bin", SIZE)[1] == [] and w.pending == 3     # cut back; records kept
    monkeypatch.setattr(runfile, "_write", orig)
    w.close()
    data, warns = read_records(d / "stats.bin", SIZE)
    assert warns == [] and np.array_equal(data, _records(6))


def test_resume_refuses_records_it_cannot_verify(tmp_path):
    from symmetry_engine.numeric.classes import OptimizerClass
    from symmetry_engine.numeric.layout import RecordLayout
    from symmetry_engine.numeric.runfile import crc_path
    from symmetry_engine.symmetry import Member, Symmetry

    syms = [Symmetry("translation", (Member("b"),), "b")]
    layout = RecordLayout(("translation",), ((0,),), 1)
    classes = [OptimizerClass(0, 0, True, True, True, "sgd", params=("b",))]
    d = tmp_path / "r"
    w = RunWriter(d, {}, syms, layout=layout, classes=classes, flush_every=2)
    R = layout.record_size
    for n in range(6):  # step, final, loss, |g|^2; lr β d λ updated; s P A
        w.append(np.array([n, 0.0, 1.0, 0.5, 0.1, 0.0, 0.0, 0.0, 1.0, 0.5, 0.0, 1.0]))
    w.abandon()
    raw = bytearray((d / "stats.bin").read_bytes())
    raw[8 * R * 1 + 20] ^= 0xFF                   # record 1, inside block 0
    (d / "stats.bin").write_bytes(bytes(raw))
    before = snapshot(d)
    with pytest.raises(RunLogError) as err:
        RunWriter(d, symmetries=syms, resume_step=4)
    assert "block 0 (records 0–1) fails its checksum" in str(err.value)
    assert snapshot(d) == before and crc_path(d / "stats.bin").exists()
