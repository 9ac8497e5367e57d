"""Run directory format: ``run.json`` + append-only ``stats.bin`` (see docs/run_format.md).

Why this shape: the tracker must survive a crash with everything up to its last flush intact and let a
resumed run continue the same log, while staying O(groups) per step. A fixed-size little-endian float64
record per optimizer step gives both: appending never touches earlier bytes, a torn write shows up as a
file size that is not a whole number of records, and readers can memory-map the file without parsing.

Record for step ``n`` (statistics of θ_n and ĝ_n, before the step): ``[n, η_n, loss_n]`` then, per
symmetry in order, its block: translation ``s, P, A``; scale/rescale ``N, M, Q, G, D``. ``close()`` adds
a final record with step ``T``, ``η = loss = NaN`` and NaN in the gradient/step columns.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .runfile import DTYPE, RecordFile, RunLogError, count_records, read_json, read_records, write_json_atomic
from .runlock import RunLock
from ..symmetry import KINDS, Symmetry, symmetries_from_json, symmetries_to_json

FORMAT = "nmech-run/1"
HEADER = ("step", "lr", "loss")
COLUMNS: dict[str, tuple[str, ...]] = {
    "translation": ("s", "P", "A"),
    "scale": ("N", "M", "Q", "G", "D"),
    "rescale": ("N", "M", "Q", "G", "D"),
}
#: Columns that describe the state θ_n (valid in the final record); the others need ĝ_n or θ_{n+1}.
STATE_COLUMNS = frozenset({"s", "A", "N", "M"})
META_FILE = "run.json"
STATS_FILE = "stats.bin"


def layout() -> dict[str, Any]:
    """The ``layout`` entry of run.json: enough for an outside program to decode ``stats.bin``."""
    return {"dtype": "float64", "byte_order": "little", "header": list(HEADER),
            "columns": {k: list(v) for k, v in COLUMNS.items()}}


def record_size(symmetries: Iterable[Symmetry], lay: Mapping[str, Any] | None = None) -> int:
    """Number of float64 values per record for this symmetry list."""
    lay = lay or layout()
    cols = lay["columns"]
    return len(lay["header"]) + sum(len(cols[s.kind]) for s in symmetries)


def block_offsets(symmetries: Sequence[Symmetry]) -> np.ndarray:
    """Offset (in values) of each symmetry's block inside a record."""
    sizes = [len(COLUMNS[s.kind]) for s in symmetries]
    return len(HEADER) + np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if sizes else np.zeros(0, np.int64)


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
        raise RunLogError(f"{path} has format {fmt!r}; this version reads {FORMAT!r}")
    for key in ("symmetries", "layout", "record_size"):
        if key not in meta:
            raise RunLogError(f"{path} is corrupt: key {key!r} missing")
    return meta


def _parse_symmetries(meta: Mapping[str, Any], where: Path) -> list[Symmetry]:
    try:
        return symmetries_from_json(meta["symmetries"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RunLogError(f"{where}: invalid symmetry entry ({exc})") from None


def _check_record_size(meta: Mapping[str, Any], syms: Sequence[Symmetry], where: Path) -> int:
    lay = meta["layout"]
    try:
        expected = record_size(syms, lay)
    except (KeyError, TypeError):
        raise RunLogError(f"{where}: layout does not describe the symmetry kinds in the run") from None
    if [list(v) for v in lay.get("columns", {}).values()] != [list(v) for v in layout()["columns"].values()] \
            or list(lay.get("header", [])) != list(HEADER):
        raise RunLogError(f"{where}: layout {lay} differs from the one this version writes")
    if int(meta["record_size"]) != expected:
        raise RunLogError(f"{where}: record_size {meta['record_size']} does not match the layout "
                          f"and {len(syms)} symmetries ({expected} values)")
    return expected


class RunWriter:
    """Create or resume a run directory and append records to it (the bytes: runfile.RecordFile).

    ``flush_every`` records are buffered in memory; ``flush()`` writes them and fsyncs, so a crash loses
    at most the unflushed records. Resuming (``resume_step=n``) keeps every complete record with step
    < n and cuts the file right after them: records with step ≥ n belong to the trajectory that was
    lost after the checkpoint at step n and are about to be recomputed, so keeping them would put two
    versions of the same steps in one log; a torn partial record and a final (close) record are cut
    for the same reason. Nothing before step n is touched, and a log that ends before step n (a gap)
    is refused rather than papered over.
    """

    def __init__(self, run_dir: str | os.PathLike, meta: Mapping[str, Any] | None = None,
                 symmetries: Sequence[Symmetry] = (), *, flush_every: int = 50,
                 resume_step: int | None = None, overwrite: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.flush_every = max(1, int(flush_every))
        self._closed = False
        self._lock = RunLock(self.run_dir, "tracker")  # one writer per run directory (runlock.py)
        try:
            if resume_step is None:
                keep = self._create(dict(meta or {}), list(symmetries), overwrite)
            else:
                keep = self._resume(int(resume_step), list(symmetries))
            self._file = RecordFile(self.stats_path, self.record_size, keep=keep)
        except BaseException:
            self._lock.release()
            raise

    # -- opening -----------------------------------------------------------------------------------
    @property
    def stats_path(self) -> Path:
        return self.run_dir / STATS_FILE

    def _create(self, meta: dict[str, Any], syms: list[Symmetry], overwrite: bool) -> int:
        stats = self.run_dir / STATS_FILE
        if stats.exists() and stats.stat().st_size > 0 and not overwrite:
            raise RunLogError(f"{self.run_dir} already holds a run log; resume it (tracker.load_state_dict) "
                              "or pass overwrite=True")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.symmetries = syms
        self.record_size = record_size(syms)
        self.meta = {"format": FORMAT, "model": None, "optimizer": None, "dtype": None, "device": None}
        self.meta.update(meta)
        self.meta.update(format=FORMAT, symmetries=symmetries_to_json(syms), layout=layout(),
                         record_size=self.record_size, steps_recorded=0, closed=False)
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
        self.record_size = _check_record_size(meta, logged, self.run_dir / META_FILE)
        self.meta = meta
        keep, why = 0, ""
        if count_records(self.stats_path, self.record_size):
            data, warns = read_records(self.stats_path, self.record_size)
            why = f" ({'; '.join(warns)})" if warns else ""
            steps, lrs = data[:, 0], data[:, 1]
            keep = int(np.searchsorted(steps, step, side="left"))
            if keep and np.isnan(lrs[keep - 1]):  # a final (close) record never survives a resume
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

    def flush(self) -> None:
        """Write buffered records and fsync, so they survive a crash."""
        self._file.flush()

    def close(self, final_record: np.ndarray | None = None, extra_meta: Mapping[str, Any] | None = None) -> None:
        """Append the final state record (if given), flush, and mark run.json closed."""
        if self._closed:
            return
        try:
            if final_record is not None:
                self.append(final_record)
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
                self._file.close()
            finally:
                self._lock.release()


@dataclass
class RunLog:
    """A run directory read back: per-kind statistics as ``[T+1, G_kind]`` arrays.

    Row ``n`` holds the statistics of step ``steps[n]``; the last row is the final state θ_T (NaN in the
    gradient/step columns ``P, Q, G, D``). For a run that was not closed (crash, or still training) the
    last complete record stands in for the final state and ``closed`` is False.
    """

    run_dir: Path
    meta: dict[str, Any]
    symmetries: list[Symmetry]
    steps: np.ndarray
    lrs: np.ndarray
    losses: np.ndarray
    stats: dict[str, dict[str, np.ndarray]]
    kind_index: list[int]
    groups: dict[str, list[int]]
    closed: bool
    diverged_at: int | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def T(self) -> int:
        return int(self.lrs.shape[0])

    @property
    def warning(self) -> str | None:
        """All warnings in one line (None when the log is clean)."""
        return "; ".join(self.warnings) if self.warnings else None

    @property
    def optimizer(self) -> dict[str, Any]:
        return dict(self.meta.get("optimizer") or {})

    def symmetries_of(self, kind: str) -> list[Symmetry]:
        return [self.symmetries[i] for i in self.groups[kind]]


def read_run(run_dir: str | os.PathLike) -> RunLog:
    """Read and validate a run directory; raises :class:`RunLogError` with a one-line message."""
    run_dir = Path(run_dir)
    meta = _load_meta(run_dir)
    where = run_dir / META_FILE
    syms = _parse_symmetries(meta, where)
    R = _check_record_size(meta, syms, where)
    stats_path = run_dir / STATS_FILE
    data, warns = read_records(stats_path, R)
    n = data.shape[0]
    if n == 0:
        raise RunLogError(f"{stats_path} holds no complete record")
    steps = data[:, 0]
    if not np.all(np.isfinite(steps)) or np.any(steps != np.round(steps)):
        raise RunLogError(f"{stats_path} is corrupt: step column is not integral")
    if n > 1 and np.any(np.diff(steps) != 1):
        bad = int(np.argmax(np.diff(steps) != 1))
        raise RunLogError(f"{stats_path} is corrupt: step {int(steps[bad])} is followed by {int(steps[bad + 1])}")
    closed = bool(np.isnan(data[-1, 1]))
    if not closed:
        warns.append(f"run not closed (crashed or still running): the last record, step {int(steps[-1])}, "
                     "stands in for the final state")
    if np.any(np.isnan(data[:-1, 1])):
        raise RunLogError(f"{stats_path} is corrupt: learning rate missing before the last record")
    lrs = data[:-1, 1].copy()
    losses = data[:-1, 2].copy()

    offsets = block_offsets(syms)
    groups: dict[str, list[int]] = {k: [] for k in KINDS}
    kind_index: list[int] = []
    for i, s in enumerate(syms):
        kind_index.append(len(groups[s.kind]))
        groups[s.kind].append(i)
    stats: dict[str, dict[str, np.ndarray]] = {}
    for kind in KINDS:
        if not groups[kind]:
            continue
        base = offsets[groups[kind]]
        cols = {}
        for j, col in enumerate(COLUMNS[kind]):
            arr = data[:, base + j].copy()
            if col not in STATE_COLUMNS:
                arr[-1] = np.nan
            cols[col] = arr
        stats[kind] = cols

    diverged_at = _first_nonfinite(data, syms, offsets, losses)
    if diverged_at is not None:
        warns.append(f"training diverged: non-finite loss or statistics from step {int(steps[diverged_at])} "
                     f"(of {int(steps[-1])}); only steps before it can be compared with the laws")
    return RunLog(run_dir=run_dir, meta=meta, symmetries=syms, steps=steps.astype(np.int64), lrs=lrs,
                  losses=losses, stats=stats, kind_index=kind_index, groups=groups, closed=closed,
                  diverged_at=diverged_at, warnings=warns)


def _first_nonfinite(data: np.ndarray, syms: Sequence[Symmetry], offsets: np.ndarray,
                     losses: np.ndarray) -> int | None:
    """Row of the first non-finite value that should be finite (None if the run never diverged).

    Gradient/step columns are NaN by design in the last row. A NaN loss alone is not counted, because
    it also means "not recorded" (``record_loss`` is optional); a diverging loss poisons ĝ in the same
    step, so the gradient statistics catch it. An infinite loss counts.
    """
    n = data.shape[0]
    state_idx, grad_idx = [], []
    for s, off in zip(syms, offsets):
        for j, col in enumerate(COLUMNS[s.kind]):
            (state_idx if col in STATE_COLUMNS else grad_idx).append(int(off) + j)
    bad = np.zeros(n, dtype=bool)
    if state_idx:
        bad |= ~np.isfinite(data[:, state_idx]).all(axis=1)
    if grad_idx and n > 1:
        bad[:-1] |= ~np.isfinite(data[:-1, grad_idx]).all(axis=1)
    if losses.size:
        bad[:-1] |= np.isinf(losses)
    return int(np.argmax(bad)) if bad.any() else None
