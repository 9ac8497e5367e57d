"""Checkpoint hashes in the run's log (``checkpoints.jsonl``), checked on resume and at evaluation.

Why: a checkpoint that was damaged, or swapped in from another run, loads fine and only shows later as a
large or "outside the log" discrepancy with no file named. ``nmech train`` records the SHA-256 and size
of every checkpoint it writes, one JSON line each (``{"step", "file", "sha256", "bytes"}``, appended
after the file is in place); :func:`verify_checkpoint` names a file whose bytes differ from what was
written, or that this run never wrote. Runs without the index (written with the tracker API and the
user's own checkpoints, or before hashes existed) are not checked.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from .runfile import JsonLines, RunLogError, append_jsonl, read_jsonl

INDEX_FILE = "checkpoints.jsonl"
_CHUNK = 1 << 22


def file_digest(path: str | os.PathLike) -> tuple[str, int]:
    """SHA-256 (hex) and size of a file, read in chunks."""
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def relative_name(run_dir: str | os.PathLike, path: str | os.PathLike) -> str:
    """How the index names a checkpoint: its path relative to the run directory, with '/'."""
    try:
        return Path(os.path.relpath(Path(path).resolve(), Path(run_dir).resolve())).as_posix()
    except ValueError:  # another drive (Windows)
        return Path(path).as_posix()


def read_index(run_dir: str | os.PathLike) -> JsonLines | None:
    """The checkpoint index of a run (None when the run has none)."""
    path = Path(run_dir) / INDEX_FILE
    return read_jsonl(path) if path.exists() else None


def index_entry(step: int, name: str, sha256: str, size: int) -> dict[str, Any]:
    return {"step": int(step), "file": name, "sha256": sha256, "bytes": int(size)}


def record_checkpoint(run_dir: str | os.PathLike, step: int, path: str | os.PathLike, sha256: str, size: int) -> None:
    """Append a checkpoint's hash to the run's index (after the file itself is in place)."""
    append_jsonl(Path(run_dir) / INDEX_FILE, index_entry(step, relative_name(run_dir, path), sha256, size))


def find_entry(index: JsonLines, name: str) -> dict[str, Any] | None:
    """The newest index entry for the checkpoint called ``name``."""
    for entry in reversed(index.entries):
        if entry.get("file") == name:
            return entry
    return None


def check_against(entry: dict[str, Any] | None, path: str | os.PathLike, name: str) -> str | None:
    """One line saying why the file at ``path`` is not the checkpoint recorded in ``entry`` (None if it is)."""
    if entry is None:
        return (f"{name} is not recorded in {INDEX_FILE}: this run did not write it (copied in, from another run, "
                "or left from a trajectory that was resumed from an earlier step)")
    try:
        digest, size = file_digest(path)
    except OSError as exc:
        return f"{name} cannot be read ({exc.strerror or type(exc).__name__})"
    if digest != entry.get("sha256") or size != entry.get("bytes"):
        return (f"{name} differs from the checkpoint written at step {entry.get('step')} (sha256 {digest[:12]}…, "
                f"{size} bytes; recorded {str(entry.get('sha256'))[:12]}…, {entry.get('bytes')} bytes): "
                "damaged or replaced")
    return None


def verify_checkpoint(run_dir: str | os.PathLike, path: str | os.PathLike) -> str | None:
    """Check a checkpoint file against the hash recorded when it was written.

    Returns None when it matches, or when the run keeps no index (nothing to check against); otherwise one
    line naming the file and what is wrong (damaged, replaced, not written by this run, or a damaged index).
    """
    try:
        index = read_index(run_dir)
    except RunLogError as exc:
        return str(exc)
    if index is None:
        return None
    name = relative_name(run_dir, path)
    return check_against(find_entry(index, name), path, name)


__all__ = ["INDEX_FILE", "check_against", "file_digest", "find_entry", "index_entry", "read_index",
           "record_checkpoint", "relative_name", "verify_checkpoint"]
