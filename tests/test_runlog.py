"""Run directory format: round trip, crash tolerance, corruption errors, resume truncation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from symmetry_engine.numeric.classes import CLASS_COLUMNS, OptimizerClass
from symmetry_engine.numeric.layout import HEADER, RecordLayout
from symmetry_engine.numeric.runlog import FORMAT, RunLogError, RunWriter, read_run
from symmetry_engine.symmetry import Member, Symmetry

SYMS = [
    Symmetry("scale", (Member("a.weight", 0, (0,)), Member("a.bias", 0, (0,))), "a", 0),
    Symmetry("translation", (Member("fc.bias"),), "fc.bias"),
    Symmetry("rescale", (Member("a.weight", 0, (1,)), Member("fc.weight", 1, (1,), -1)), "a", 1),
    Symmetry("translation", (Member("fc.weight", 1, (0,)),), "fc", 0),
]
CLASSES = [OptimizerClass(0, 0, True, True, True, "sgd", params=("a.weight", "fc.weight")),
           OptimizerClass(1, 1, True, True, True, "sgd", params=("a.bias", "fc.bias"))]
# a.bias sits in class 1 (e.g. no weight decay on biases): the scale group has two slots
LAYOUT = RecordLayout(tuple(s.kind for s in SYMS), ((0, 1), (1,), (0,), (0,)), 2)
R = 4 + 2 * 5 + 2 * 5 + 3 + 5 + 3


def rec(n: int, final: bool = False) -> np.ndarray:
    """A record whose value at offset k is n + k/1000 (so columns are recognisable)."""
    r = n + np.arange(R) / 1000.0
    r[0], r[1] = n, 0.0
    if final:
        r[1], r[2], r[3] = 1.0, np.nan, np.nan
        r[4:14] = np.nan
        for off, (g, _) in zip(LAYOUT.slot_offsets, LAYOUT.slots):
            cols = [1] if SYMS[g].kind == "translation" else [2, 3, 4]
            r[off + np.array(cols)] = np.nan
    return r


def write(path, n_steps: int, close: bool = True, flush_every: int = 3) -> None:
    w = RunWriter(path, {"optimizer": {"rule": "sgd", "lr": 0.1}}, SYMS, layout=LAYOUT, classes=CLASSES,
                  flush_every=flush_every)
    for n in range(n_steps):
        w.append(rec(n))
    w.close(rec(n_steps, final=True) if close else None)


def test_layout_and_round_trip(tmp_path):
    assert LAYOUT.record_size == R and len(HEADER) == 4 and len(CLASS_COLUMNS) == 5
    np.testing.assert_array_equal(LAYOUT.slot_offsets, [14, 19, 24, 27, 32])
    assert LAYOUT.slots == [(0, 0), (0, 1), (1, 1), (2, 0), (3, 0)]
    write(tmp_path / "r", 6)
    meta = json.loads((tmp_path / "r" / "run.json").read_text())
    assert meta["format"] == FORMAT and meta["record_size"] == R and meta["closed"] and meta["steps_recorded"] == 7
    assert [c["param_group"] for c in meta["classes"]] == [0, 1] and meta["initial_state"] is None
    assert (tmp_path / "r" / "stats.bin").stat().st_size == 7 * R * 8
    log = read_run(tmp_path / "r")
    assert log.closed and log.T == 6 and log.warning is None and log.diverged_at is None
    np.testing.assert_array_equal(log.steps, np.arange(7))
    np.testing.assert_allclose(log.hp["lr"][:, 1], np.arange(6) + 0.009)   # class 1's lr at offset 4 + 5
    np.testing.assert_allclose(log.hp["updated"][:, 0], np.arange(6) + 0.008)
    np.testing.assert_allclose(log.grad_sq, np.arange(6) + 0.003)
    assert log.kind_index == [0, 0, 0, 1] and log.groups == {"translation": [1, 3], "scale": [0], "rescale": [2]}
    # translation slots: symmetry 1 (offset 24), symmetry 3 (offset 32)
    tr = log.stats["translation"]
    np.testing.assert_allclose(tr["s"][2], [2.024, 2.032])
    np.testing.assert_allclose(tr["A"][6], [6.026, 6.034])
    assert np.isnan(tr["P"][6]).all() and tr["P"].shape == (7, 2)
    # the scale group has two slots (classes 0 and 1); totals add them
    sc = log.stats["scale"]
    assert list(sc.slot_class) == [0, 1] and list(sc.slot_group) == [0, 0] and list(sc.starts) == [0]
    np.testing.assert_allclose(sc.total("N")[:-1, 0], 2 * np.arange(6) + 0.014 + 0.019)
    np.testing.assert_allclose(log.stats["rescale"]["D"][:-1, 0], np.arange(6) + 0.031)
    assert np.isnan(sc["D"][-1]).all() and sc["N"][-1, 0] == 6.014
    assert log.symmetries == SYMS and log.optimizer == {"rule": "sgd", "lr": 0.1} and log.classes == CLASSES


def test_truncated_tail_and_unclosed_run(tmp_path):
    write(tmp_path / "r", 5, close=False)
    with open(tmp_path / "r" / "stats.bin", "ab") as fh:
        fh.write(rec(5).tobytes()[:40])
    log = read_run(tmp_path / "r")
    assert not log.closed and any("partial record (40 of" in w for w in log.warnings)
    assert f"partial record (40 of {R * 8} bytes" in log.warning and "not closed" in log.warning
    assert log.T == 4 and log.steps[-1] == 4
    assert np.isnan(log.stats["scale"]["Q"][-1]).all() and log.stats["scale"]["N"][-1, 0] == 4.014
    assert (tmp_path / "r" / "stats.bin").stat().st_size == 5 * R * 8 + 40  # the reader never rewrites


def test_nan_learning_rate_is_named_as_divergence(tmp_path):
    """Regression: a run whose lr was NaN evaluated as "0 steps, all errors 0" without a word."""
    w = RunWriter(tmp_path / "r", {}, SYMS, layout=LAYOUT, classes=CLASSES)
    for n in range(4):
        r = rec(n)
        r[4] = np.nan  # class 0's lr
        w.append(r)
    w.close(rec(4, final=True))
    log = read_run(tmp_path / "r")
    assert log.diverged_at == 0 and "non-finite learning rate from step 0" in log.warning
    from symmetry_engine.numeric.evaluate import evaluate_run

    with pytest.raises(RunLogError, match="non-finite learning rate from step 0.*no step can be compared"):
        evaluate_run(tmp_path / "r")


@pytest.mark.parametrize("damage,msg", [
    ("nodir", "does not exist"),
    ("nojson", "run.json is missing"),
    ("badjson", "run.json is corrupt (JSONDecodeError"),
    ("format", "has format 'nmech-run/0'"),
    ("recsize", "record_size 99 does not match"),
    ("classes", "layout or classes invalid"),
    ("final", "a final record before the last one"),
    ("nostats", "stats.bin is missing"),
    ("empty", "holds no complete record"),
    ("steps", "step 2 is followed by 7"),
    ("sym", "invalid symmetry entry"),
])
def test_corruption_errors_are_one_line(tmp_path, damage, msg):
    d = tmp_path / "r"
    write(d, 5)
    meta_path, stats = d / "run.json", d / "stats.bin"
    meta = json.loads(meta_path.read_text())
    if damage == "nodir":
        d = tmp_path / "missing"
    elif damage == "nojson":
        meta_path.unlink()
    elif damage == "badjson":
        meta_path.write_text(meta_path.read_text()[:50])
    elif damage in ("format", "recsize", "sym", "classes"):
        meta.update({"format": {"format": "nmech-run/0"}, "recsize": {"record_size": 99},
                     "sym": {"symmetries": [{"kind": "spin", "members": [{"param": "x"}]}]},
                     "classes": {"layout": {**meta["layout"], "group_classes": [[0, 1], [7], [0], [0]]}}}[damage])
        meta_path.write_text(json.dumps(meta))
    elif damage == "nostats":
        stats.unlink()
    elif damage == "empty":
        stats.write_bytes(b"\x00" * 100)
    elif damage in ("steps", "final"):  # written with valid checksums (a changed byte is the checksum's business)
        w = RunWriter(d, {}, SYMS, layout=LAYOUT, classes=CLASSES, overwrite=True)
        for n in ((0, 1, 2, 7, 8) if damage == "steps" else range(5)):
            r = rec(n)
            if damage == "final" and n == 3:
                r[1] = 1.0
            w.append(r)
        w.close(rec(9 if damage == "steps" else 5, final=True))
    with pytest.raises(RunLogError) as exc:
        read_run(d)
    assert msg in str(exc.value) and "\n" not in str(exc.value)


def test_diverged_run_is_reported(tmp_path):
    w = RunWriter(tmp_path / "r", {}, SYMS, layout=LAYOUT, classes=CLASSES)
    for n in range(6):
        r = rec(n)
        if n >= 3:
            r[2] = np.nan  # loss NaN is not enough on its own (it also means "not recorded") ...
        if n >= 4:
            r[24 + 1] = np.nan  # ... but a NaN gradient statistic is
        w.append(r)
    w.close(rec(6, final=True))
    log = read_run(tmp_path / "r")
    assert log.diverged_at == 4 and "training diverged" in log.warning and "from step 4" in log.warning
    w = RunWriter(tmp_path / "s", {}, SYMS, layout=LAYOUT, classes=CLASSES)
    r = rec(0)
    r[2] = np.inf
    w.append(r)
    w.close(rec(1, final=True))
    assert read_run(tmp_path / "s").diverged_at == 0


def test_resume_truncates_only_from_the_resume_step(tmp_path):
    d = tmp_path / "r"
    write(d, 8, close=True)
    with open(d / "stats.bin", "ab") as fh:
        fh.write(b"\x01" * 11)  # torn tail after the close record
    w = RunWriter(d, symmetries=SYMS, resume_step=5)
    assert w.next_step == 5 and (d / "stats.bin").stat().st_size == 5 * R * 8
    before = (d / "stats.bin").read_bytes()
    for n in range(5, 9):
        w.append(rec(n))
    w.close(rec(9, final=True))
    data = (d / "stats.bin").read_bytes()
    assert data[:len(before)] == before
    log = read_run(d)
    assert log.T == 9 and log.closed and log.warning is None
    # resuming right after the last step of a closed run drops only the close record
    w = RunWriter(d, symmetries=SYMS, resume_step=9)
    w.abandon()
    assert (d / "stats.bin").stat().st_size == 9 * R * 8
    with pytest.raises(RunLogError, match="log ends at step 8 but resume is at step 12"):
        RunWriter(d, symmetries=SYMS, resume_step=12)
    with pytest.raises(RunLogError, match="symmetries differ"):
        RunWriter(d, symmetries=SYMS[:2], resume_step=3)


def test_existing_log_is_not_overwritten(tmp_path):
    write(tmp_path / "r", 2)
    with pytest.raises(RunLogError, match="already holds a run log"):
        RunWriter(tmp_path / "r", {}, SYMS, layout=LAYOUT, classes=CLASSES)
    w = RunWriter(tmp_path / "r", {}, SYMS, layout=LAYOUT, classes=CLASSES, overwrite=True)
    w.append(np.stack([rec(0), rec(1)]))
    w.close(rec(2, final=True))
    assert read_run(tmp_path / "r").T == 2
    with pytest.raises(RunLogError, match="does not match record_size"):
        RunWriter(tmp_path / "q", {}, SYMS, layout=LAYOUT, classes=CLASSES).append(np.zeros(R + 1))
