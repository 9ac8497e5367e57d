"""Run directory: ``run.json`` + append-only ``stats.bin`` (see docs/run_format.md), written and read.

Why this shape: the tracker must survive a crash with everything up to its last flush intact and let a
resumed run continue the same log, while staying O(groups) per step. A fixed-size little-endian float64
record per optimizer step gives both: appending never touches earlier bytes, and readers can map the file
without parsing. What a record holds is numeric/layout.py; the bytes on disk are numeric/runfile.py.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .classes import CLASS_COLUMNS, OptimizerClass
from .layout import HEADER, INITIAL_COLUMNS, KIND_ORDER, STATE_COLUMNS, RecordLayout
from .runfile import (DTYPE, RecordFile, RunLogError, count_records, map_records, read_json, read_records,
                      write_bytes_atomic, write_json_atomic)
from .runlock import RunLock
from .samples import SAMPLES_FILE, resume_keep
from ..symmetry import KINDS, Symmetry, symmetries_from_json, symmetries_to_json

FORMAT = "nmech-run/2"
META_FILE = "run.json"
STATS_FILE = "stats.bin"
INITIAL_FILE = "initial_state.bin"


def _load_meta(run_dir: Path) -> dict[str, Any]:
    if not run_dir.exists():
        raise RunLogError(f"run directory {run_dir} does not exist")
    if not run_dir.is_dir():
        raise RunLogError(f"{run_dir} is not a directory")
    path = run_dir / META_FILE
    if not path.exists():
        raise RunLogError(f"{path} is missing: not a run directory (expected run.json + stats.bin)")
    meta = read_json(path)
    if not isinstance(meta, dict):
        raise RunLogError(f"{path} is corrupt: top level is not an object")
    fmt = meta.get("format")
    if fmt != FORMAT:
        hint = " (written by an older version: re-run it to compare with the laws)" if fmt == "nmech-run/1" else ""
        raise RunLogError(f"{path} has format {fmt!r}; this version reads {FORMAT!r}{hint}")
    for key in ("symmetries", "layout", "record_size", "classes"):
        if key not in meta:
            raise RunLogError(f"{path} is corrupt: key {key!r} missing")
    return meta


def _parse_symmetries(meta: Mapping[str, Any], where: Path) -> list[Symmetry]:
    try:
        return symmetries_from_json(meta["symmetries"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RunLogError(f"{where}: invalid symmetry entry ({exc})") from None


def _parse_layout(meta: Mapping[str, Any], syms: Sequence[Symmetry], where: Path) -> tuple[RecordLayout, list[OptimizerClass]]:
    try:
        lay = RecordLayout.from_json(meta["layout"], [s.kind for s in syms])
        classes = [OptimizerClass.from_json(c) for c in meta["classes"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise RunLogError(f"{where}: layout or classes invalid ({exc})") from None
    if len(classes) != lay.n_classes or [c.id for c in classes] != list(range(len(classes))):
        raise RunLogError(f"{where}: {len(classes)} classes listed for a layout of {lay.n_classes}")
    if int(meta["record_size"]) != lay.record_size:
        raise RunLogError(f"{where}: record_size {meta['record_size']} does not match the layout "
                          f"and {len(syms)} symmetries ({lay.record_size} values)")
    return lay, classes


class RunWriter:
    """Create or resume a run directory and append records to it (the bytes: runfile.RecordFile).

    ``flush_every`` records are buffered in memory; ``flush()`` writes them and fsyncs, so a crash loses
    at most the unflushed records. Resuming (``resume_step=n``) keeps every complete record with step
    < n and cuts the file right after them: records with step ≥ n belong to the trajectory that was
    lost after the checkpoint at step n and are about to be recomputed, so keeping them would put two
    versions of the same steps in one log; a torn partial record and a final (close) record are cut
    for the same reason. Nothing before step n is touched, and a log that ends before step n (a gap)
    is refused rather than papered over. A new log takes its ``layout`` and ``classes``; a resumed one
    reads them from run.json.

    When run.json has a ``samples`` entry (numeric/samples.py) the writer also keeps ``samples.bin``:
    ``append_sample`` buffers a row, and every write/flush puts the sample rows on disk before the stats
    records, so a killed process never leaves a record without its row. On resume the rows of steps ≥ n
    are cut by the same rule.
    """

    def __init__(self, run_dir: str | os.PathLike, meta: Mapping[str, Any] | None = None,
                 symmetries: Sequence[Symmetry] = (), *, layout: RecordLayout | None = None,
                 classes: Sequence[OptimizerClass] = (), initial_state: np.ndarray | None = None,
                 flush_every: int = 50, resume_step: int | None = None, overwrite: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.flush_every = max(1, int(flush_every))
        self._closed = False
        if resume_step is None and layout is None:
            raise ValueError("a new run log needs its record layout")
        self._lock = RunLock(self.run_dir, "tracker")  # one writer per run directory (runlock.py)
        try:
            if resume_step is None:
                keep = self._create(dict(meta or {}), list(symmetries), layout, list(classes), initial_state,
                                    overwrite)
            else:
                keep = self._resume(int(resume_step), list(symmetries))
            self._samples = self._open_samples(resume_step)
            self._file = RecordFile(self.stats_path, self.record_size, keep=keep)
        except BaseException:
            if getattr(self, "_samples", None) is not None:
                self._samples.close()
            self._lock.release()
            raise

    # -- opening -----------------------------------------------------------------------------------
    @property
    def stats_path(self) -> Path:
        return self.run_dir / STATS_FILE

    @property
    def record_size(self) -> int:
        return self.layout.record_size

    def _open_samples(self, resume_step: int | None) -> RecordFile | None:
        """samples.bin when run.json asks for it; a stale one (an overwritten run without samples) is removed."""
        sm = self.meta.get("samples")
        path = self.run_dir / SAMPLES_FILE
        if not sm:
            if resume_step is None:
                for p in (path, path.with_suffix(".crc")):
                    if p.exists():
                        p.unlink()
            return None
        size = int(sm["record_size"])
        keep = 0 if resume_step is None else resume_keep(path, size, int(resume_step))
        return RecordFile(path, size, keep=keep)

    @property
    def samples_record_size(self) -> int | None:
        return None if self._samples is None else self._samples.record_size

    def _create(self, meta: dict[str, Any], syms: list[Symmetry], layout: RecordLayout,
                classes: list[OptimizerClass], initial: np.ndarray | None, overwrite: bool) -> int:
        stats = self.run_dir / STATS_FILE
        if stats.exists() and stats.stat().st_size > 0 and not overwrite:
            raise RunLogError(f"{self.run_dir} already holds a run log; resume it (tracker.load_state_dict) "
                              "or pass overwrite=True")
        if len(layout.kinds) != len(syms) or list(layout.kinds) != [s.kind for s in syms]:
            raise ValueError("the layout does not match the symmetries")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.symmetries, self.layout, self.classes = syms, layout, classes
        self.meta = {"format": FORMAT, "model": None, "optimizer": None, "dtype": None, "device": None}
        self.meta.update(meta)
        self.meta.update(format=FORMAT, symmetries=symmetries_to_json(syms), classes=[c.to_json() for c in classes],
                         layout=layout.to_json(), record_size=layout.record_size, steps_recorded=0, closed=False,
                         initial_state=None)
        init_path = self.run_dir / INITIAL_FILE
        if initial is not None:
            init = np.asarray(initial, dtype=DTYPE).reshape(-1)
            if init.size != layout.initial_size():
                raise ValueError(f"initial state has {init.size} values, the layout {layout.initial_size()}")
            # with a CRC-32 of its bytes in run.json: written once, checked when read
            write_bytes_atomic(init_path, init.tobytes())
            self.meta["initial_state_crc32"] = zlib.crc32(init.tobytes())
            self.meta["initial_state"] = INITIAL_FILE
        elif init_path.exists():
            init_path.unlink()
        write_json_atomic(self.run_dir / META_FILE, self.meta)
        self.next_step = 0
        return 0

    def _resume(self, step: int, syms: list[Symmetry]) -> int:
        meta = _load_meta(self.run_dir)
        logged = _parse_symmetries(meta, self.run_dir / META_FILE)
        if syms and logged != syms:
            raise RunLogError(f"{self.run_dir}: the tracker's symmetries differ from the logged ones; "
                              "cannot resume into this log")
        self.symmetries = logged
        self.layout, self.classes = _parse_layout(meta, logged, self.run_dir / META_FILE)
        self.meta = meta
        keep, why = 0, ""
        if count_records(self.stats_path, self.record_size):
            data, warns = read_records(self.stats_path, self.record_size)
            why = f" ({'; '.join(warns)})" if warns else ""
            steps, final = data[:, 0], data[:, 1]
            keep = int(np.searchsorted(steps, step, side="left"))
            if keep and final[keep - 1] == 1:  # a final (close) record never survives a resume
                keep -= 1
            if keep and step > steps[keep - 1] + 1:
                raise RunLogError(f"{self.stats_path}: log ends at step {int(steps[keep - 1])} but resume is at "
                                  f"step {step}; records in between are missing{why}")
        if step > 0 and keep == 0:
            raise RunLogError(f"{self.stats_path}: log holds no step before {step}; cannot resume at step {step}{why}")
        self.meta.update(steps_recorded=keep, closed=False)
        write_json_atomic(self.run_dir / META_FILE, self.meta)
        self.next_step = step
        return keep

    # -- writing -----------------------------------------------------------------------------------
    def append(self, records: np.ndarray) -> None:
        """Buffer one record ``[R]`` or a block ``[k, R]``; flushes when ``flush_every`` are pending."""
        if self._closed:
            raise RunLogError(f"{self.run_dir}: log already closed")
        before = self._file.pending
        self._file.append(records)
        self.next_step += self._file.pending - before
        if self._file.pending >= self.flush_every:
            self.flush()

    def append_sample(self, row: np.ndarray) -> None:
        """Buffer one sample row ``[n, entries...]`` (written with the next ``write``/``flush``)."""
        if self._samples is not None and not self._closed:
            self._samples.append(row)

    def flush(self) -> None:
        """Write buffered records and fsync, so they survive a crash (sample rows first)."""
        if self._samples is not None:
            self._samples.flush()
        self._file.flush()

    def write(self) -> None:
        """Write buffered records without fsync (the tracker streams each record as it completes)."""
        if self._samples is not None:
            self._samples.write()
        self._file.write()

    def close(self, final_record: np.ndarray | None = None, extra_meta: Mapping[str, Any] | None = None,
              final_sample: np.ndarray | None = None) -> None:
        """Append the final state record (if given) and sample row, flush, and mark run.json closed."""
        if self._closed:
            return
        try:
            if final_sample is not None:
                self.append_sample(final_sample)
            if final_record is not None:
                self.append(final_record)
            if self._samples is not None:
                self._samples.close()
            self._file.close()
            self._closed = True
            self.meta.update(dict(extra_meta or {}))
            self.meta.update(steps_recorded=self._file.complete_records(), closed=final_record is not None)
            write_json_atomic(self.run_dir / META_FILE, self.meta)
        finally:
            if self._closed:
                self._lock.release()

    def abandon(self) -> None:
        """Flush and release the file without a final record (the log stays resumable)."""
        if not self._closed:
            self._closed = True
            try:
                if self._samples is not None:
                    self._samples.close()
            finally:
                try:
                    self._file.close()
                finally:
                    self._lock.release()


#: Logs larger than this are read through a memory map, a chunk of rows at a time (``read_run(mmap=None)``).
MMAP_BYTES = int(os.environ.get("NMECH_MMAP_BYTES", str(1 << 30)))


class LazyColumn:
    """One statistic of every slot of a kind, ``[T+1, S]``, read from the memory-mapped log on indexing.

    ``col[rows]`` / ``col[rows, slots]`` return arrays (a copy of just those rows); like the in-memory
    columns, a non-state column reads NaN in the last row (the final state has no step)."""

    def __init__(self, data: np.ndarray, idx: np.ndarray, state: bool) -> None:
        self.data, self.idx, self.state = data, idx, state

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.data.shape[0]), int(self.idx.shape[0]))

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def __getitem__(self, key):
        rows, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        n = self.data.shape[0]
        if isinstance(rows, (int, np.integer)):
            r = int(rows) % n
            out = np.array(self.data[r, self.idx])
            if not self.state and r == n - 1:
                out[:] = np.nan
        else:
            pos = np.arange(n)[rows]
            out = np.array(self.data[rows][:, self.idx])
            if not self.state and pos.size and pos[-1] == n - 1:
                out[pos == n - 1] = np.nan
        return out[(Ellipsis,) + tuple(rest)] if rest else out

    def __array__(self, dtype=None, copy=None):
        return self[:] if dtype is None else self[:].astype(dtype)


@dataclass
class KindStats:
    """The slots of one symmetry kind: ``columns[col]`` is ``[T+1, S]`` (S slots, grouped by symmetry).

    ``slot_group[j]`` is the slot's group within this kind (0..G−1), ``slot_class[j]`` its class id;
    ``starts[g]`` is the first slot of group g, so group totals are ``np.add.reduceat(x, starts, axis=1)``.
    ``initial`` holds the momentum-buffer statistics at the first step (zeros for a fresh optimizer).
    """

    columns: dict[str, np.ndarray]
    slot_group: np.ndarray
    slot_class: np.ndarray
    starts: np.ndarray
    initial: dict[str, np.ndarray]

    @property
    def groups(self) -> int:
        return int(self.starts.shape[0])

    def total(self, col: str, rows: slice | None = None) -> np.ndarray:
        """Group totals of a column, ``[rows, G]``."""
        x = self.columns[col] if rows is None else self.columns[col][rows]
        return np.add.reduceat(x, self.starts, axis=1) if x.shape[1] else x

    def __getitem__(self, col: str) -> np.ndarray:
        return self.columns[col]

    def items(self):
        return self.columns.items()

    def __contains__(self, col: str) -> bool:
        return col in self.columns


@dataclass
class RunLog:
    """A run directory read back.

    ``steps`` has T+1 entries; the last row is the final state θ_T (NaN in the gradient/step columns).
    For a run that was not closed (crash, or still training) the last complete record stands in for the
    final state and ``closed`` is False. ``hp[col]`` is ``[T, C]``: each class's hyper-parameters per step.
    """

    run_dir: Path
    meta: dict[str, Any]
    symmetries: list[Symmetry]
    classes: list[OptimizerClass]
    layout: RecordLayout
    steps: np.ndarray
    losses: np.ndarray
    grad_sq: np.ndarray
    hp: dict[str, np.ndarray]
    stats: dict[str, KindStats]
    kind_index: list[int]
    groups: dict[str, list[int]]
    closed: bool
    diverged_at: int | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def T(self) -> int:
        return int(self.losses.shape[0])

    @property
    def lrs(self) -> np.ndarray:
        """Learning rate per step of the first trained class (the only one in a plain run), ``[T]``."""
        main = next((c.id for c in self.classes if c.trained), 0)
        return self.hp["lr"][:, main] if self.hp["lr"].shape[1] else np.zeros(self.T)

    @property
    def warning(self) -> str | None:
        """All warnings in one line (None when the log is clean)."""
        return "; ".join(self.warnings) if self.warnings else None

    @property
    def optimizer(self) -> dict[str, Any]:
        return dict(self.meta.get("optimizer") or {})

    def symmetries_of(self, kind: str) -> list[Symmetry]:
        return [self.symmetries[i] for i in self.groups[kind]]


def read_run(run_dir: str | os.PathLike, mmap: bool | None = None) -> RunLog:
    """Read and validate a run directory; raises :class:`RunLogError` with a one-line message.

    ``mmap`` (default: when stats.bin is larger than ``MMAP_BYTES``, 1 GiB) keeps the statistics in the file:
    ``KindStats`` columns are then :class:`LazyColumn` objects that read the rows asked for, so the evaluation
    walks a log of any length in chunks of steps with bounded memory."""
    run_dir = Path(run_dir)
    meta = _load_meta(run_dir)
    where = run_dir / META_FILE
    syms = _parse_symmetries(meta, where)
    lay, classes = _parse_layout(meta, syms, where)
    R = lay.record_size
    stats_path = run_dir / STATS_FILE
    if mmap is None:
        mmap = stats_path.exists() and stats_path.stat().st_size > MMAP_BYTES
    data, warns = map_records(stats_path, R) if mmap else read_records(stats_path, R)
    n = data.shape[0]
    if n == 0:
        raise RunLogError(f"{stats_path} holds no complete record")
    steps = data[:, 0]
    if not np.all(np.isfinite(steps)) or np.any(steps != np.round(steps)):
        raise RunLogError(f"{stats_path} is corrupt: step column is not integral")
    if n > 1 and np.any(np.diff(steps) != 1):
        bad = int(np.argmax(np.diff(steps) != 1))
        raise RunLogError(f"{stats_path} is corrupt: step {int(steps[bad])} is followed by {int(steps[bad + 1])}")
    final = data[:, 1]
    closed = bool(final[-1] == 1)
    if np.any(final[:-1] != 0):
        raise RunLogError(f"{stats_path} is corrupt: a final record before the last one")
    if not closed:
        warns.append(f"run not closed (crashed or still running): the last record, step {int(steps[-1])}, "
                     "stands in for the final state")
    losses, grad_sq = data[:-1, 2].copy(), data[:-1, 3].copy()
    C = lay.n_classes
    hp = {col: data[:-1, lay.class_offset(0, col):lay.class_offset(0, col) + C * len(CLASS_COLUMNS):len(CLASS_COLUMNS)]
          .copy() for col in CLASS_COLUMNS} if C else {col: np.zeros((n - 1, 0)) for col in CLASS_COLUMNS}
    initial = _read_initial(run_dir, meta, lay)

    groups: dict[str, list[int]] = {k: [] for k in KINDS}
    kind_index: list[int] = []
    for i, s in enumerate(syms):
        kind_index.append(len(groups[s.kind]))
        groups[s.kind].append(i)
    stats: dict[str, KindStats] = {}
    offsets, slots = lay.slot_offsets, lay.slots
    for kind in KINDS:
        if not groups[kind]:
            continue
        idx = lay.kind_slots(kind)
        base = offsets[idx]
        cols = {}
        for j, col in enumerate(lay.columns(kind)):
            if mmap:
                cols[col] = LazyColumn(data, base + j, col in STATE_COLUMNS)
                continue
            arr = data[:, base + j].copy()
            if col not in STATE_COLUMNS:
                arr[-1] = np.nan
            cols[col] = arr
        g_global = np.array([slots[i][0] for i in idx], dtype=np.int64)
        local = {g: j for j, g in enumerate(groups[kind])}
        slot_group = np.array([local[g] for g in g_global], dtype=np.int64)
        starts = np.searchsorted(slot_group, np.arange(len(groups[kind])), side="left").astype(np.int64)
        init = {c: initial[lay.initial_offsets[idx] + j] for j, c in enumerate(INITIAL_COLUMNS[kind])}
        stats[kind] = KindStats(cols, slot_group, np.array([slots[i][1] for i in idx], dtype=np.int64), starts, init)

    diverged_at, why = _first_nonfinite(data, lay, hp, classes, losses)
    if diverged_at is not None:
        warns.append(f"training diverged: {why} from step {int(steps[diverged_at])} (of {int(steps[-1])}); "
                     "only steps before it can be compared with the laws")
    return RunLog(run_dir=run_dir, meta=meta, symmetries=syms, classes=classes, layout=lay,
                  steps=steps.astype(np.int64), losses=losses, grad_sq=grad_sq, hp=hp, stats=stats,
                  kind_index=kind_index, groups=groups, closed=closed, diverged_at=diverged_at, warnings=warns)


def _read_initial(run_dir: Path, meta: Mapping[str, Any], lay: RecordLayout) -> np.ndarray:
    """Per-slot momentum-buffer statistics at the first step (zeros when the log began with fresh buffers)."""
    size = lay.initial_size()
    name = meta.get("initial_state")
    if not name:
        return np.zeros(size)
    path = run_dir / str(name)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RunLogError(f"{path} cannot be read ({exc.strerror or type(exc).__name__})") from None
    if len(raw) != size * DTYPE.itemsize or zlib.crc32(raw) != meta.get("initial_state_crc32", zlib.crc32(raw)):
        raise RunLogError(f"{path} is corrupt: expected {size} float64 values matching run.json's checksum")
    return np.frombuffer(raw, dtype=DTYPE).copy()


def _first_nonfinite(data: np.ndarray, lay: RecordLayout, hp: Mapping[str, np.ndarray],
                     classes: Sequence[OptimizerClass], losses: np.ndarray) -> tuple[int | None, str]:
    """Row of the first non-finite value that should be finite, and what it was (None if none).

    Gradient/step columns are NaN by design in the last row. A NaN loss alone is not counted, because
    it also means "not recorded" (``record_loss`` is optional); a diverging loss poisons ĝ in the same
    step, so the gradient statistics catch it. An infinite loss counts, and so does a non-finite learning
    rate of a class the optimizer trains (the update itself is then undefined).
    """
    n = data.shape[0]
    state_idx, grad_idx = [], []
    for off, (g, _) in zip(lay.slot_offsets, lay.slots):
        for j, col in enumerate(lay.columns(lay.kinds[g])):
            (state_idx if col in STATE_COLUMNS else grad_idx).append(int(off) + j)
    checks: list[tuple[np.ndarray, str]] = []

    def bad_rows(idx: list[int], stop: int) -> np.ndarray:  # in chunks of rows: a mapped log may not fit in memory
        out = np.zeros(stop, dtype=bool)
        step = max(1, (1 << 22) // max(1, len(idx)))
        for a in range(0, stop, step):
            b = min(stop, a + step)
            out[a:b] = ~np.isfinite(data[a:b][:, idx]).all(axis=1)
        return out

    if state_idx:
        checks.append((bad_rows(state_idx, n), "non-finite parameters"))
    if n > 1:
        pad = lambda x: np.concatenate([x, [False]])  # noqa: E731 - the last row has no step
        if grad_idx:
            checks.append((pad(bad_rows(grad_idx, n - 1)), "non-finite gradient statistics"))
        checks.append((pad(~np.isfinite(data[:-1, 3])), "non-finite gradient norm"))
        checks.append((pad(np.isinf(losses)), "infinite loss"))
        trained = [c.id for c in classes if c.trained]
        if trained:
            checks.append((pad(~np.isfinite(hp["lr"][:, trained]).all(axis=1)), "non-finite learning rate"))
    first, why = None, ""
    for bad, what in checks:
        if bad.any() and (first is None or int(np.argmax(bad)) < first):
            first, why = int(np.argmax(bad)), what
    return first, why
