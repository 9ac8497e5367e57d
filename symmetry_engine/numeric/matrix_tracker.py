"""Optimizer hooks that record, per step and per matrix symmetry, the statistics its exact law needs.

Why its own files: the scalar log (run.json + stats.bin) has one scalar block per group; a matrix
symmetry needs r×r matrices.  The laws of ``symbolic/matrix_laws.py`` are linear in C, Q + Qᵀ and Γ (or
D) with scalar coefficients, and the conserved functions are the projections ⟨S_l, C⟩ on 𝔤 ∩ Sym(r)
(``GLSymmetry.conserved_directions``), so the laws close on those projections: per step n (θ_n, ĝ_n
before the step; Δ_n = θ_{n+1} − θ_n after it) the tracker records, as L coordinates each,

* C_n = P(θ, θ) = Σ_M X Xᵀ − Σ_{M⁻ᵀ} Y Yᵀ;
* the symmetric part of Q_n = P(ĝ, θ) = Σ_M G_X Xᵀ − Σ_{M⁻ᵀ} Y G_Yᵀ (what the law needs), and, as one
  number, |Q_n| projected on the Lie algebra (the constraint; GL(r): |Q_n|_F) for the breaking measure;
* Γ_n = P(ĝ, ĝ) (plain torch.optim.SGD) or D_n = P(Δ, Δ) (momentum, or any other optimizer: D is taken
  from the member slices themselves, a copy of the views across ``step()``, exact for every rule);
* η_n of the members' param group, |θ_n|² and |ĝ_n|² over the members (unsigned: the scales of C and Q).

Coordinates: GL(r) stores the upper triangle of each symmetric matrix (row-major, i ≤ j), so L = r(r+1)/2;
a subgroup stores ⟨S_l, ·⟩ on the orthonormal basis S_l of 𝔤 ∩ Sym(r) listed in matrix.json (rotary
Q/K: r/2 numbers instead of r(r+1)/2).  Everything is reduced on the parameters' device in float64,
batched over the heads of a layer (``matrix_views.ViewPlan``).  Records stay on the device until a flush
(every ``flush_every`` steps), then go to ``matrix.bin`` (append-only, fsynced) through
``runfile.RecordFile``; ``matrix.json`` says what is in them (docs/run_format.md).  The scalar log is not
touched: this tracker attaches its own hooks and can run beside the scalar one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..matrix_symmetry import GLSymmetry
from .matrix_views import F64, ViewPlan, build_plans, pair
from .runfile import RecordFile, RunLogError, count_records, read_json, write_json_atomic

FORMAT = "nmech-matrix/1"
META_FILE, DATA_FILE = "matrix.json", "matrix.bin"
HEADER = ("step",)
BLOCK = ("eta", "C", "Q", "Gamma_or_D", "Q_constraint", "theta_sq", "grad_sq")


def block_layout(L: int) -> dict[str, tuple[int, int]]:
    """(start, length) of each column in one symmetry's block with L coordinates per matrix."""
    sizes = {"eta": 1, "C": L, "Q": L, "Gamma_or_D": L, "Q_constraint": 1, "theta_sq": 1, "grad_sq": 1}
    out, pos = {}, 0
    for k in BLOCK:
        out[k] = (pos, sizes[k])
        pos += sizes[k]
    return out


def block_size(L: int) -> int:
    return 3 * L + 4


def coordinates(sym: GLSymmetry) -> int:
    """L: r(r+1)/2 for GL(r), dim(𝔤 ∩ Sym(r)) for a subgroup."""
    return sym.r * (sym.r + 1) // 2 if sym.basis is None else len(sym.conserved_directions())


def group_config(optimizer: torch.optim.Optimizer, group: Mapping[str, Any]) -> dict[str, Any]:
    """The hyper-parameters of one param group, in the words of ``predict.OptimizerConfig``."""
    cls = type(optimizer).__name__.lower()
    return {"rule": "adam" if cls == "adamw" else cls, "lr": float(group.get("initial_lr", group.get("lr", float("nan")))),
            "momentum": float(group.get("momentum", 0.0)), "dampening": float(group.get("dampening", 0.0)),
            "nesterov": bool(group.get("nesterov", False)), "weight_decay": float(group.get("weight_decay", 0.0)),
            "decoupled_weight_decay": bool(group.get("decoupled_weight_decay", cls == "adamw")),
            "maximize": bool(group.get("maximize", False))}


class MatrixTracker:
    """Attach to ``optimizer`` and log the r×r statistics of ``symmetries`` to ``run_dir``.

    ``symmetries`` are :class:`GLSymmetry` objects or their JSON (member or pair form).  Records are
    flushed every ``flush_every`` steps, sooner when the buffered ones would pass ``max_pending_bytes``
    (large heads have large records).  A directory that
    already holds a matrix log is refused unless ``overwrite=True`` or the tracker is resumed with
    :meth:`load_state_dict` before the first step.  ``with MatrixTracker(...) as t:`` closes the log on
    exit, or after an exception flushes it without a final record.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, run_dir: str | os.PathLike,
                 symmetries: Sequence[GLSymmetry | Mapping[str, Any]], flush_every: int = 50,
                 overwrite: bool = False, meta: Mapping[str, Any] | None = None,
                 max_pending_bytes: int = 8 << 20) -> None:
        self.model, self.optimizer, self.run_dir = model, optimizer, Path(run_dir)
        self.symmetries = [s if isinstance(s, GLSymmetry) else GLSymmetry.from_json(s) for s in symmetries]
        if not self.symmetries:
            raise ValueError("no matrix symmetries to track")
        self.flush_every, self.overwrite, self.meta = max(1, int(flush_every)), overwrite, dict(meta or {})
        params = dict(model.named_parameters(remove_duplicate=False))
        self._params = params
        first = next(iter(params.values()), None)
        if first is None:
            raise ValueError("model has no parameters to track")
        self.device = first.device
        self.plans: list[ViewPlan] = build_plans(self.symmetries, {k: tuple(p.shape) for k, p in params.items()},
                                                 self.device)
        self.offsets, pos = [], len(HEADER)
        for s in self.symmetries:
            self.offsets.append(pos)
            pos += block_size(coordinates(s))
        self.record_size = pos
        # steps buffered before a flush: flush_every, or fewer when records are large (caps device memory)
        self._flush_at = max(1, min(self.flush_every, int(max_pending_bytes) // (8 * self.record_size)))
        self._positions = [self._plan_positions(p) for p in self.plans]
        self._group_of, self.warnings = self._param_groups()
        self._second = [self._gamma_or_d(g) for g in self._group_of]
        self._coord = [self._plan_coordinates(p) for p in self.plans]
        self.step = 0
        self._writer: RecordFile | None = None
        self._resume_step: int | None = None
        self._closed = False
        self._pending: list[torch.Tensor] = []
        self._current: torch.Tensor | None = None
        self._before: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._handles = [optimizer.register_step_pre_hook(self._pre_hook),
                         optimizer.register_step_post_hook(self._post_hook)]

    # -- plan ----------------------------------------------------------------------------------------
    def _gamma_or_d(self, group: int | None) -> str:
        """Γ for plain torch.optim.SGD (its law needs no Δ, so no copy of the slices); D otherwise."""
        if group is None or type(self.optimizer) is not torch.optim.SGD:
            return "D"
        return "D" if self.optimizer.param_groups[group].get("momentum", 0) else "Gamma"

    def _plan_coordinates(self, plan: ViewPlan) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(directions [L, r, r], constraint basis [K, r²]) for a subgroup plan; (None, None) for GL(r)."""
        sym = self.symmetries[plan.sym_ids[0]]
        if sym.basis is None:
            return None, None
        dirs = torch.as_tensor(sym.conserved_directions(), dtype=F64, device=self.device)
        return dirs, torch.as_tensor(sym.constraint_basis(), dtype=F64, device=self.device)

    def _coords(self, plan_i: int, X: torch.Tensor) -> torch.Tensor:
        """[S, r, r] symmetric-use matrices → [S, L] coordinates (upper triangle, or ⟨S_l, X⟩)."""
        dirs = self._coord[plan_i][0]
        if dirs is None:
            r = X.shape[-1]
            iu = torch.triu_indices(r, r, device=X.device)
            return 0.5 * (X + X.transpose(1, 2))[:, iu[0], iu[1]]
        return torch.einsum("lij,sij->sl", dirs, X)

    def _plan_positions(self, plan: ViewPlan) -> dict[str, torch.Tensor]:
        """Per column: [S, length] positions in the record of each of the plan's symmetries."""
        lay = block_layout(coordinates(self.symmetries[plan.sym_ids[0]]))
        base = torch.as_tensor([self.offsets[i] for i in plan.sym_ids], device=self.device)
        return {k: base[:, None] + torch.arange(s, s + n, device=self.device)[None] for k, (s, n) in lay.items()}

    def _param_groups(self) -> tuple[list[int | None], list[str]]:
        """The param group each symmetry's members sit in (the first member's), and warnings."""
        ids = {id(p): gi for gi, grp in enumerate(self.optimizer.param_groups) for p in grp["params"]}
        keys = ("lr", "momentum", "dampening", "nesterov", "weight_decay", "maximize", "decoupled_weight_decay")
        out, warns = [], []
        for s in self.symmetries:
            groups = [ids.get(id(self._params[m.param])) for m in s.members]
            if any(g is None for g in groups):
                warns.append(f"{s.key}: some members are not in the optimizer (they do not move); "
                             "the law assumes one update rule for all members")
            cfgs = {tuple(self.optimizer.param_groups[g].get(k) for k in keys) for g in groups if g is not None}
            if len(cfgs) > 1:
                warns.append(f"{s.key}: members sit in param groups with different hyper-parameters; "
                             "the single-class law does not apply (theory.md §7)")
            out.append(next((g for g in groups if g is not None), None))
        return out, warns

    # -- log -----------------------------------------------------------------------------------------
    def _meta(self, closed: bool) -> dict[str, Any]:
        p = next(iter(self._params.values()))
        opt = [None if g is None else group_config(self.optimizer, self.optimizer.param_groups[g])
               for g in self._group_of]
        return {"format": FORMAT, "dtype": str(p.dtype).replace("torch.", ""), "device": str(p.device),
                "optimizer_class": type(self.optimizer).__name__, "torch": torch.__version__,
                "symmetries": [s.to_json() for s in self.symmetries],
                "blocks": [{"offset": o, "r": s.r, "coordinates": coordinates(s), "optimizer": c,
                            "columns": self._columns(s), "Gamma_or_D": g,
                            "directions": None if s.basis is None else s.conserved_directions().tolist()}
                           for o, s, c, g in zip(self.offsets, self.symmetries, opt, self._second)],
                "layout": {"dtype": "float64", "byte_order": "little", "header": list(HEADER), "block": list(BLOCK),
                           "coordinates": "GL(r): upper triangle row-major (i <= j) of the symmetric matrix "
                                          "(of (Q + Q^T)/2 for Q); subgroup: <S_l, .> on the block's directions"},
                "record_size": self.record_size, "steps_recorded": self.step, "closed": closed,
                "warnings": list(self.warnings), **self.meta}

    def _columns(self, s: GLSymmetry) -> dict[str, int]:
        """Columns of the stacked act-M view X and act-M⁻ᵀ view Y (they bound the law count)."""
        rest = s.rest_sizes({k: tuple(p.shape) for k, p in self._params.items()})
        return {a: sum(n for n, m in zip(rest, s.members) if m.act == a) for a in ("M", "M^-T")}

    def _open(self) -> RecordFile:
        if self._writer is None:
            if self._closed:
                raise RunLogError(f"{self.run_dir}: matrix tracker already closed")
            self.run_dir.mkdir(parents=True, exist_ok=True)
            meta_path, data_path = self.run_dir / META_FILE, self.run_dir / DATA_FILE
            keep: int | None = 0
            if self._resume_step is not None:
                old = read_json(meta_path) if meta_path.exists() else None
                if old is None or old.get("format") != FORMAT or int(old.get("record_size", -1)) != self.record_size:
                    raise RunLogError(f"{meta_path}: cannot resume (missing, another format or another layout)")
                have = count_records(data_path, self.record_size)
                if have < self._resume_step:
                    raise RunLogError(f"{data_path} holds {have} steps, fewer than the checkpoint's {self._resume_step}")
                keep = self._resume_step
            elif (meta_path.exists() or data_path.exists()) and not self.overwrite:
                raise RunLogError(f"{self.run_dir} already holds a matrix log; pass overwrite=True or resume")
            self._writer = RecordFile(data_path, self.record_size, keep=keep)
            write_json_atomic(meta_path, self._meta(closed=False))
        return self._writer

    def flush(self) -> None:
        """Copy pending records to the host, write and fsync them."""
        w = self._open()
        if self._pending:
            w.append(torch.stack(self._pending).cpu().numpy())
            self._pending.clear()
        w.flush()

    # -- statistics ----------------------------------------------------------------------------------
    def _grads(self) -> dict[str, torch.Tensor]:
        return {n: (p.grad if p.grad is not None else torch.zeros_like(p)) for n, p in self._params.items()
                if any(n in plan.params for plan in self.plans)}

    def _state(self, rec: torch.Tensor, with_grad: bool) -> None:
        """Fill C (and Q, Γ, |P_𝔤 Q|, |θ|², |ĝ|², η) of every symmetry into ``rec``; keep views for Δ."""
        grads = self._grads() if with_grad else None
        self._before = []
        for k, (plan, pos) in enumerate(zip(self.plans, self._positions)):
            th = plan.views(self._params)
            rec[pos["C"]] = self._coords(k, pair(th, th))
            rec[pos["theta_sq"]] = (th[0].square().sum((1, 2)) + th[1].square().sum((1, 2)))[:, None]
            if grads is None:
                continue
            g = plan.views(grads)
            Q = pair(g, th)
            rec[pos["Q"]] = self._coords(k, Q)
            basis = self._coord[k][1]
            qc = Q.reshape(len(plan.sym_ids), -1) if basis is None else Q.reshape(len(plan.sym_ids), -1) @ basis.T
            rec[pos["Q_constraint"]] = qc.norm(dim=1)[:, None]
            rec[pos["grad_sq"]] = (g[0].square().sum((1, 2)) + g[1].square().sum((1, 2)))[:, None]
            lrs = [float("nan") if self._group_of[i] is None else
                   float(self.optimizer.param_groups[self._group_of[i]]["lr"]) for i in plan.sym_ids]
            rec[pos["eta"]] = torch.as_tensor(lrs, dtype=F64, device=self.device)[:, None]
            if self._second[plan.sym_ids[0]] == "Gamma":
                rec[pos["Gamma_or_D"]] = self._coords(k, pair(g, g))
                self._before.append(None)
            else:
                self._before.append(th)

    def _pre_hook(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        if self._closed:
            return
        if any(a is not None for a in args[1:]) or kwargs.get("closure") is not None:
            raise RuntimeError("MatrixTracker does not support optimizer.step(closure)")
        self._open()
        with torch.no_grad():
            rec = torch.full((self.record_size,), float("nan"), dtype=F64, device=self.device)
            rec[0] = float(self.step)
            self._state(rec, with_grad=True)
            self._current = rec

    def _post_hook(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        if self._closed or self._current is None:
            return
        with torch.no_grad():
            rec, self._current = self._current, None
            for k, (plan, pos, before) in enumerate(zip(self.plans, self._positions, self._before)):
                if before is None:        # Γ recorded instead
                    continue
                after = plan.views(self._params)
                delta = (after[0] - before[0], after[1] - before[1])
                rec[pos["Gamma_or_D"]] = self._coords(k, pair(delta, delta))
        self._before = []
        self._pending.append(rec)
        self.step += 1
        if len(self._pending) >= self._flush_at:
            self.flush()

    # -- lifecycle -----------------------------------------------------------------------------------
    def close(self) -> None:
        """Append the final state record (C of θ_T; NaN elsewhere), flush, detach the hooks."""
        if self._closed:
            return
        w = self._open()
        self.flush()
        with torch.no_grad():
            rec = torch.full((self.record_size,), float("nan"), dtype=F64, device=self.device)
            rec[0] = float(self.step)
            self._state(rec, with_grad=False)
        w.append(rec.cpu().numpy())
        w.close()
        self._detach()
        write_json_atomic(self.run_dir / META_FILE, self._meta(closed=True))

    def abort(self) -> None:
        """Flush what was recorded and stop, without a final record (the log stays resumable)."""
        if self._closed:
            return
        try:
            self.flush()
            write_json_atomic(self.run_dir / META_FILE, self._meta(closed=False))
        finally:
            if self._writer is not None:
                self._writer.close()
            self._detach()

    def _detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    def state_dict(self) -> dict[str, Any]:
        self.flush()
        return {"format": FORMAT, "step": int(self.step), "record_size": int(self.record_size)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the log at ``state['step']`` (records from that step on are cut); before the first step."""
        if self._writer is not None or self._pending:
            raise RunLogError("load_state_dict must be called before the first tracked step")
        if state.get("format") != FORMAT or int(state.get("record_size", -1)) != self.record_size:
            raise RunLogError("matrix tracker state does not match this tracker (format or record size differ)")
        self.step = int(state["step"])
        self._resume_step = self.step
        self._open()

    def __enter__(self) -> "MatrixTracker":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def read_matrix_log(run_dir: str | os.PathLike) -> tuple[dict[str, Any], np.ndarray, list[str]] | None:
    """(matrix.json, records [n, record_size], warnings), or None when the run has no matrix log."""
    from .runfile import read_records

    run_dir = Path(run_dir)
    meta_path = run_dir / META_FILE
    if not meta_path.exists():
        return None
    meta = read_json(meta_path)
    if meta.get("format") != FORMAT:
        raise RunLogError(f"{meta_path}: format {meta.get('format')!r}, expected {FORMAT}")
    size = int(meta["record_size"])
    expect = len(HEADER) + sum(block_size(int(b["coordinates"])) for b in meta["blocks"])
    if size != expect:
        raise RunLogError(f"{meta_path}: record_size {size} does not match its blocks ({expect})")
    data, warns = read_records(run_dir / DATA_FILE, size)
    return meta, data, warns
