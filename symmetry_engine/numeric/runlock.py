"""One writer per run directory, and SIGTERM turned into an exception so writers can flush.

Why: two trainers on one ``--out`` (a requeued cluster job does exactly this) both append to
``stats.bin``; the interleaved records make the log unreadable forever. Every writer — ``train``, the
tracker (through ``RunWriter``) and report writers — holds the directory's lock while it writes.

How: ``RUN_DIR/run.lock`` holds one JSON line naming the holder (pid, host, what it does, since when)
and is ``flock``-ed while held. The kernel drops a flock when its process dies, so a lock file that still
names a holder but is not locked was left by a process that died (SIGKILL, out of memory, power loss):
that stale lock is named in a warning and taken over. Where ``flock`` is not available (some network file
systems) the named pid is checked instead (same host). Within one process the lock is re-entrant
(``train`` holds it and its tracker takes it again); a forked child does not inherit it.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from .runfile import RunLogError, describe_os_error

LOCK_FILE = "run.lock"
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class RunLockedError(RunLogError):
    """Another live process writes this run directory; the message names it."""


class Terminated(BaseException):
    """SIGTERM arrived (see :func:`sigterm_raises`); like KeyboardInterrupt, not an error of the program."""


@dataclass
class _Held:
    pid: int
    fd: int
    count: int


_HELD: dict[str, _Held] = {}
_GUARD = threading.Lock()


def prepare_run_dir(run_dir: str | os.PathLike) -> Path:
    """Create ``run_dir`` (and parents) or say in one line why it cannot be: a file where a directory
    belongs, a read-only file system, no permission."""
    path = Path(run_dir)
    for part in [path, *path.parents]:
        if part.exists() or part.is_symlink():
            if not part.is_dir():
                raise RunLogError(f"{part} is a file where a directory belongs (needed for {path})")
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunLogError(f"cannot create {path}: {describe_os_error(exc, exc.filename or path)}") from None
    return path


def _holder(fd: int) -> dict[str, Any] | None:
    try:
        text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
    except OSError:
        return None
    if not text:
        return None
    try:
        info = json.loads(text)
        return info if isinstance(info, dict) else {"raw": text[:80]}
    except ValueError:
        return {"raw": text[:80]}


def _describe(info: dict[str, Any]) -> str:
    if "pid" not in info:
        return f"an unknown writer ({info.get('raw', '?')!r})"
    return f"pid {info['pid']} ({info.get('purpose', '?')}) on {info.get('host', '?')} since {info.get('since', '?')}"


def _alive_here(info: dict[str, Any]) -> bool:
    """Whether the holder named in ``info`` is a live process on this host (other than this one)."""
    if info.get("host") != socket.gethostname() or not isinstance(info.get("pid"), int):
        return False
    if info["pid"] == os.getpid():
        return False
    try:
        os.kill(info["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """The write lock of one run directory: ``with RunLock(run_dir, "nmech train"): ...``.

    Raises :class:`RunLockedError` (one line naming the holder) if another live process holds it, and
    :class:`RunLogError` if the directory cannot be created or written. A stale lock (its holder died)
    is reported through ``on_stale`` (default: ``warnings.warn``) and taken over; ``stale`` keeps the line.
    """

    def __init__(self, run_dir: str | os.PathLike, purpose: str,
                 on_stale: Callable[[str], None] | None = None) -> None:
        self.run_dir = prepare_run_dir(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.purpose = purpose
        self.stale: str | None = None
        self._key = os.path.realpath(self.run_dir)
        self._released = False
        with _GUARD:
            held = _HELD.get(self._key)
            if held is not None and held.pid == os.getpid():
                held.count += 1
                return
            _HELD[self._key] = _Held(os.getpid(), self._acquire(), 1)
        if self.stale is not None:
            (on_stale or (lambda msg: warnings.warn(msg, RuntimeWarning, stacklevel=3)))(self.stale)

    def _acquire(self) -> int:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RunLogError(f"cannot write in {self.run_dir}: {describe_os_error(exc, self.path)}") from None
        try:
            try:
                import fcntl
            except ImportError:  # not a POSIX system: the named pid is all there is
                fcntl = None
            try:
                if fcntl is None:
                    raise OSError(errno.ENOSYS, "flock is not available")
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                flocked = True
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    info = _holder(fd) or {}
                    raise RunLockedError(f"{self.run_dir} is in use by {_describe(info) if info else 'another process'}"
                                         f"; a second writer would corrupt its files: wait for it to finish, or stop "
                                         f"it") from None
                if exc.errno not in _NO_FLOCK:
                    raise RunLogError(f"cannot lock {self.path}: {describe_os_error(exc, self.path)}") from None
                flocked = False
            info = _holder(fd)
            if info is not None:
                if not flocked and _alive_here(info):
                    raise RunLockedError(f"{self.run_dir} is in use by {_describe(info)}; a second writer would "
                                         "corrupt its files: wait for it to finish, or stop it")
                self.stale = (f"stale lock in {self.run_dir} from {_describe(info)}, which ended without releasing it "
                              "(killed?); taken over")
            me = {"pid": os.getpid(), "host": socket.gethostname(), "purpose": self.purpose,
                  "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
                os.fsync(fd)
            except OSError as exc:
                raise RunLogError(f"cannot write in {self.run_dir}: {describe_os_error(exc, self.path)}") from None
        except BaseException:
            os.close(fd)
            raise
        return fd

    def release(self) -> None:
        """Give the lock up (the last release in this process clears the file and unlocks it)."""
        if self._released:
            return
        self._released = True
        with _GUARD:
            held = _HELD.get(self._key)
            if held is None or held.pid != os.getpid():
                return
            held.count -= 1
            if held.count > 0:
                return
            del _HELD[self._key]
        try:
            os.ftruncate(held.fd, 0)
        except OSError:
            pass
        os.close(held.fd)   # closing the descriptor drops the flock

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block SIGTERM raises :class:`Terminated` (main thread only), so a writer flushes its log
    and releases its lock as after Ctrl-C, instead of dying between two writes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Terminated("terminated by SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


__all__ = ["LOCK_FILE", "RunLock", "RunLockedError", "Terminated", "prepare_run_dir", "sigterm_raises"]
