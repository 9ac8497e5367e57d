"""Optimizer hooks that record, per step and symmetry group, the statistics the laws need.

Why hooks: users keep their own ``torch.optim`` optimizer and training loop and add two lines
(``track(...)`` and ``close()``). ``register_step_pre_hook`` sees θ_n and ĝ_n = ``p.grad`` before the
update; ``register_step_post_hook`` sees θ_{n+1}. Why batched reductions: a VGG has tens of thousands of
groups, so a Python loop per group per step would dominate training. Instead, for every
(parameter, axis) used by any member, one float64 reduction of a stacked tensor of elementwise products
over all other axes gives per-index sums; a precomputed (index, group, ±1) list maps them to groups with
one ``index_add_`` per family. Records stay on the device and are copied to the host only when the log is
flushed (every ``flush_every`` steps, sooner if the buffered records would pass ``max_pending_bytes``), so a
GPU run syncs once per flush, and the memory per step is O(groups) with a fixed cap on the buffer.

θ_{n+1} − θ_n (for ``D``): for ``torch.optim.SGD`` without Nesterov or ``maximize`` it is read from the
optimizer itself — Δ = −η v_{n+1} from the momentum buffer, or Δ = −η(ĝ + λθ_n) with momentum 0 (no
extra memory). Every other case (Nesterov, ``maximize``, other optimizer classes, parameters outside the
optimizer) keeps a snapshot of the tracked parameters across ``step()``, which costs one extra copy of
those parameters.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .runlog import FORMAT, RunLogError, RunWriter, block_offsets, record_size
from ..symmetry import Symmetry

F64 = torch.float64
_QUAD = ("scale", "rescale")


@dataclass
class _Entry:
    """One (parameter, axis) reduced per step; its per-index sums start at ``offset`` in its family."""

    name: str
    param: torch.Tensor
    axis: int | None
    offset: int
    size: int


def _reduce(x: torch.Tensor, axis: int | None) -> torch.Tensor:
    """Sum a stacked ``[k, *shape]`` tensor over every axis but ``axis`` → ``[k, C]`` (C = 1 for whole)."""
    if axis is None:
        return x.reshape(x.shape[0], -1).sum(1, keepdim=True)
    dims = [d + 1 for d in range(x.dim() - 1) if d != axis]
    return x.sum(dim=dims) if dims else x


def optimizer_config(optimizer: torch.optim.Optimizer, group: Mapping[str, Any]) -> dict[str, Any]:
    """The run.json ``optimizer`` entry, read from one param group (initial lr when a schedule set it)."""
    cls = type(optimizer).__name__.lower()
    lr = group.get("initial_lr", group.get("lr", float("nan")))
    return {
        "rule": "adam" if cls == "adamw" else cls,   # AdamW is Adam with decoupled weight decay
        "lr": float(lr),
        "momentum": float(group.get("momentum", 0.0)),
        "dampening": float(group.get("dampening", 0.0)),
        "nesterov": bool(group.get("nesterov", False)),
        "weight_decay": float(group.get("weight_decay", 0.0)),
        "decoupled_weight_decay": bool(group.get("decoupled_weight_decay", cls == "adamw")),
    }


class Tracker:
    """Attach to ``optimizer`` and write a run log of ``symmetries`` statistics to ``run_dir``.

    The log is opened lazily (first step, ``state_dict`` or ``close``), so a resumed run can call
    ``load_state_dict`` first and continue the existing log. A directory that already holds a log is
    refused unless resumed or ``overwrite=True``. Usable as a context manager: leaving the block closes
    the log, or after an exception flushes it without a final record, so it stays resumable.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, run_dir: str | os.PathLike,
                 symmetries: Sequence[Symmetry], meta: Mapping[str, Any] | None = None,
                 flush_every: int = 50, overwrite: bool = False, max_pending_bytes: int = 8 << 20) -> None:
        self.model, self.optimizer, self.run_dir = model, optimizer, run_dir
        self.symmetries = list(symmetries)
        self.meta = dict(meta or {})
        self.flush_every = max(1, int(flush_every))
        self.overwrite = overwrite
        self.step = 0
        self.record_size = record_size(self.symmetries)
        # steps buffered before a flush: flush_every, or fewer when records are large (caps device memory)
        self._flush_at = max(1, min(self.flush_every, int(max_pending_bytes) // (8 * self.record_size)))
        self._writer: RunWriter | None = None
        self._resume_step: int | None = None
        self._closed = False
        self._loss: torch.Tensor | float = float("nan")
        self._pending: list[torch.Tensor] = []
        self._current: torch.Tensor | None = None
        self._snapshot: dict[str, torch.Tensor] = {}
        self._build_plan()
        self._params = {e.name: e.param for f in self._entries for e in self._entries[f]}
        self._quad_names = list(dict.fromkeys(e.name for e in self._entries["q"]))  # D is needed for these only
        self._handles = [optimizer.register_step_pre_hook(self._pre_hook),
                         optimizer.register_step_post_hook(self._post_hook)]

    # -- plan ----------------------------------------------------------------------------------------
    def _build_plan(self) -> None:
        params = dict(self.model.named_parameters(remove_duplicate=False))
        first = next(iter(params.values()), None)
        if first is None:
            raise ValueError("model has no parameters to track")
        self.device = first.device
        fam: dict[str, dict[tuple[str, int | None], _Entry]] = {"t": {}, "q": {}}
        rows: dict[str, list[tuple[int, int, int]]] = {"t": [], "q": []}  # (src, group, sign)
        count = {"t": 0, "q": 0}
        gidx: list[int] = []
        for sym in self.symmetries:
            f = "t" if sym.kind == "translation" else "q"
            g = count[f]
            count[f] += 1
            gidx.append(g)
            for m in sym.members:
                if m.param not in params:
                    raise ValueError(f"symmetry {sym.key} names {m.param!r}, which is not a parameter of the model")
                p = params[m.param]
                if m.axis is not None and not (0 <= m.axis < p.dim() and max(m.indices) < p.shape[m.axis]
                                               and min(m.indices) >= 0):
                    raise ValueError(f"symmetry {sym.key}: member {m.param} axis {m.axis} indices out of "
                                     f"range for shape {tuple(p.shape)}")
                key = (m.param, m.axis)
                e = fam[f].get(key)
                if e is None:
                    size = 1 if m.axis is None else p.shape[m.axis]
                    off = sum(x.size for x in fam[f].values())
                    e = fam[f][key] = _Entry(m.param, p, m.axis, off, size)
                idx = (0,) if m.axis is None else m.indices
                rows[f].extend((e.offset + i, g, m.sign) for i in idx)
        self._entries = {f: list(fam[f].values()) for f in fam}
        self._n_groups = count
        dev = self.device

        def tensors(f: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            r = np.asarray(rows[f], dtype=np.int64).reshape(-1, 3)
            return (torch.as_tensor(r[:, 0], device=dev), torch.as_tensor(r[:, 1], device=dev),
                    torch.as_tensor(r[:, 2], dtype=F64, device=dev))

        t_src, t_grp, t_sign = tensors("t")
        q_src, q_grp, q_sign = tensors("q")
        one_t, one_q = torch.ones_like(t_sign), torch.ones_like(q_sign)
        # columns: translation s (signed θ), P (signed ĝ), A (unsigned |θ|)
        self._t = (t_src, t_grp, torch.stack([t_sign, t_sign, one_t], 1))
        # columns: N (signed θ²), M (unsigned θ²), Q (signed ĝθ), G (signed ĝ²); D (signed Δ²) separately
        self._q = (q_src, q_grp, torch.stack([q_sign, one_q, q_sign, q_sign], 1), q_sign)
        offs = block_offsets(self.symmetries)
        kinds = np.array([s.kind == "translation" for s in self.symmetries], dtype=bool)
        t_off, q_off = offs[kinds] if len(offs) else offs, offs[~kinds] if len(offs) else offs
        self._t_pos = torch.as_tensor((t_off[:, None] + np.arange(3)).reshape(-1), device=dev)
        self._q_pos = torch.as_tensor((q_off[:, None] + np.arange(4)).reshape(-1), device=dev)
        self._d_pos = torch.as_tensor(q_off + 4, device=dev)
        grad_cols = [t_off + 1, q_off + 2, q_off + 3, q_off + 4]
        self._grad_pos = torch.as_tensor(np.concatenate(grad_cols).astype(np.int64), device=dev)
        # which param group (if any) updates each tracked parameter, and how Δ is obtained for it
        ids = {id(p): gi for gi, grp in enumerate(self.optimizer.param_groups) for p in grp["params"]}
        tracked = {e.name: e.param for f in fam for e in fam[f].values()}
        self._group_of = {n: ids.get(id(p)) for n, p in tracked.items()}
        used = sorted({g for g in self._group_of.values() if g is not None})
        self._lr_group = used[0] if used else 0
        self._warnings: list[str] = []
        if any(g is None for g in self._group_of.values()):
            self._warnings.append("some tracked parameters are not in the optimizer (they do not move)")
        keys = ("momentum", "dampening", "nesterov", "weight_decay")
        cfgs = {tuple(self.optimizer.param_groups[g].get(k) for k in keys + ("lr",)) for g in used}
        if len(cfgs) > 1:
            self._warnings.append("tracked parameters sit in param groups with different hyper-parameters; "
                                  "run.json records the first one")

    def _delta_source(self, name: str) -> str:
        gi = self._group_of.get(name)
        if gi is None or type(self.optimizer) is not torch.optim.SGD:
            return "snapshot"
        grp = self.optimizer.param_groups[gi]
        if grp.get("nesterov") or grp.get("maximize") or grp.get("differentiable"):
            return "snapshot"
        return "momentum_buffer" if grp.get("momentum", 0) else "update_rule"

    # -- log -----------------------------------------------------------------------------------------
    def _open(self) -> RunWriter:
        if self._writer is None:
            if self._closed:
                raise RunLogError(f"{self.run_dir}: tracker already closed")
            p = next(iter(self.model.parameters()))
            grp = self.optimizer.param_groups[self._lr_group]
            meta = {"optimizer": optimizer_config(self.optimizer, grp), "dtype": str(p.dtype).replace("torch.", ""),
                    "device": str(p.device)}
            meta.update(self.meta)
            sources = sorted({self._delta_source(n) for n in self._quad_names})
            meta["tracker"] = {"delta_source": sources, "optimizer_class": type(self.optimizer).__name__,
                               "model_class": type(self.model).__name__, "torch": torch.__version__,
                               "warnings": self._warnings, **dict(self.meta.get("tracker") or {})}
            self._writer = RunWriter(self.run_dir, meta, self.symmetries, flush_every=self._flush_at,
                                     resume_step=self._resume_step, overwrite=self.overwrite)
        return self._writer

    def flush(self) -> None:
        """Copy pending records to the host and write + fsync them."""
        w = self._open()
        if self._pending:
            block = torch.stack(self._pending).cpu().numpy()
            self._pending.clear()
            w.append(block)
        w.flush()

    def record_loss(self, loss: torch.Tensor | float) -> None:
        """Remember the minibatch loss of the coming step (kept on the device; no sync)."""
        self._loss = loss.detach().reshape(()).to(F64) if isinstance(loss, torch.Tensor) else float(loss)

    # -- statistics ----------------------------------------------------------------------------------
    def _state_stats(self, with_grad: bool) -> torch.Tensor:
        """Record body for the current θ (and ĝ): translation s,P,A and quad N,M,Q,G (D filled later)."""
        rec = torch.full((self.record_size,), float("nan"), dtype=F64, device=self.device)
        cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

        def tg(e: _Entry) -> tuple[torch.Tensor, torch.Tensor]:
            if e.name not in cache:
                th = e.param.detach().to(F64)
                g = e.param.grad if with_grad else None
                cache[e.name] = (th, torch.zeros_like(th) if g is None else g.detach().to(F64))
            return cache[e.name]

        if self._entries["t"]:
            parts = []
            for e in self._entries["t"]:
                th, g = tg(e)
                parts.append(_reduce(torch.stack([th, g, th.abs()]), e.axis).to(self.device))
            x = torch.cat(parts, 1)
            src, grp, mult = self._t
            out = torch.zeros(self._n_groups["t"], 3, dtype=F64, device=self.device)
            out.index_add_(0, grp, x[:, src].T * mult)
            rec[self._t_pos] = out.reshape(-1)
        if self._entries["q"]:
            parts = []
            for e in self._entries["q"]:
                th, g = tg(e)
                parts.append(_reduce(torch.stack([th * th, g * th, g * g]), e.axis).to(self.device))
            x = torch.cat(parts, 1)
            src, grp, mult, _ = self._q
            out = torch.zeros(self._n_groups["q"], 4, dtype=F64, device=self.device)
            out.index_add_(0, grp, x[[0, 0, 1, 2]][:, src].T * mult)
            rec[self._q_pos] = out.reshape(-1)
        return rec

    def _delta_sq(self, name: str, phase: str) -> torch.Tensor | None:
        """Elementwise |Δ|² of one parameter in float64, or None if it is obtained in the other phase."""
        src, p = self._sources[name], self._params[name]
        if src == "update_rule" and phase == "pre":
            if p.grad is None:
                return torch.zeros_like(p, dtype=F64)
            grp = self.optimizer.param_groups[self._group_of[name]]
            d = (p.grad.detach().to(F64) + float(grp["weight_decay"]) * p.detach().to(F64)) * self._lr_of[name]
            return d * d
        if src == "momentum_buffer" and phase == "post":
            if name not in self._had_grad:  # SGD skips parameters without a gradient
                return torch.zeros_like(p, dtype=F64)
            buf = self.optimizer.state[p]["momentum_buffer"].detach().to(F64) * self._lr_of[name]
            return buf * buf
        if src == "snapshot" and phase == "post":
            d = p.detach().to(F64) - self._snapshot[name].to(F64)
            return d * d
        return None

    def _d_parts(self, phase: str) -> None:
        """Per-index sums of |Δ|² for every quad entry whose Δ is known in this phase."""
        squares: dict[str, torch.Tensor | None] = {}
        for i, e in enumerate(self._entries["q"]):
            if self._d_cache[i] is None:
                if e.name not in squares:
                    squares[e.name] = self._delta_sq(e.name, phase)
                sq = squares[e.name]
                if sq is not None:
                    self._d_cache[i] = _reduce(sq.unsqueeze(0), e.axis)[0].to(self.device)

    # -- hooks ---------------------------------------------------------------------------------------
    def _pre_hook(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        if self._closed:
            return
        if any(a is not None for a in args[1:]) or kwargs.get("closure") is not None:
            raise RuntimeError("Tracker does not support optimizer.step(closure): gradients must exist before step()")
        self._open()
        with torch.no_grad():
            groups = optimizer.param_groups
            lr = float(groups[self._lr_group]["lr"])
            self._lr_of = {n: float(groups[g]["lr"]) for n, g in self._group_of.items() if g is not None}
            self._had_grad = {n for n, p in self._params.items() if p.grad is not None}
            rec = self._state_stats(with_grad=True)
            rec[0] = float(self.step)
            rec[1] = lr
            rec[2] = self._loss
            self._sources = {n: self._delta_source(n) for n in self._quad_names}
            self._snapshot = {n: self._params[n].detach().clone() for n, src in self._sources.items()
                              if src == "snapshot"}
            self._d_cache: list[torch.Tensor | None] = [None] * len(self._entries["q"])
            self._d_parts("pre")
            self._current = rec

    def _post_hook(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        if self._closed or self._current is None:
            return
        with torch.no_grad():
            self._d_parts("post")
            rec, self._current = self._current, None
            if self._entries["q"]:
                x = torch.cat(self._d_cache).unsqueeze(1)
                src, grp, _, sign = self._q
                d = torch.zeros(self._n_groups["q"], 1, dtype=F64, device=self.device)
                d.index_add_(0, grp, x[src] * sign[:, None])
                rec[self._d_pos] = d[:, 0]
        self._snapshot = {}
        self._loss = float("nan")
        self._pending.append(rec)
        self.step += 1
        if len(self._pending) >= self._flush_at:
            self.flush()

    # -- lifecycle -----------------------------------------------------------------------------------
    def close(self) -> None:
        """Append the final state record θ_T, flush, mark the run closed and detach the hooks."""
        if self._closed:
            return
        w = self._open()
        self.flush()
        with torch.no_grad():
            rec = self._state_stats(with_grad=False)
            rec[0], rec[1], rec[2] = float(self.step), float("nan"), float("nan")
            rec[self._grad_pos] = float("nan")
        w.close(rec.cpu().numpy())
        self._detach()

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
            self.flush()
        finally:
            if self._writer is not None:
                self._writer.abandon()
            self._detach()

    def _detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self._closed = True

    def state_dict(self) -> dict[str, Any]:
        """Small resumable state (the log is flushed first, so it holds every step before ``step``)."""
        self.flush()
        return {"format": FORMAT, "step": int(self.step), "record_size": int(self.record_size),
                "run_dir": str(self.run_dir)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the log at ``state['step']``: records from that step on are cut (see RunWriter)."""
        if self._writer is not None or self._pending:
            raise RunLogError("load_state_dict must be called before the first tracked step")
        if state.get("format") != FORMAT or int(state.get("record_size", -1)) != self.record_size:
            raise RunLogError("tracker state does not match this tracker (format or record size differ)")
        self.step = int(state["step"])
        self._resume_step = self.step
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

    ``kw`` goes to :class:`Tracker` (``meta``, ``flush_every``, ``overwrite``).
    """
    if symmetries is None:
        if example_inputs is None:
            raise ValueError("track() needs example_inputs to find the symmetries (or pass symmetries=...)")
        from ..graph.analysis import analyze  # lazy: the graph analyzer is heavy and optional for the tracker

        symmetries = analyze(model, example_inputs, loss=loss).symmetries
    meta = dict(kw.pop("meta", None) or {})
    tracker_meta = dict(meta.get("tracker") or {})
    tracker_meta.setdefault("loss", loss)
    if example_inputs is not None and hasattr(example_inputs, "shape"):
        tracker_meta.setdefault("input_shape", list(example_inputs.shape[1:]))
    meta["tracker"] = tracker_meta
    return Tracker(model, optimizer, run_dir, symmetries, meta=meta, **kw)
