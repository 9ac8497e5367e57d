"""The tracker's completed records (and their parameter-sample rows) on their way to the run directory.

Why apart from tracker.py: the hooks build each step's record in one device buffer; this sink moves it to
``stats.bin`` — on CPU at once (the OS page cache), on CUDA by an asynchronous copy into one pinned host
buffer that is written at the next step, so there is no host synchronisation per step — and fsyncs every
``sync_every`` records. A step's sample row (numeric/samples.py) travels with its record and is written
just before it.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from .runlog import RunWriter


class RecordSink:
    """Completed records → ``stats.bin``: written as each completes, fsynced every ``sync_every`` records."""

    def __init__(self, writer: RunWriter, device: torch.device, sync_every: int) -> None:
        self.writer, self.sync_every, self.unsynced = writer, max(1, sync_every), 0
        self.cuda = device.type == "cuda"
        self._host: torch.Tensor | None = None
        self._host_sample: torch.Tensor | None = None
        self._inflight: tuple[torch.Tensor, torch.Tensor | None, Any, Callable[[np.ndarray], None]] | None = None

    def submit(self, rec: torch.Tensor, fill: Callable[[np.ndarray], None], sample: torch.Tensor | None = None) -> None:
        """Queue a device record and its sample row (``sample[0]`` is set to the record's step);
        ``fill`` completes the record's host-known fields (step, hyper-parameters)."""
        if not self.cuda:
            self._write(rec.numpy(), fill, None if sample is None else sample.numpy())
            return
        self.drain()  # the previous record's copy finished long ago (one step of GPU work was queued after it)
        if self._host is None:
            self._host = torch.empty(rec.shape, dtype=rec.dtype, pin_memory=True)
        self._host.copy_(rec, non_blocking=True)
        if sample is not None:
            if self._host_sample is None:
                self._host_sample = torch.empty(sample.shape, dtype=sample.dtype, pin_memory=True)
            self._host_sample.copy_(sample, non_blocking=True)
        ev = torch.cuda.Event()
        ev.record()
        self._inflight = (self._host, None if sample is None else self._host_sample, ev, fill)

    def drain(self) -> None:
        if self._inflight is not None:
            host, host_sample, ev, fill = self._inflight
            self._inflight = None
            ev.synchronize()
            self._write(host.numpy(), fill, None if host_sample is None else host_sample.numpy())

    def _write(self, rec: np.ndarray, fill: Callable[[np.ndarray], None], sample: np.ndarray | None = None) -> None:
        fill(rec)
        if sample is not None:
            sample[0] = rec[0]
            self.writer.append_sample(sample)
        self.writer.append(rec)
        self.writer.write()
        self.unsynced += 1
        if self.unsynced >= self.sync_every:
            self.sync()

    def sync(self) -> None:
        self.drain()
        self.writer.flush()
        self.unsynced = 0


__all__ = ["RecordSink"]
