"""The run directory as the training loop sees it: what is there, whether it may be resumed, replaced or
must be left alone, hashed checkpoints, and the repair of torn log tails on resume.

Why apart from the loop: these are the decisions that can lose data. They are taken before the slow
set-up and before any file changes: :func:`scan_run_dir` reads and validates every log, :func:`plan_start`
refuses to touch a run it cannot resume (a tracker-API run, another configuration, a damaged log) unless
``overwrite`` is asked for, and only then does the loop cut tails (:func:`repair_logs`).
"""

from __future__ import annotations

import io
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from symmetry_engine.numeric.checkpoint_index import (INDEX_FILE, check_against, file_digest, find_entry,
                                                      read_index, record_checkpoint, relative_name)
from symmetry_engine.numeric.runfile import (JsonLines, RunLogError, append_jsonl, read_json, read_jsonl,
                                             read_records, truncate_file, write_bytes_atomic)

from .train_config import TRAJECTORY_FIELDS, TrainConfig, TrainingError

CKPT_DIR = "checkpoints"
EVAL_FILE = "eval.jsonl"
RUN_FILES = ("run.json", "stats.bin", "stats.crc", "samples.bin", "samples.crc", EVAL_FILE, INDEX_FILE)
RUN_DIRS = (CKPT_DIR, "report")
_TRAIN_ONLY = {EVAL_FILE, INDEX_FILE, CKPT_DIR}   # written by `train` alone, never by the tracker API
_CHECKPOINT_KEYS = {"step", "model", "optimizer", "rng"}


def checkpoint_path(out: str | Path, step: int) -> Path:
    return Path(out) / CKPT_DIR / f"step_{step:08d}.pt"


def list_checkpoints(out: str | Path) -> list[int]:
    d = Path(out) / CKPT_DIR
    if not d.is_dir():
        return []
    return sorted(int(p.stem[5:]) for p in d.glob("step_*.pt") if p.stem[5:].isdigit())


@dataclass
class RunDirState:
    """What a run directory holds, read without changing it."""

    out: Path
    artefacts: list[str] = field(default_factory=list)
    meta: dict[str, Any] | None = None
    checkpoints: list[int] = field(default_factory=list)
    eval_log: JsonLines | None = None
    index: JsonLines | None = None
    problems: list[str] = field(default_factory=list)   # damaged files: resume refused unless overwriting


def scan_run_dir(out: Path) -> RunDirState:
    """Inventory and validate ``out`` (files where directories belong are refused at once)."""
    for name in RUN_FILES:
        if (out / name).is_dir():
            raise TrainingError(f"{out / name} is a directory where a file belongs")
    for name in RUN_DIRS:
        if (out / name).exists() and not (out / name).is_dir():
            raise TrainingError(f"{out / name} is a file where a directory belongs")
    st = RunDirState(out)
    st.artefacts = [n for n in RUN_FILES if (out / n).exists()]
    st.artefacts += [n for n in RUN_DIRS if (out / n).is_dir() and any((out / n).iterdir())]
    st.checkpoints = list_checkpoints(out)
    if (out / "run.json").exists():
        try:
            meta = read_json(out / "run.json")
            st.meta = meta if isinstance(meta, dict) else None
            if st.meta is None:
                st.problems.append(f"{out / 'run.json'} is not a JSON object")
        except RunLogError as exc:
            st.problems.append(str(exc))
    for attr, read in (("eval_log", lambda: read_jsonl(out / EVAL_FILE)), ("index", lambda: read_index(out))):
        try:
            setattr(st, attr, read())
        except RunLogError as exc:
            st.problems.append(str(exc))
    return st


def config_differences(cfg: TrainConfig, saved: dict[str, Any]) -> list[str]:
    """Trajectory fields on which ``cfg`` and a saved config disagree ("name old → new")."""
    now = cfg.to_json()
    fields = TRAJECTORY_FIELDS + (("steps", "epochs") if cfg.schedule == "cosine" else ())  # cosine spans the run
    norm = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731
    return [f"{k} {saved.get(k)!r} → {now.get(k)!r}" for k in fields if k in saved and norm(saved.get(k)) != norm(now.get(k))]


def _different(out: Path, diff: list[str]) -> TrainingError:
    return TrainingError(f"{out} holds a run with a different configuration ({'; '.join(diff)}); "
                         "use a new --out to start another run (or --overwrite to replace it)")


def plan_start(st: RunDirState, cfg: TrainConfig, overwrite: bool) -> str:
    """``"fresh"`` (nothing there), ``"replace"`` (clear the run files, then start) or ``"resume"``.

    Refuses in one line, changing nothing, a directory holding a run ``train`` cannot resume: a run
    written with the tracker API, files without a run.json, another configuration, damaged logs.
    """
    out = st.out
    if overwrite:
        return "replace" if st.artefacts else "fresh"
    if st.problems:
        raise TrainingError(f"{st.problems[0]}; nothing was changed (--overwrite starts the run again from step 0)")
    if st.checkpoints:
        return "resume"
    if not st.artefacts:
        return "fresh"
    saved = (st.meta or {}).get("train")
    if st.meta is not None and not isinstance(saved, dict):
        raise TrainingError(f"{out} holds a run written with the tracker API ({', '.join(st.artefacts)}); train cannot "
                            "resume it and will not replace it: use another --out, or --overwrite to replace it")
    if isinstance(saved, dict):
        diff = config_differences(cfg, saved)
        if diff:
            raise _different(out, diff)
        return "replace"    # this configuration's own run, stopped before its first checkpoint: start it again
    if set(st.artefacts) <= _TRAIN_ONLY:
        return "replace"    # an untracked run stopped before its first checkpoint
    raise TrainingError(f"{out} holds {', '.join(st.artefacts)} but no run.json or checkpoints: not a run train can "
                        "resume; use another --out, or --overwrite to replace it")


def clear_run_files(out: Path) -> None:
    """Remove what a run directory holds (``--overwrite``): the logs, checkpoints and a stale report."""
    for name in RUN_FILES:
        for p in (out / name, out / (name + ".tmp")):
            if p.exists():
                p.unlink()
    for name in RUN_DIRS:
        if (out / name).is_dir():
            shutil.rmtree(out / name)


def verified_log_end(out: Path, st: RunDirState) -> int | None:
    """The latest step a tracked run can resume at: every record before it is present and verified."""
    if st.meta is None or not (out / "stats.bin").exists():
        return None
    try:
        data, _ = read_records(out / "stats.bin", int(st.meta["record_size"]))
    except (RunLogError, KeyError, TypeError, ValueError):
        return None
    if data.shape[0] == 0:
        return 0
    last = int(data[-1, 0])
    return last if data[-1, 1] != data[-1, 1] else last + 1   # a close record (η = NaN) holds θ_T, not a step


def load_latest(out: Path, st: RunDirState, max_step: int | None, warn: Callable[[str], None]) -> dict[str, Any] | None:
    """The newest checkpoint that matches the hash recorded when it was written, fits the verified log and
    loads; skipped newer ones are reported. With checkpoints but none usable the run is refused (starting
    over would overwrite its log)."""
    index = st.index
    last_recorded = max((int(e.get("step", -1)) for e in index.entries), default=-1) if index else -1
    bad = []
    for step in reversed(st.checkpoints):
        path = checkpoint_path(out, step)
        if max_step is not None and step > max_step:
            bad.append(f"step {step} (after the end of the verified log, step {max_step})")
            continue
        if index is not None:
            name = relative_name(out, path)
            entry = find_entry(index, name)
            # the newest file may lack its line: a kill between writing it and recording its hash
            if entry is not None or step <= last_recorded:
                problem = check_against(entry, path, name)
                if problem:
                    bad.append(f"step {step} ({problem})")
                    continue
        try:
            ck = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a damaged file: say so, fall back to an older one
            bad.append(f"step {step} ({type(exc).__name__})")
            continue
        if not isinstance(ck, dict) or not _CHECKPOINT_KEYS <= set(ck):
            bad.append(f"step {step} (not a checkpoint written by nmech train)")
            continue
        if bad:
            warn(f"unreadable checkpoint(s) or unusable: {'; '.join(bad)}; resuming from step {step}")
        return ck
    if st.checkpoints:
        raise TrainingError(f"{out}: no checkpoint can be read ({'; '.join(bad)}); refusing to overwrite the run — "
                            "use a new --out (or --overwrite)")
    return None


def repair_logs(out: Path, st: RunDirState, start: int) -> None:
    """After a successful resume at ``start``: cut eval.jsonl and checkpoints.jsonl to their entries up to
    ``start`` (dropping a torn last line and what the lost trajectory wrote), and record the hash of the
    checkpoint resumed from if a kill came between writing it and recording it."""
    for log in (st.eval_log, st.index):
        if log is None:
            continue
        n = 0
        while n < len(log.entries) and int(log.entries[n].get("step", -1)) <= start:
            n += 1
        size = log.size_keeping(n)
        if log.path.exists() and log.path.stat().st_size != size:
            truncate_file(log.path, size)
    path = checkpoint_path(out, start)
    if path.exists():
        name = relative_name(out, path)
        if st.index is None or find_entry(st.index, name) is None:
            record_checkpoint(out, start, path, *file_digest(path))


def canonical(obj: Any) -> Any:
    """A copy of nested dicts/lists/tuples with every string interned.

    Pickle (inside ``torch.save``) writes a string once and refers back to it when the *same object*
    recurs. An optimizer state loaded on resume carries fresh copies of keys like ``"lr"`` that an
    uninterrupted run shares with its config, so the same values would serialize to different bytes
    (and hashes). Interning makes the bytes a function of the values only."""
    if isinstance(obj, str):
        return sys.intern(str(obj))
    if isinstance(obj, dict):
        return {canonical(k): canonical(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [canonical(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(canonical(v) for v in obj)
    return obj


def save_checkpoint(out: Path, step: int, payload: dict[str, Any]) -> None:
    """Serialize in memory (canonically: the same values give the same bytes, resumed or not), write
    atomically (a disk-full error is an OSError naming the file, not torch's "unexpected pos"), then
    record the file's hash in checkpoints.jsonl."""
    import hashlib

    buf = io.BytesIO()
    torch.save(canonical(payload), buf)
    data = buf.getvalue()
    path = checkpoint_path(out, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, data)
    record_checkpoint(out, step, path, hashlib.sha256(data).hexdigest(), len(data))


def append_eval(out: Path, entry: dict[str, Any]) -> None:
    append_jsonl(out / EVAL_FILE, entry)


def stderr_warning(message: str) -> None:
    print(f"nmech train: warning: {' '.join(message.split())}", file=sys.stderr)


__all__ = ["CKPT_DIR", "EVAL_FILE", "RunDirState", "append_eval", "checkpoint_path", "clear_run_files",
           "config_differences", "list_checkpoints", "load_latest", "plan_start", "repair_logs", "save_checkpoint",
           "scan_run_dir", "stderr_warning", "verified_log_end"]
