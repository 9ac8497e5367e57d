"""Optimizer hooks that record, per step, symmetry group and member class, the statistics the laws need.

Why hooks: users keep their own ``torch.optim`` optimizer and training loop and add two lines
(``track(...)`` and ``close()``). ``register_step_pre_hook`` sees θ_n and ĝ_n = ``p.grad`` before the
update; ``register_step_post_hook`` sees θ_{n+1}. Why batched reductions: a VGG has tens of thousands of
groups, so a Python loop per group per step would dominate training. Instead, for every
(parameter, axis) used by any member, one float64 reduction of a stacked tensor of elementwise products
over all other axes gives per-index sums; a precomputed (index, slot, ±1) list maps them to slots — one
slot per (group, member class), numeric/layout.py — with one ``index_add_`` per family. Records stay on the device and are copied to the host only when the log is
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

from .classes import CLASS_COLUMNS, OptimizerClass, assign_classes, check_classes, class_row, rule_of
from .layout import INITIAL_COLUMNS, RecordLayout
from .runlog import FORMAT, RunLogError, RunWriter
from ..symmetry import Symmetry

F64 = torch.float64


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


class Tracker:
    """Attach to ``optimizer`` and write a run log of ``symmetries`` statistics to ``run_dir``.

    The log is opened lazily (first step, ``state_dict`` or ``close``), so a resumed run can call
    ``load_state_dict`` first and continue the existing log, and so the member classes (numeric/classes.py)
    see the optimizer as it is when tracking starts — momentum buffers included, which is what lets a
    tracker attached after many untracked steps predict as exactly as one attached at step 0. A directory
    that already holds a log is refused unless resumed or ``overwrite=True``. Usable as a context manager:
    leaving the block closes the log, or after an exception flushes it without a final record, so it stays
    resumable.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, run_dir: str | os.PathLike,
                 symmetries: Sequence[Symmetry], meta: Mapping[str, Any] | None = None,
                 flush_every: int = 50, overwrite: bool = False, max_pending_bytes: int = 8 << 20) -> None:
        self.model, self.optimizer, self.run_dir = model, optimizer, run_dir
        self.symmetries = list(symmetries)
        self.meta = dict(meta or {})
        self.flush_every = max(1, int(flush_every))
        self.max_pending_bytes = int(max_pending_bytes)
        self.overwrite = overwrite
        self.step = 0
        self._writer: RunWriter | None = None
        self._resume_step: int | None = None
        self._resume_record_size: int | None = None
        self._closed = False
        self._loss: torch.Tensor | float = float("nan")
        self._pending: list[torch.Tensor] = []
        self._current: torch.Tensor | None = None
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
        """Index tensors that turn per-(parameter, axis) sums into per-slot columns with one index_add_."""
        self.classes = list(classes)
        self.layout = layout
        class_of = {n: c.id for c in classes for n in c.params}
        self._class_params = [[self._params[n] for n in c.params if n in self._params] for c in classes]
        fam: dict[str, dict[tuple[str, int | None], _Entry]] = {"t": {}, "q": {}}
        rows: dict[str, list[tuple[int, int, int]]] = {"t": [], "q": []}  # (src, slot, sign)
        slot_pos: dict[str, list[int]] = {"t": [], "q": []}               # record offset of each family slot
        offsets = layout.slot_offsets
        slot_index = {sl: i for i, sl in enumerate(layout.slots)}
        for gi, sym in enumerate(self.symmetries):
            f = "t" if sym.kind == "translation" else "q"
            local = {}
            for c in layout.group_classes[gi]:
                local[c] = len(slot_pos[f])
                slot_pos[f].append(int(offsets[slot_index[(gi, c)]]))
            for m in sym.members:
                p = self._params[m.param]
                key = (m.param, m.axis)
                e = fam[f].get(key)
                if e is None:
                    size = 1 if m.axis is None else p.shape[m.axis]
                    off = sum(x.size for x in fam[f].values())
                    e = fam[f][key] = _Entry(m.param, p, m.axis, off, size)
                idx = (0,) if m.axis is None else m.indices
                rows[f].extend((e.offset + i, local[class_of[m.param]], m.sign) for i in idx)
        self._entries = {f: list(fam[f].values()) for f in fam}
        self._n_slots = {f: len(slot_pos[f]) for f in fam}
        dev = self.device

        def tensors(f: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            r = np.asarray(rows[f], dtype=np.int64).reshape(-1, 3)
            return (torch.as_tensor(r[:, 0], device=dev), torch.as_tensor(r[:, 1], device=dev),
                    torch.as_tensor(r[:, 2], dtype=F64, device=dev))

        t_src, t_slot, t_sign = tensors("t")
        q_src, q_slot, q_sign = tensors("q")
        one_t, one_q = torch.ones_like(t_sign), torch.ones_like(q_sign)
        # translation columns s (signed θ), P (signed ĝ), A (unsigned |θ|); E (signed Δ) separately
        self._t = (t_src, t_slot, torch.stack([t_sign, t_sign, one_t], 1), t_sign)
        # quadratic columns N (signed θ²), M (unsigned θ²), Q (signed ĝθ), G (signed ĝ²); D, U separately
        self._q = (q_src, q_slot, torch.stack([q_sign, one_q, q_sign, q_sign], 1), q_sign)
        t_off = np.asarray(slot_pos["t"], dtype=np.int64)
        q_off = np.asarray(slot_pos["q"], dtype=np.int64)
        self._t_pos = torch.as_tensor((t_off[:, None] + np.arange(3)).reshape(-1), device=dev)
        self._q_pos = torch.as_tensor((q_off[:, None] + np.arange(4)).reshape(-1), device=dev)
        self._d_pos = torch.as_tensor(q_off + 4, device=dev)
        self._identity = layout.identity
        self._e_pos = torch.as_tensor(t_off + 3, device=dev)
        self._u_pos = torch.as_tensor(q_off + 5, device=dev)
        grad_cols = [t_off + 1, q_off + 2, q_off + 3, q_off + 4]
        if layout.identity:
            grad_cols += [t_off + 3, q_off + 5]
        self._grad_pos = torch.as_tensor(np.concatenate(grad_cols).astype(np.int64), device=dev)
        self._class_pos = torch.as_tensor(
            [layout.class_offset(c.id, col) for c in classes for col in CLASS_COLUMNS], dtype=torch.int64, device=dev)
        # which param group (if any) updates each tracked parameter, and how Δ is obtained for it
        ids = {id(p): gi for gi, grp in enumerate(self.optimizer.param_groups) for p in grp["params"]}
        self._group_of = {n: ids.get(id(p)) for n, p in self._params.items()}
        self._quad_names = list(dict.fromkeys(e.name for e in self._entries["q"]))
        self._delta_names = list(dict.fromkeys(
            [e.name for e in self._entries["q"]] + ([e.name for e in self._entries["t"]] if self._identity else [])))
        # steps buffered before a flush: flush_every, or fewer when records are large (caps device memory)
        self._flush_at = max(1, min(self.flush_every, self.max_pending_bytes // (8 * layout.record_size)))
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

    def _delta_source(self, name: str) -> str:
        gi = self._group_of.get(name)
        if gi is None or type(self.optimizer) is not torch.optim.SGD or self._identity:
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
        class_of = {n: c.id for c in self.classes for n in c.params}
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
                    base = int(lay.initial_offsets[slot_index[(gi, class_of[m.param])]])
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
        if self._resume_step is not None:
            w = RunWriter(self.run_dir, symmetries=self.symmetries, flush_every=self.flush_every,
                          resume_step=self._resume_step)
            why = check_classes(w.classes, self.optimizer, self._params)
            if why is None and self._resume_record_size not in (None, w.record_size):
                why = "record size differs from the tracker state's"
            if why is not None:
                w.abandon()
                raise RunLogError(f"{self.run_dir}: cannot resume this log: {why}")
            self._build_plan(w.classes, w.layout)
            w.flush_every = self._flush_at
            self._writer = w
            return w
        classes, assignment = assign_classes(self.optimizer, self._params)
        group_classes = tuple(tuple(sorted({assignment[m.param] for m in s.members})) for s in self.symmetries)
        identity = type(self.optimizer) is not torch.optim.SGD
        layout = RecordLayout(tuple(s.kind for s in self.symmetries), group_classes, len(classes), identity)
        self._build_plan(classes, layout)
        grp = self.optimizer.param_groups[next((c.param_group for c in classes if c.param_group is not None), 0)]
        meta = {"optimizer": optimizer_config(self.optimizer, grp),
                "dtype": str(self._all_params[0].dtype).replace("torch.", ""), "device": str(self.device)}
        meta.update(self.meta)
        meta["group_entries"] = [self._entries_of(s) for s in self.symmetries]
        sources = sorted({self._delta_source(n) for n in self._delta_names})
        meta["tracker"] = {"delta_source": sources, "optimizer_class": type(self.optimizer).__name__,
                           "model_class": type(self.model).__name__, "torch": torch.__version__,
                           "warnings": self._warnings, **dict(self.meta.get("tracker") or {})}
        self._writer = RunWriter(self.run_dir, meta, self.symmetries, layout=layout, classes=classes,
                                 initial_state=self._initial_state(), flush_every=self._flush_at,
                                 overwrite=self.overwrite)
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
        """Record body for the current θ (and ĝ): translation s,P,A and quadratic N,M,Q,G (D filled later)."""
        rec = torch.full((self.layout.record_size,), float("nan"), dtype=F64, device=self.device)
        cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

        def tg(e: _Entry) -> tuple[torch.Tensor, torch.Tensor]:
            if e.name not in cache:
                th = e.param.detach().to(F64)
                g = e.param.grad if with_grad else None
                cache[e.name] = (th, torch.zeros_like(th) if g is None else g.detach().to(F64))
            return cache[e.name]

        if self._entries["t"]:
            x = torch.cat([_reduce(torch.stack([th, g, th.abs()]), e.axis).to(self.device)
                           for e in self._entries["t"] for th, g in [tg(e)]], 1)
            src, slot, mult, _ = self._t
            out = torch.zeros(self._n_slots["t"], 3, dtype=F64, device=self.device)
            out.index_add_(0, slot, x[:, src].T * mult)
            rec[self._t_pos] = out.reshape(-1)
        if self._entries["q"]:
            x = torch.cat([_reduce(torch.stack([th * th, g * th, g * g]), e.axis).to(self.device)
                           for e in self._entries["q"] for th, g in [tg(e)]], 1)
            src, slot, mult, _ = self._q
            out = torch.zeros(self._n_slots["q"], 4, dtype=F64, device=self.device)
            out.index_add_(0, slot, x[[0, 0, 1, 2]][:, src].T * mult)
            rec[self._q_pos] = out.reshape(-1)
        return rec

    def _grad_sq(self) -> torch.Tensor:
        """|ĝ|² over every parameter of the model that has a gradient (float64, on the device)."""
        grads = [p.grad for p in self._all_params if p.grad is not None]
        if not grads:
            return torch.zeros((), dtype=F64, device=self.device)
        norms = torch._foreach_norm(grads)
        return torch.stack([n.to(F64) for n in norms]).square().sum().to(self.device)

    def _delta(self, name: str, phase: str) -> torch.Tensor | None:
        """Δ = θ_{n+1} − θ_n of one parameter in float64, or None if it is obtained in the other phase."""
        src, p = self._sources[name], self._params[name]
        if name not in self._had_grad and src != "snapshot":
            return torch.zeros_like(p, dtype=F64) if phase == "pre" else None  # SGD skips it: no move
        if src == "update_rule" and phase == "pre":
            grp = self.optimizer.param_groups[self._group_of[name]]
            return -(p.grad.detach().to(F64) + float(grp["weight_decay"]) * p.detach().to(F64)) * self._lr_of[name]
        if src == "momentum_buffer" and phase == "post":
            return -self.optimizer.state[p]["momentum_buffer"].detach().to(F64) * self._lr_of[name]
        if src == "snapshot" and phase == "post":
            return p.detach().to(F64) - self._snapshot[name].to(F64)
        return None

    def _step_parts(self, phase: str) -> None:
        """Per-index sums of |Δ|² (and of Δ, θ_nΔ for the identity columns) known in this phase."""
        deltas: dict[str, torch.Tensor | None] = {}
        for fam, cache in (("q", self._d_cache), ("t", self._e_cache)):
            if fam == "t" and not self._identity:
                continue
            for i, e in enumerate(self._entries[fam]):
                if cache[i] is not None:
                    continue
                if e.name not in deltas:
                    deltas[e.name] = self._delta(e.name, phase)
                d = deltas[e.name]
                if d is None:
                    continue
                if fam == "t":
                    cache[i] = _reduce(d.unsqueeze(0), e.axis).to(self.device)
                elif self._identity:
                    th = self._snapshot[e.name].to(F64) if e.name in self._snapshot else e.param.detach().to(F64) - d
                    cache[i] = _reduce(torch.stack([d * d, th * d]), e.axis).to(self.device)
                else:
                    cache[i] = _reduce((d * d).unsqueeze(0), e.axis).to(self.device)

    # -- hooks ---------------------------------------------------------------------------------------
    def _pre_hook(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        if self._closed:
            return
        if any(a is not None for a in args[1:]) or kwargs.get("closure") is not None:
            raise RuntimeError("Tracker does not support optimizer.step(closure): gradients must exist before step()")
        self._open()
        with torch.no_grad():
            groups = optimizer.param_groups
            self._lr_of = {n: float(groups[g]["lr"]) for n, g in self._group_of.items() if g is not None}
            self._had_grad = {n for n, p in self._params.items() if p.grad is not None}
            rec = self._state_stats(with_grad=True)
            rec[0], rec[1], rec[2] = float(self.step), 0.0, self._loss
            rec[3] = self._grad_sq()
            rows = [v for c, ps in zip(self.classes, self._class_params) for v in class_row(optimizer, c, ps)]
            if rows:
                rec[self._class_pos] = torch.tensor(rows, dtype=F64).to(self.device)
            self._sources = {n: self._delta_source(n) for n in self._delta_names}
            self._snapshot = {n: self._params[n].detach().clone() for n, src in self._sources.items()
                              if src == "snapshot"}
            self._d_cache: list[torch.Tensor | None] = [None] * len(self._entries["q"])
            self._e_cache: list[torch.Tensor | None] = [None] * len(self._entries["t"])
            self._step_parts("pre")
            self._current = rec

    def _post_hook(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        if self._closed or self._current is None:
            return
        with torch.no_grad():
            self._step_parts("post")
            rec, self._current = self._current, None
            if self._entries["q"]:
                x = torch.cat(self._d_cache, 1)
                src, slot, _, sign = self._q
                k = x.shape[0]
                d = torch.zeros(self._n_slots["q"], k, dtype=F64, device=self.device)
                d.index_add_(0, slot, x[:, src].T * sign[:, None])
                rec[self._d_pos] = d[:, 0]
                if self._identity:
                    rec[self._u_pos] = d[:, 1]
            if self._identity and self._entries["t"]:
                x = torch.cat(self._e_cache, 1)
                src, slot, _, sign = self._t
                e = torch.zeros(self._n_slots["t"], 1, dtype=F64, device=self.device)
                e.index_add_(0, slot, x[:, src].T * sign[:, None])
                rec[self._e_pos] = e[:, 0]
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
            rec[0], rec[1], rec[2], rec[3] = float(self.step), 1.0, float("nan"), float("nan")
            rec[self._class_pos] = float("nan")
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
            if self._writer is not None:
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
        return {"format": FORMAT, "step": int(self.step), "record_size": int(self._writer.record_size),
                "run_dir": str(self.run_dir)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the log at ``state['step']``: records from that step on are cut (see RunWriter)."""
        if self._writer is not None or self._pending:
            raise RunLogError("load_state_dict must be called before the first tracked step")
        if state.get("format") != FORMAT:
            raise RunLogError("tracker state does not match this tracker (format differs)")
        self.step = int(state["step"])
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
