"""Optimizer hooks that record, per step, symmetry group and member class, the statistics the laws need.

Why hooks: users keep their own ``torch.optim`` optimizer and training loop and add two lines
(``track(...)`` and ``close()``). ``register_step_pre_hook`` sees θ_n and ĝ_n = ``p.grad`` before the
update — under DDP the gradients already all-reduced, under a GradScaler already unscaled — and
``register_step_post_hook`` sees θ_{n+1}. A skipped step (GradScaler found inf/NaN and did not call
``step()``) fires no hook, so it records nothing and does not advance the step count.

Why it costs little (benchmarks/README.md): per step there is no Python work per symmetry group or member.
Each tracked parameter is read once before the step by a fused loop (numeric/kernels.py) that writes its
per-index sums along axis 0 and axis 1 into one float64 buffer; after the step its momentum buffer is read
once for |Δ|² (Δ = −η v for ``torch.optim.SGD``; −η(ĝ + λθ) without momentum, already summed before the
step). A precomputed gather (one sparse product on CPU, one ``index_add_`` elsewhere) turns those sums
into every slot's statistics (numeric/partial_sums.py, numeric/tracker_plan.py). Nesterov, ``maximize``
and other optimizer classes keep a copy of the tracked parameters across ``step()`` (one extra copy of
them) and read Δ = θ_{n+1} − θ_n.

Records: each step's record is built in one device buffer and streamed to ``stats.bin`` as it completes —
on CPU written straight to the OS page cache, on CUDA copied asynchronously into one pinned host buffer
and written at the next step (no host synchronisation per step) — and fsynced every ``flush_every``
records. The tracker so holds one record (two on CUDA), not ``flush_every``; a killed process loses at
most the record in flight, a power cut at most what was not yet fsynced.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from . import kernels
from .classes import CLASS_COLUMNS, OptimizerClass, assign_classes, check_classes, class_row, rule_of
from .layout import RecordLayout
from .partial_sums import PartialSums
from .record_sink import RecordSink as _RecordSink
from .runlog import FORMAT, RunLogError, RunWriter
from .samples import DEFAULT_COUNT, Sampler, check_entries, choose_entries, samples_meta
from ..symmetry import Symmetry

F64 = torch.float64


def optimizer_config(optimizer: torch.optim.Optimizer, group: Mapping[str, Any]) -> dict[str, Any]:
    """The run.json ``optimizer`` summary, read from one param group (initial lr when a schedule set it).

    The laws use the per-class, per-step hyper-parameters of the log; this entry is for people."""
    cls = type(optimizer).__name__.lower()
    betas = group.get("betas")
    lr = group.get("initial_lr", group.get("lr", float("nan")))
    return {
        "rule": rule_of(optimizer),
        "optimizer_class": type(optimizer).__name__,
        "lr": float(lr),
        "momentum": float(group.get("momentum", betas[0] if betas else 0.0)),
        "dampening": float(group.get("dampening", 0.0)),
        "nesterov": bool(group.get("nesterov", False)),
        "weight_decay": float(group.get("weight_decay", 0.0)),
        "decoupled_weight_decay": bool(group.get("decoupled_weight_decay", cls == "adamw")),
    }


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module whose parameter names the symmetries use: DDP's ``module``, torch.compile's ``_orig_mod``."""
    while True:
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, torch.nn.Module):
            model = model._orig_mod
        else:
            return model


def _rank() -> int:
    d = torch.distributed
    return d.get_rank() if d.is_available() and d.is_initialized() else 0


@dataclass
class _StepInfo:
    """What the host knows about the step in flight (filled into its record when it reaches the host)."""

    step: int
    hp: np.ndarray
    d_factor: np.ndarray     # per class: η² when Δ = −η·(what was summed), 1 for a snapshot
    loss: float | None


class Tracker:
    """Attach to ``optimizer`` and write a run log of ``symmetries`` statistics to ``run_dir``.

    The log is opened lazily (first step, ``state_dict`` or ``close``), so a resumed run can call
    ``load_state_dict`` first and continue the existing log, and so the member classes (numeric/classes.py)
    see the optimizer as it is when tracking starts — momentum buffers included, which is what lets a
    tracker attached after many untracked steps predict as exactly as one attached at step 0. A directory
    that already holds a log is refused unless resumed or ``overwrite=True``. Usable as a context manager:
    leaving the block closes the log, or after an exception flushes it without a final record, so it stays
    resumable.

    ``model`` may be wrapped in DistributedDataParallel (or torch.compile): names are those of the wrapped
    module. Under ``torch.distributed`` only rank 0 records and writes (``rank0_only``); the other ranks'
    trackers count steps only, so their ``state_dict`` matches. ``autocast_dtype`` / ``grad_scaler``
    describe mixed-precision training for run.json and the verdicts (numeric/verdicts.py); with a
    GradScaler, call ``record_loss`` once per iteration and skipped steps are counted. ``fused=False``
    forces the torch reductions instead of the numba loop (numeric/kernels.py). ``samples`` entries of
    one parameter per tracked layer are recorded at every step into ``samples.bin`` (numeric/samples.py;
    0 turns it off; a resumed log keeps the sample it was started with). ``tensorboard`` names a directory
    for live TensorBoard scalars (numeric/tensorboard.py): every ``tensorboard_every`` steps (default
    ``flush_every``) the log so far is evaluated and its new steps written, the monitor's time kept under
    ``tensorboard_budget`` (5%) of the wall time.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, run_dir: str | os.PathLike,
                 symmetries: Sequence[Symmetry], meta: Mapping[str, Any] | None = None,
                 flush_every: int = 50, overwrite: bool = False, max_pending_bytes: int = 8 << 20, *,
                 autocast_dtype: torch.dtype | str | None = None, grad_scaler: Any = None,
                 rank0_only: bool = True, fused: bool | None = None, samples: int = DEFAULT_COUNT,
                 tensorboard: str | os.PathLike | None = None, tensorboard_every: int | None = None,
                 tensorboard_budget: float = 0.05) -> None:
        model = unwrap_model(model)
        self.model, self.optimizer, self.run_dir = model, optimizer, run_dir
        self.symmetries = list(symmetries)
        self.meta = dict(meta or {})
        self.flush_every = max(1, int(flush_every))
        self.max_pending_bytes = int(max_pending_bytes)
        self.overwrite = overwrite
        self.step = 0
        self.skipped_steps = 0
        self.rank = _rank()
        self.active = self.rank == 0 or not rank0_only
        self.fused = kernels.HAVE_NUMBA if fused is None else bool(fused) and kernels.HAVE_NUMBA
        self.autocast_dtype = None if autocast_dtype is None else str(autocast_dtype).replace("torch.", "")
        self.grad_scaler = grad_scaler
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
            raise ValueError(f"samples must be a non-negative integer (entries per layer), got {samples!r}")
        self.samples = samples
        self._sampler: Sampler | None = None
        self.monitor = None   # the live TensorBoard monitor, made when the log opens
        self._tensorboard = None
        if tensorboard is not None and self.active:
            from .tensorboard import require_tensorboard

            require_tensorboard()   # one-line ImportError with the install hint, before anything is written
            self._tensorboard = (tensorboard, int(tensorboard_every or self.flush_every), float(tensorboard_budget))
        self._writer: RunWriter | None = None
        self._sink: _RecordSink | None = None
        self._resume_step: int | None = None
        self._resume_record_size: int | None = None
        self._closed = False
        self._loss: torch.Tensor | float = float("nan")
        self._loss_pending = False
        self._current: _StepInfo | None = None
        self._skip_current = False
        self._snapshot: dict[str, torch.Tensor] = {}
        self._all_params = [p for _, p in model.named_parameters()]
        if not self._all_params:
            raise ValueError("model has no parameters to track")
        self.device = self._all_params[0].device
        self._params = self._check_symmetries()
        self._handles = [optimizer.register_step_pre_hook(self._pre_hook),
                         optimizer.register_step_post_hook(self._post_hook)]

    def _check_symmetries(self) -> dict[str, torch.Tensor]:
        """The tracked parameters by name; every member must name a parameter and fit its shape."""
        params = dict(self.model.named_parameters(remove_duplicate=False))
        used: dict[str, torch.Tensor] = {}
        for sym in self.symmetries:
            for m in sym.members:
                if m.param not in params:
                    raise ValueError(f"symmetry {sym.key} names {m.param!r}, which is not a parameter of the model")
                p = params[m.param]
                if m.axis is not None and not (0 <= m.axis < p.dim() and max(m.indices) < p.shape[m.axis]
                                               and min(m.indices) >= 0):
                    raise ValueError(f"symmetry {sym.key}: member {m.param} axis {m.axis} indices out of "
                                     f"range for shape {tuple(p.shape)}")
                used[m.param] = p
        return used

    def _entries_of(self, sym: Symmetry) -> int:
        """Parameter entries a group's members cover (|ξ|² of a translation group)."""
        total = 0
        for m in sym.members:
            p = self._params[m.param]
            total += p.numel() if m.axis is None else len(m.indices) * (p.numel() // max(1, p.shape[m.axis]))
        return int(total)

    @property
    def record_size(self) -> int:
        """Values per record (known once the log is open: it depends on the member classes)."""
        return self._open().record_size

    # -- plan ----------------------------------------------------------------------------------------
    def _build_plan(self, classes: Sequence[OptimizerClass], layout: RecordLayout) -> None:
        """The partial sums and record gather (partial_sums.py), and the per-class bookkeeping."""
        self.classes = list(classes)
        self.layout = layout
        self._identity = layout.identity
        self._sums = PartialSums(self._params, self._all_params, self.symmetries, layout, classes, self.device,
                                 self.fused)
        self._gather = self._sums.gather
        self._any_fused = self._sums.any_fused
        self._rec = torch.full((layout.record_size,), float("nan"), dtype=F64, device=self.device)
        self._class_of = {n: c.id for c in classes for n in c.params}
        self._class_params = [[self._params[n] for n in c.params if n in self._params] for c in classes]
        self._class_pos = np.asarray([layout.class_offset(c.id, col) for c in classes for col in CLASS_COLUMNS],
                                     dtype=np.int64)
        ids = {id(p): gi for gi, grp in enumerate(self.optimizer.param_groups) for p in grp["params"]}
        self._group_of = {n: ids.get(id(p)) for n, p in self._params.items()}
        self._warnings = self._class_warnings()

    def _class_warnings(self) -> list[str]:
        out = []
        if any(c.param_group is None for c in self.classes):
            out.append("some tracked parameters are not in the optimizer: they form a class of their own (η = 0)")
        mixed = sum(1 for g in self.layout.group_classes if len(g) > 1)
        if mixed:
            out.append(f"{mixed} symmetry group(s) have members in several optimizer classes (different param "
                       "groups, frozen members or late-filled momentum buffers): their laws carry "
                       "optimizer-induced breaking terms")
        return out

    def _delta_source(self, gi: int | None) -> str:
        """How Δ of a parameter in param group ``gi`` is obtained this step."""
        if gi is None:
            return "not_updated"  # outside the optimizer: step() cannot move it
        if type(self.optimizer) is not torch.optim.SGD or self._identity:
            return "snapshot"
        grp = self.optimizer.param_groups[gi]
        if grp.get("nesterov") or grp.get("maximize") or grp.get("differentiable"):
            return "snapshot"
        return "momentum_buffer" if grp.get("momentum", 0) else "update_rule"

    def _initial_state(self) -> np.ndarray | None:
        """Per-slot buffer statistics (m; W, V) when some class already had a momentum buffer, else None."""
        if all(c.fresh_buffer for c in self.classes) or type(self.optimizer) is not torch.optim.SGD:
            return None
        lay = self.layout
        out = np.zeros(lay.initial_size())
        slot_index = {sl: i for i, sl in enumerate(lay.slots)}
        with torch.no_grad():
            for gi, sym in enumerate(self.symmetries):
                for m in sym.members:
                    p = self._params[m.param]
                    buf = self.optimizer.state.get(p, {}).get("momentum_buffer")
                    if buf is None:
                        continue
                    idx = m.index(p.dim())
                    th, v = p.detach().to(F64)[idx], buf.detach().to(F64)[idx]
                    base = int(lay.initial_offsets[slot_index[(gi, self._class_of[m.param])]])
                    if sym.kind == "translation":
                        out[base] += m.sign * float(v.sum())
                    else:
                        out[base] += m.sign * float((th * v).sum())
                        out[base + 1] += m.sign * float((v * v).sum())
        return out

    # -- log -----------------------------------------------------------------------------------------
    def _open(self) -> RunWriter:
        if self._writer is not None:
            return self._writer
        if self._closed:
            raise RunLogError(f"{self.run_dir}: tracker already closed")
        if not self.active:
            raise RunLogError(f"rank {self.rank} does not write the run log (rank 0 does)")
        sync_every = lambda size: max(1, min(self.flush_every, self.max_pending_bytes // (8 * size)))  # noqa: E731
        if self._resume_step is not None:
            w = RunWriter(self.run_dir, symmetries=self.symmetries, flush_every=self.flush_every,
                          resume_step=self._resume_step)
            why = check_classes(w.classes, self.optimizer, self._params)
            if why is None and self._resume_record_size not in (None, -1, w.record_size):
                why = "record size differs from the tracker state's"
            if why is not None:
                w.abandon()
                raise RunLogError(f"{self.run_dir}: cannot resume this log: {why}")
            sm = w.meta.get("samples")
            if sm:
                try:
                    check_entries(sm, {n: tuple(p.shape) for n, p in self._params.items()}, self.run_dir)
                except RunLogError:
                    w.abandon()
                    raise
                self._sampler = Sampler(sm["params"], self._params, self.device)
            self._build_plan(w.classes, w.layout)
            self._writer = w
            self._start_monitor()
            self._sink = _RecordSink(w, self.device, sync_every(w.record_size))
            return w
        classes, assignment = assign_classes(self.optimizer, self._params)
        group_classes = tuple(tuple(sorted({assignment[m.param] for m in s.members})) for s in self.symmetries)
        identity = type(self.optimizer) is not torch.optim.SGD
        layout = RecordLayout(tuple(s.kind for s in self.symmetries), group_classes, len(classes), identity)
        self._build_plan(classes, layout)
        grp = self.optimizer.param_groups[next((c.param_group for c in classes if c.param_group is not None), 0)]
        meta = {"optimizer": optimizer_config(self.optimizer, grp),
                "dtype": str(self._all_params[0].dtype).replace("torch.", ""), "device": str(self.device)}
        if self.autocast_dtype is not None or self.grad_scaler is not None:
            meta["amp"] = {"autocast_dtype": self.autocast_dtype, "grad_scaler": self.grad_scaler is not None,
                           "skipped_steps": 0}
        d = torch.distributed
        if d.is_available() and d.is_initialized():
            meta["distributed"] = {"backend": str(d.get_backend()), "world_size": d.get_world_size(),
                                   "recorded_by_rank": self.rank}
        meta.update(self.meta)
        meta["group_entries"] = [self._entries_of(s) for s in self.symmetries]
        entries = choose_entries({n: tuple(p.shape) for n, p in self.model.named_parameters() if n in self._params},
                                 self.samples)
        meta["samples"] = samples_meta(entries)
        self._sampler = Sampler(entries, self._params, self.device) if entries else None
        sources = sorted({self._delta_source(self._group_of[n]) for n in self._params})
        meta["tracker"] = {"delta_source": sources, "optimizer_class": type(self.optimizer).__name__,
                           "model_class": type(self.model).__name__, "torch": torch.__version__,
                           "reductions": "fused (numba)" if self._any_fused else "torch",
                           "warnings": self._warnings, **dict(self.meta.get("tracker") or {})}
        self._writer = RunWriter(self.run_dir, meta, self.symmetries, layout=layout, classes=classes,
                                 initial_state=self._initial_state(), flush_every=self.flush_every,
                                 overwrite=self.overwrite)
        self._sink = _RecordSink(self._writer, self.device, sync_every(layout.record_size))
        self._start_monitor()
        return self._writer

    def _start_monitor(self) -> None:
        if self._tensorboard is not None and self.monitor is None:
            from .tensorboard import LiveMonitor

            d, every, budget = self._tensorboard
            self.monitor = LiveMonitor(self.run_dir, d, every=every, budget=budget)

    def flush(self) -> None:
        """Write the record in flight and fsync the log."""
        if not self.active:
            return
        self._open()
        self._sink.sync()

    def record_loss(self, loss: torch.Tensor | float) -> None:
        """Remember the minibatch loss of the coming step (kept on the device; no sync).

        With a GradScaler, a second call before the next step means the previous step was skipped."""
        if self._loss_pending and self.grad_scaler is not None:
            self.skipped_steps += 1
        self._loss_pending = True
        self._loss = loss.detach().reshape(()).to(F64) if isinstance(loss, torch.Tensor) else float(loss)

    # -- hooks ---------------------------------------------------------------------------------------
    def _pre_hook(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        if self._closed:
            return
        if any(a is not None for a in args[1:]) or kwargs.get("closure") is not None:
            raise RuntimeError("Tracker does not support optimizer.step(closure): gradients must exist before step()")
        self._skip_current = False
        # a GradScaler hands a fused optimizer the scale and the inf flag (keyword arguments or attributes):
        # its gradients are still scaled, and a step with found_inf set runs but changes nothing
        found_inf = kwargs.get("found_inf", getattr(optimizer, "found_inf", None))
        scale = kwargs.get("grad_scale", getattr(optimizer, "grad_scale", None))
        if found_inf is not None and float(found_inf) != 0:  # fused optimizer + GradScaler: this step is skipped
            self._skip_current = True
            self.skipped_steps += 1
            self._loss_pending = False
            return
        if not self.active:
            return
        gscale = 1.0 / float(scale) if scale is not None else 1.0  # one host read (a sync on CUDA), fused + scaler only
        self._open()
        with torch.no_grad():
            groups = optimizer.param_groups
            src_of_group = {gi: self._delta_source(gi) for gi in set(self._group_of.values())}
            self._sources = {n: src_of_group[gi] for n, gi in self._group_of.items()}
            self._had_grad = {n for n, p in self._params.items() if p.grad is not None}
            lam = {n: float(groups[gi]["weight_decay"]) for n, gi in self._group_of.items()
                   if self._sources[n] == "update_rule"}
            self._snapshot = {n: self._params[n].detach().clone() for n, s in self._sources.items() if s == "snapshot"}
            self._sums.run("pre", optimizer, self._sources, self._had_grad, self._snapshot, gscale, lam)
            if self._sampler is not None:
                self._sampler.take()   # θ_n's sampled entries, beside record n
            self._rec[3] = self._sums.grad_sq(gscale)
            hp = np.asarray([v for c, ps in zip(self.classes, self._class_params)
                             for v in class_row(optimizer, c, ps)], dtype=np.float64)
            factor = np.ones(len(self.classes))
            for c in self.classes:
                if c.param_group is not None and src_of_group.get(c.param_group) in ("momentum_buffer", "update_rule"):
                    factor[c.id] = float(groups[c.param_group]["lr"]) ** 2
            loss = self._loss
            if isinstance(loss, torch.Tensor):
                self._rec[2] = loss
            self._current = _StepInfo(self.step, hp, factor, None if isinstance(loss, torch.Tensor) else loss)

    def _post_hook(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        if self._closed or self._skip_current:
            self._skip_current = False
            return
        self._loss_pending = False
        if not self.active:
            self.step += 1
            return
        if self._current is None:
            return
        with torch.no_grad():
            self._sums.run("post", optimizer, self._sources, self._had_grad, self._snapshot)
            self._rec[self._gather.base:] = self._sums.gathered()
        info, self._current = self._current, None
        self._snapshot = {}
        self._loss = float("nan")
        self.step += 1
        self._sink.submit(self._rec, self._filler(info), None if self._sampler is None else self._sampler.row)
        if self.monitor is not None and self.step % self.monitor.every == 0:
            self._sink.drain()   # the record in flight (CUDA) reaches the file first
            self.monitor.update()

    def _filler(self, info: _StepInfo) -> Callable[[np.ndarray], None]:
        gth, cpos = self._gather, self._class_pos

        def fill(rec: np.ndarray) -> None:
            rec[0], rec[1] = float(info.step), 0.0
            if info.loss is not None:
                rec[2] = info.loss
            if cpos.size:
                rec[cpos] = info.hp
            if gth.d_positions.size:
                rec[gth.d_positions] *= info.d_factor[gth.d_class]
        return fill

    # -- lifecycle -----------------------------------------------------------------------------------
    def close(self) -> None:
        """Append the final state record θ_T, flush, mark the run closed and detach the hooks."""
        if self._closed:
            return
        if not self.active:
            self._detach()
            return
        w = self._open()
        self._sink.drain()
        with torch.no_grad():
            self._sums.run("state", self.optimizer)
            rec = self._rec.clone()
            rec[self._gather.base:] = self._sums.gathered()
            rec[self._gather.grad_positions] = float("nan")
            rec[:4] = torch.tensor([float(self.step), 1.0, float("nan"), float("nan")], dtype=F64)
            rec[torch.as_tensor(self._class_pos, device=self.device)] = float("nan")
        extra = None
        if self.autocast_dtype is not None or self.grad_scaler is not None:
            if self._loss_pending and self.grad_scaler is not None:
                self.skipped_steps += 1  # the last iteration's step never ran
            extra = {"amp": {**w.meta.get("amp", {}), "skipped_steps": int(self.skipped_steps)}}
        final_sample = None
        if self._sampler is not None:
            final_sample = self._sampler.take().cpu().numpy().copy()
            final_sample[0] = float(self.step)
        w.close(rec.cpu().numpy(), extra_meta=extra, final_sample=final_sample)
        self._detach()
        if self.monitor is not None:
            self.monitor.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def abort(self) -> None:
        """Stop after a failure (exception, NaN, Ctrl-C): flush what was recorded, write no final record.

        The log stays open-ended, so a resumed run can append to it and readers see an unclosed run.
        """
        if self._closed:
            return
        try:
            if self._writer is not None:
                self.flush()
        finally:
            if self._writer is not None:
                self._writer.abandon()
            self._detach()
            if self.monitor is not None:
                try:
                    self.monitor.close()   # what the log holds, up to its last row
                except Exception:  # noqa: BLE001 - a failing monitor must not hide the failure being handled
                    pass

    def _detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self._closed = True

    def state_dict(self) -> dict[str, Any]:
        """Small resumable state (the log is flushed first, so it holds every step before ``step``)."""
        if not self.active:
            return {"format": FORMAT, "step": int(self.step), "record_size": -1, "run_dir": str(self.run_dir)}
        self.flush()
        return {"format": FORMAT, "step": int(self.step), "record_size": int(self._writer.record_size),
                "run_dir": str(self.run_dir)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the log at ``state['step']``: records from that step on are cut (see RunWriter)."""
        if self._writer is not None or self._current is not None or self.step:
            raise RunLogError("load_state_dict must be called before the first tracked step")
        if state.get("format") != FORMAT:
            raise RunLogError("tracker state does not match this tracker (format differs)")
        self.step = int(state["step"])
        if not self.active:
            return
        self._resume_step = self.step
        self._resume_record_size = int(state.get("record_size", -1))
        self._open()

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def track(model: torch.nn.Module, optimizer: torch.optim.Optimizer, run_dir: str | os.PathLike,
          example_inputs: Any = None, loss: str = "cross_entropy", symmetries: Sequence[Symmetry] | None = None,
          **kw: Any) -> Tracker:
    """Find the model's symmetries (unless given) and attach a :class:`Tracker` to ``optimizer``.

    ``kw`` goes to :class:`Tracker` (``meta``, ``flush_every``, ``overwrite``, ``autocast_dtype``, ...).
    """
    if symmetries is None:
        if example_inputs is None:
            raise ValueError("track() needs example_inputs to find the symmetries (or pass symmetries=...)")
        from ..graph.analysis import analyze  # lazy: the graph analyzer is heavy and optional for the tracker

        symmetries = analyze(unwrap_model(model), example_inputs, loss=loss).symmetries
    meta = dict(kw.pop("meta", None) or {})
    tracker_meta = dict(meta.get("tracker") or {})
    tracker_meta.setdefault("loss", loss)
    if example_inputs is not None and hasattr(example_inputs, "shape"):
        tracker_meta.setdefault("input_shape", list(example_inputs.shape[1:]))
    meta["tracker"] = tracker_meta
    return Tracker(model, optimizer, run_dir, symmetries, meta=meta, **kw)
