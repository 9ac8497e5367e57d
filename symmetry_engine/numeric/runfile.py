"""The bytes of a run directory: append-only record files and atomically replaced JSON.

Why a module of its own: what a record *means* (columns, groups, classes) is runlog.py's business; how
records reach the disk so that a crash, a kill or a full disk never leaves an unreadable or silently
wrong file is this module's. Readers and writers of ``stats.bin`` go through :class:`RecordFile` and
:func:`read_records` only, so the on-disk framing can change without touching the record layout.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

DTYPE = np.dtype("<f8")


class RunLogError(Exception):
    """A run directory that cannot be read or written; the message is one line for the user."""


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write JSON through a temporary file and ``os.replace`` so readers never see a half file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=1, allow_nan=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    """Parse a JSON file; a damaged one is a :class:`RunLogError` naming the file."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise RunLogError(f"{path} is corrupt ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None


def read_records(path: Path, record_size: int) -> tuple[np.ndarray, list[str]]:
    """All complete records of ``path`` as ``[n, record_size]`` float64, and warnings about its tail.

    A torn last write (a size that is not a whole number of records) is reported, never rewritten.
    """
    path = Path(path)
    if not path.exists():
        raise RunLogError(f"{path} is missing")
    rec_bytes = record_size * DTYPE.itemsize
    n, rest = divmod(path.stat().st_size, rec_bytes)
    warns = []
    if rest:
        warns.append(f"{path.name} ends in a partial record ({rest} of {rec_bytes} bytes, torn write); "
                     f"using the {n} complete records")
    data = np.fromfile(path, dtype=DTYPE, count=n * record_size).reshape(n, record_size)
    return data, warns


def map_records(path: Path, record_size: int) -> tuple[np.ndarray, list[str]]:
    """Complete records of ``path`` as a read-only memory map ``[n, record_size]``, and the tail warnings.

    Rows are read from the file only when used, so a reader can walk a log larger than memory in chunks of
    steps (numeric/runlog.py ``read_run(mmap=True)``). Same framing rules as :func:`read_records`."""
    path = Path(path)
    if not path.exists():
        raise RunLogError(f"{path} is missing")
    rec_bytes = record_size * DTYPE.itemsize
    n, rest = divmod(path.stat().st_size, rec_bytes)
    warns = []
    if rest:
        warns.append(f"{path.name} ends in a partial record ({rest} of {rec_bytes} bytes, torn write); "
                     f"using the {n} complete records")
    if n == 0:
        return np.zeros((0, record_size), dtype=DTYPE), warns
    return np.memmap(path, dtype=DTYPE, mode="r", shape=(n, record_size)), warns


def count_records(path: Path, record_size: int) -> int:
    """Complete records in ``path`` (0 when it does not exist)."""
    path = Path(path)
    return path.stat().st_size // (record_size * DTYPE.itemsize) if path.exists() else 0


class RecordFile:
    """Append-only file of fixed-size float64 records; ``flush`` writes and fsyncs what is buffered."""

    def __init__(self, path: Path, record_size: int, keep: int | None = None) -> None:
        """Open for appending. ``keep=n`` first cuts the file to its first ``n`` complete records
        (``keep=0`` empties it); ``None`` keeps it as it is."""
        self.path, self.record_size = Path(path), int(record_size)
        self._buffer: list[np.ndarray] = []
        if keep is not None:
            with open(self.path, "r+b" if self.path.exists() else "wb") as fh:
                fh.truncate(keep * self.record_size * DTYPE.itemsize)
                fh.flush()
                os.fsync(fh.fileno())
        self._fh = open(self.path, "ab")

    @property
    def pending(self) -> int:
        return sum(b.shape[0] for b in self._buffer)

    def append(self, records: np.ndarray) -> None:
        rec = np.asarray(records, dtype=DTYPE)
        rec = rec[None] if rec.ndim == 1 else rec
        if rec.ndim != 2 or rec.shape[1] != self.record_size:
            raise RunLogError(f"record of shape {np.shape(records)} does not match record_size {self.record_size}")
        self._buffer.append(rec)

    def write(self) -> None:
        """Hand buffered records to the OS without fsync: they survive a killed process, not a power cut."""
        if not self._buffer:
            return
        data = np.concatenate(self._buffer).astype(DTYPE, copy=False)
        self._buffer.clear()
        self._fh.write(data.tobytes())
        self._fh.flush()

    def flush(self) -> None:
        """Write buffered records and fsync everything written so far."""
        self.write()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self.flush()
        self._fh.close()

    def complete_records(self) -> int:
        return count_records(self.path, self.record_size)
