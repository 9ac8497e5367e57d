"""The bytes of a run directory: checksummed append-only record files, JSON-lines logs, atomic JSON.

Why a module of its own: what a record *means* (columns, groups, classes) is runlog.py's business; how
records reach the disk so that a crash, a kill or a full disk never leaves an unreadable or silently
wrong file is this module's. A record is an opaque little-endian float64 vector of ``record_size``
values here.

``stats.bin`` stays a plain array of records (``np.fromfile`` reads it); its checksums live beside it in
``stats.crc``: a 16-byte header (magic, record size, header CRC) and one 16-byte entry per flushed block
(cumulative record count after the block, CRC-32 of the block's bytes, CRC-32 of the entry itself).
A block is written and fsynced before its entry, so a kill at any byte leaves either a block without an
entry (an unfinished write, ignored by readers and cut on resume) or a torn entry: never an entry that
vouches for bytes that are not there. Readers verify every block and use the records before the first
block that fails, naming it. JSON-lines logs end every entry with a newline written in the same call,
so a torn append is exactly the bytes after the last newline.

Every write into a run directory goes through :func:`_write` (the fault-injection tests replace it).
"""

from __future__ import annotations

import errno
import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

DTYPE = np.dtype("<f8")
CRC_SUFFIX = ".crc"
_MAGIC = b"NMCRC\x00\x01\x00"
_HEADER = struct.Struct("<8sII")   # magic, record_size, CRC-32 of the 12 bytes before it
_ENTRY = struct.Struct("<QII")     # records after this block, CRC-32 of the block, CRC-32 of the 12 bytes before it


class RunLogError(Exception):
    """A run directory that cannot be read or written; the message is one line for the user."""


# -- writing bytes ----------------------------------------------------------------------------------------
def _write(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (the one place run files are written; tests inject faults here)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _named(exc: BaseException, path: str | os.PathLike) -> None:
    """Give an OSError from a raw write the file it was writing, so its message can name it."""
    if isinstance(exc, OSError) and not exc.filename:
        exc.filename = str(path)


def _fsync_dir(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable (best effort: not every file system allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def describe_os_error(exc: OSError, path: str | os.PathLike | None = None) -> str:
    """One specific line for a failed file operation (disk full, read-only, a file where a directory belongs)."""
    where = str(path if path is not None else (exc.filename or "the run directory"))
    code = exc.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the device (or quota) while writing {where}"
    if code == errno.EROFS:
        return f"{where} is on a read-only file system"
    if code in (errno.EACCES, errno.EPERM):
        return f"no permission to write {where}"
    if code in (errno.ENOTDIR, errno.EEXIST):
        return f"{where}: a file is where a directory belongs"
    if code == errno.EISDIR:
        return f"{where} is a directory where a file belongs"
    return f"{where}: {exc.strerror or type(exc).__name__}"


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write through a temporary file, fsync, ``os.replace``: readers see the old file or the new one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _write(fd, data)
        os.fsync(fd)
    except BaseException as exc:
        _named(exc, path)
        raise
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write JSON through a temporary file and ``os.replace`` so readers never see a half file."""
    write_bytes_atomic(path, json.dumps(data, indent=1, allow_nan=True).encode())


def read_json(path: Path) -> Any:
    """Parse a JSON file; a damaged one is a :class:`RunLogError` naming the file."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise RunLogError(f"{path} is corrupt ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None


def truncate_file(path: str | os.PathLike, size: int) -> None:
    """Cut ``path`` to ``size`` bytes and fsync (cutting a prefix is all-or-nothing under a crash)."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)


# -- checksummed records ----------------------------------------------------------------------------------
def crc_path(path: str | os.PathLike) -> Path:
    """The checksum index beside a record file (``stats.bin`` → ``stats.crc``)."""
    return Path(path).with_suffix(CRC_SUFFIX)


def _header(record_size: int) -> bytes:
    head = _MAGIC + struct.pack("<I", record_size)
    return head + struct.pack("<I", zlib.crc32(head))


def _entry(end: int, crc: int) -> bytes:
    head = struct.pack("<QI", end, crc)
    return head + struct.pack("<I", zlib.crc32(head))


@dataclass
class _Index:
    present: bool
    ends: list[int] = field(default_factory=list)   # cumulative record count after each block
    crcs: list[int] = field(default_factory=list)
    problem: str | None = None                      # why entries after the last one listed are unusable


def _read_index(path: Path, record_size: int) -> _Index:
    cpath = crc_path(path)
    try:
        raw = cpath.read_bytes()
    except FileNotFoundError:
        return _Index(present=False)
    except OSError as exc:
        raise RunLogError(f"{cpath}: {describe_os_error(exc, cpath)}") from None
    if len(raw) < _HEADER.size:
        return _Index(True, problem=f"{cpath.name} has a torn header ({len(raw)} of {_HEADER.size} bytes)")
    magic, size, hcrc = _HEADER.unpack_from(raw)
    if magic != _MAGIC or hcrc != zlib.crc32(raw[:12]):
        return _Index(True, problem=f"{cpath.name} has a damaged header")
    if size != record_size:
        raise RunLogError(f"{cpath} checksums records of {size} values but the log has {record_size}")
    idx = _Index(True)
    body = raw[_HEADER.size:]
    n, rest = divmod(len(body), _ENTRY.size)
    for k in range(n):
        end, crc, ecrc = _ENTRY.unpack_from(body, k * _ENTRY.size)
        if ecrc != zlib.crc32(body[k * _ENTRY.size:k * _ENTRY.size + 12]) or end <= (idx.ends[-1] if idx.ends else 0):
            idx.problem = f"{cpath.name} entry {k} is damaged"
            return idx
        idx.ends.append(end)
        idx.crcs.append(crc)
    if rest:
        idx.problem = f"{cpath.name} ends in a torn entry ({rest} of {_ENTRY.size} bytes)"
    return idx


def _verified(path: Path, record_size: int) -> tuple[np.ndarray, int, list[str]]:
    """A read-only map of ``path``'s complete records, how many of them are verified, and warnings.

    Records are verified up to the first block whose checksum fails or that the file no longer holds in
    full; that block is named. Records after the last checksummed block (a write the process did not
    finish) and a partial record are reported and left out. A log without ``stats.crc`` (written before
    checksums existed) is used whole, with a warning that it cannot be verified. The file is read once,
    block by block, never held in memory whole.
    """
    path = Path(path)
    if not path.exists():
        raise RunLogError(f"{path} is missing")
    R = int(record_size)
    rec_bytes = R * DTYPE.itemsize
    idx = _read_index(path, R)          # the index first: an entry only ever vouches for bytes written before it
    n_raw, rest = divmod(path.stat().st_size, rec_bytes)
    raw = np.memmap(path, dtype=DTYPE, mode="r", shape=(n_raw, R)) if n_raw else np.zeros((0, R), dtype=DTYPE)
    warns: list[str] = []
    bad = False
    if not idx.present:
        if n_raw:
            warns.append(f"{crc_path(path).name} is missing: the {n_raw} records of {path.name} cannot be verified")
        good = n_raw
    else:
        good = 0
        for k, (end, crc) in enumerate(zip(idx.ends, idx.crcs)):
            where = f"{path.name} block {k} (records {good}–{end - 1})"
            if end > n_raw:
                warns.append(f"{where} is cut short: the file holds {n_raw} complete records (truncated after it "
                             f"was written); using the {good} records before it")
                bad = True
                break
            if zlib.crc32(memoryview(np.ascontiguousarray(raw[good:end])).cast("B")) != crc:
                warns.append(f"{where} fails its checksum (the file was changed after it was written, or a power "
                             f"cut kept its entry but not all of its bytes); using the {good} records before it")
                bad = True
                break
            good = end
        if not bad and idx.problem:
            warns.append(f"{idx.problem}: records after {good} are not verified")
        if not bad and n_raw > good:
            warns.append(f"{path.name} holds {n_raw - good} records after its last checksummed block (a write "
                         f"that did not finish); using the {good} checksummed records")
    if rest and not bad:
        warns.append(f"{path.name} ends in a partial record ({rest} of {rec_bytes} bytes, torn write); "
                     f"using the {good} complete records")
    return raw, good, warns


def read_records(path: Path, record_size: int) -> tuple[np.ndarray, list[str]]:
    """The verified records of ``path`` as ``[n, record_size]`` float64 in memory, and warnings (see
    :func:`_verified`). Nothing is rewritten."""
    raw, good, warns = _verified(path, record_size)
    return np.array(raw[:good], dtype=DTYPE), warns


def map_records(path: Path, record_size: int) -> tuple[np.ndarray, list[str]]:
    """The verified records of ``path`` as a read-only memory map ``[n, record_size]``, and warnings.

    Rows are read from the file only when used, so a reader can walk a log larger than memory in chunks of
    steps (numeric/runlog.py ``read_run(mmap=True)``). Same framing rules as :func:`read_records`."""
    raw, good, warns = _verified(path, record_size)
    return raw[:good], warns


def count_records(path: Path, record_size: int) -> int:
    """Complete records in ``path`` by its size, verified or not (0 when it does not exist)."""
    path = Path(path)
    return path.stat().st_size // (record_size * DTYPE.itemsize) if path.exists() else 0


class RecordFile:
    """Append-only file of fixed-size float64 records with a CRC-32 per flushed block (``stats.crc``).

    ``write`` hands the buffered records to the OS as one block followed by its checksum entry; ``flush``
    does that and fsyncs both files. A write that fails (disk full) is rolled back and its records stay
    buffered.
    """

    def __init__(self, path: Path, record_size: int, keep: int | None = None) -> None:
        """Open for appending after the first ``keep`` records (``keep=0`` empties the file; ``None``
        keeps every verified record). The kept records' checksums are carried over, the block that
        ``keep`` cuts through is verified and re-checksummed, and the index is replaced before the data
        file is cut, so a crash in between leaves only an unverified tail."""
        self.path, self.record_size = Path(path), int(record_size)
        self.index_path = crc_path(self.path)
        self._rec_bytes = self.record_size * DTYPE.itemsize
        self._buffer: list[np.ndarray] = []
        self._fd = self._ifd = -1
        if keep is None:
            keep = read_records(self.path, self.record_size)[0].shape[0] if self.path.exists() else 0
        entries = self._entries_to_keep(int(keep))
        write_bytes_atomic(self.index_path, _header(self.record_size) + b"".join(_entry(e, c) for e, c in entries))
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.ftruncate(self._fd, int(keep) * self._rec_bytes)
            os.fsync(self._fd)
            self._ifd = os.open(self.index_path, os.O_WRONLY | os.O_APPEND)
        except BaseException:
            os.close(self._fd)
            raise
        self._records = int(keep)
        self._index_size = _HEADER.size + len(entries) * _ENTRY.size

    def _entries_to_keep(self, keep: int) -> list[tuple[int, int]]:
        if keep == 0:
            return []
        idx = _read_index(self.path, self.record_size)
        if not idx.present:
            raise RunLogError(f"{self.index_path} is missing: cannot verify the {keep} records to keep")
        kept = [(e, c) for e, c in zip(idx.ends, idx.crcs) if e <= keep]
        last = kept[-1][0] if kept else 0
        if last < keep:
            k = len(kept)
            if k >= len(idx.ends):
                raise RunLogError(f"{self.path}: cannot keep {keep} records, only {last} are checksummed")
            end, crc = idx.ends[k], idx.crcs[k]
            with open(self.path, "rb") as fh:
                fh.seek(last * self._rec_bytes)
                block = fh.read((end - last) * self._rec_bytes)
            if len(block) != (end - last) * self._rec_bytes or zlib.crc32(block) != crc:
                raise RunLogError(f"{self.path.name} block {k} (records {last}–{end - 1}) fails its checksum; "
                                  f"cannot keep records from it")
            kept.append((keep, zlib.crc32(block[:(keep - last) * self._rec_bytes])))
        return kept

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
        """Hand the buffered records to the OS as one checksummed block (data, then its entry), without
        fsync: the records survive a killed process at once and a power cut after the next ``flush``. The
        data is written before its entry, so a kill never leaves an entry vouching for missing bytes; after
        a power cut an entry whose bytes did not reach the disk fails its checksum and is named. A write
        that fails (disk full) is rolled back and its records stay buffered."""
        if not self._buffer or self._fd < 0:
            return
        blocks, self._buffer = self._buffer, []
        payload = np.concatenate(blocks).astype(DTYPE, copy=False).tobytes()
        n = len(payload) // self._rec_bytes
        try:
            _write(self._fd, payload)
            _write(self._ifd, _entry(self._records + n, zlib.crc32(payload)))
        except BaseException as exc:
            _named(exc, self.path)
            self._rollback()
            self._buffer = blocks + self._buffer
            raise
        self._records += n
        self._index_size += _ENTRY.size

    def flush(self) -> None:
        """``write`` what is buffered, then fsync both files: everything written so far survives a power cut."""
        self.write()
        if self._fd >= 0:
            try:
                os.fsync(self._fd)
                os.fsync(self._ifd)
            except BaseException as exc:
                _named(exc, self.path)
                raise

    def _rollback(self) -> None:
        """Cut both files back to the last complete block (best effort: the disk may be gone)."""
        for fd, size in ((self._fd, self._records * self._rec_bytes), (self._ifd, self._index_size)):
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass

    def close(self) -> None:
        """Flush and release the files (they are released even when the flush fails)."""
        try:
            self.flush()
        finally:
            for fd in (self._fd, self._ifd):
                if fd >= 0:
                    os.close(fd)
            self._fd = self._ifd = -1

    def complete_records(self) -> int:
        return count_records(self.path, self.record_size)


# -- JSON-lines logs --------------------------------------------------------------------------------------
@dataclass
class JsonLines:
    """A JSON-lines log read back: its entries, the byte offset after each, and a torn tail's length."""

    path: Path
    entries: list[dict[str, Any]] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    torn: int = 0

    def size_keeping(self, n: int) -> int:
        """Bytes that hold the first ``n`` entries."""
        return self.ends[n - 1] if n > 0 else 0

    @property
    def warning(self) -> str | None:
        return (f"{self.path.name} ends in a torn line ({self.torn} bytes without a newline: an append that did "
                "not finish)") if self.torn else None


def read_jsonl(path: str | os.PathLike) -> JsonLines:
    """Entries of a JSON-lines log (none if it does not exist). A torn last line is reported in ``torn``;
    a complete line that is not a JSON object means the file was changed: :class:`RunLogError` naming
    the line."""
    path = Path(path)
    out = JsonLines(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return out
    except OSError as exc:
        raise RunLogError(describe_os_error(exc, path)) from None
    cut = raw.rfind(b"\n") + 1
    out.torn = len(raw) - cut
    pos = 0
    for number, line in enumerate(raw[:cut].split(b"\n")[:-1], start=1):
        pos += len(line) + 1
        try:
            entry = json.loads(line)
        except ValueError as exc:
            raise RunLogError(f"{path} line {number} is damaged ({str(exc).splitlines()[0]}); the file was changed "
                              "after it was written: repair or remove that line") from None
        if not isinstance(entry, dict):
            raise RunLogError(f"{path} line {number} is not a JSON object; the file was changed after it was written")
        out.entries.append(entry)
        out.ends.append(pos)
    return out


def append_jsonl(path: str | os.PathLike, entry: Mapping[str, Any]) -> None:
    """Append one entry as one line in one write, then fsync; a failed write is cut back out."""
    path = Path(path)
    line = (json.dumps(entry, allow_nan=True) + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            raise RunLogError(f"{path} ends in a torn line; it must be repaired before appending")
        try:
            _write(fd, line)
            os.fsync(fd)
        except BaseException as exc:
            _named(exc, path)
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass
            raise
    finally:
        os.close(fd)


__all__ = ["DTYPE", "CRC_SUFFIX", "RunLogError", "RecordFile", "JsonLines", "append_jsonl", "count_records",
           "crc_path", "describe_os_error", "read_json", "read_jsonl", "read_records", "truncate_file",
           "write_bytes_atomic", "write_json_atomic"]
