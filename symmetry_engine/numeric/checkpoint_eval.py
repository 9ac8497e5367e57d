"""Checkpoint-only evaluation: hold a directory of checkpoints saved without the tracker against the laws.

Why: most runs worth checking were not tracked. What checkpoints alone can say (theory.md §5):

* **Translation** — the law under the symmetry (P = 0) is a pure function of the first checkpoint's
  ⟨θ, 1⟩ and the optimizer: no data statistics. It is forecast free-running from the first checkpoint
  and compared at every later one (``err_exact`` = ``err_law``: between checkpoints the breaking terms
  are not recorded, so the identity and the law are the same P = 0 forecast, exact under the symmetry).
  With momentum it starts from the buffers' sum Σ v in the first checkpoint's optimizer state, or from a
  fresh buffer at step 0; otherwise it cannot be started, and the evaluation says so.
* **Scale / rescale** — the laws need per-step gradient statistics (|ĝ|², D = |Δθ|²); they are measured
  on a short replica of training from each checkpoint on sampled minibatches (numeric/checkpoint_stats.py,
  numeric/checkpoint_drive.py), interpolated between checkpoints, and fed to the engine's exact law. The result is ``err_approx``, labelled approximate in the JSON, the text and the
  report; ``err_exact``/``err_law``/``err_continuous`` stay null and the verdict is "approximate" with
  cause "estimated from checkpoints", unless the symmetry is broken.
* **Breaking** — |⟨ĝ, ξ⟩| / (|ĝ| |ξ|) measured in float64 at every replica step: exact, since the
  gradient constraint holds for any minibatch and any θ when the symmetry exists. A translation law that
  fails although the sampled constraint holds means the law was not given the training's optimizer or
  loss: such groups are "broken" too, with that cause.

The laws are the engine's (numeric/class_laws.py with one member class), so every SGD variant it derives
(momentum, dampening, Nesterov, schedules) is covered without a formula written here.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from . import class_laws
from .checkpoint_drive import estimate_drive, interpolate
from .checkpoint_files import (CheckpointError, fit_to_model, list_checkpoint_files, load_checkpoint_file,
                               optimizer_state)
from .checkpoint_stats import (BatchSampler, CheckpointStats, GroupReducer, SGDSetting, checkpoint_statistics,
                               loss_function)
from .class_laws import ClassSchedule
from .classes import OptimizerClass
from .evaluate import Evaluation, GroupResult, KindSeries, _class_summaries, _clean, _summarise, _summaries
from .predict import LawUnavailable
from .runlog import KindStats
from .verdicts import Thresholds, Verdict, judge
from ..symmetry import KINDS, Symmetry

_TINY = 1e-300
ESTIMATED = "estimated from checkpoints"
INCONSISTENT = 1e3   # a translation law error above 1e3 × the round-off bound is no round-off
APPROX_NOTE = ("scale/rescale errors are approximate (err_approx): their laws' driving statistics (|ĝ|² or "
               "D = |Δθ|²) were not recorded; they are estimated by replicas of {batches} training steps on "
               "sampled minibatches of {batch_size} from each checkpoint, interpolated between checkpoints "
               "(err_exact, err_law and err_continuous stay null for them)")


def check_hyperparameters(lr: float, momentum: float, dampening: float, nesterov: bool, weight_decay: float) -> None:
    """One-line ValueError for an optimizer description PyTorch's SGD would not run as the laws assume."""
    def finite(x: float) -> bool:
        return isinstance(x, (int, float)) and math.isfinite(x)

    if not finite(lr) or lr <= 0:
        raise ValueError(f"learning rate must be positive and finite, got {lr!r}")
    if not finite(momentum) or not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    if not finite(dampening) or not 0 <= dampening <= 1:
        raise ValueError(f"dampening must be in [0, 1], got {dampening!r}")
    if not finite(weight_decay) or weight_decay < 0:
        raise ValueError(f"weight decay must be non-negative and finite, got {weight_decay!r}")
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError("Nesterov momentum needs momentum > 0 and dampening 0")


@dataclass
class CheckpointKindSeries(KindSeries):
    """Trajectories at the checkpoints' steps (rows = checkpoints); ``approx`` is the estimated law."""

    approx: np.ndarray | None = None


@dataclass
class CheckpointEvaluation(Evaluation):
    """An :class:`Evaluation` of checkpoints (``source == "checkpoints"``): ``steps`` are the checkpoints'
    steps, ``lrs`` the learning rate of every step between the first and the last, and ``estimation`` says
    how the approximate statistics were obtained."""

    estimation: dict[str, Any] = field(default_factory=dict)
    drive_sums: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # Σ_n of the estimated G, D per group

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out["estimation"] = _clean(self.estimation)
        return out


def _lr_function(lr: float | Callable[[int], float]) -> Callable[[int], float]:
    return lr if callable(lr) else (lambda step, v=float(lr): v)


def _flag_warnings(opt_groups: Sequence[Mapping[str, Any]], opt: SGDSetting, step: int, name: str) -> dict[str, str]:
    """Where the checkpoint's own optimizer state contradicts the flags: one line per hyper-parameter."""
    out = {}
    if len({tuple(sorted((k, str(v)) for k, v in g.items() if k in ("lr", "momentum", "weight_decay", "dampening")))
            for g in opt_groups}) > 1:
        out["groups"] = (f"{name}: the optimizer has {len(opt_groups)} param groups with different hyper-parameters; "
                         "this evaluation applies the flags to every parameter (track the run to get per-group laws)")
    if any("betas" in g for g in opt_groups):
        out["rule"] = (f"{name}: its optimizer is not SGD (its param groups have betas); these laws describe "
                       "torch.optim.SGD with the flags given")
    flags = {"momentum": opt.momentum, "dampening": opt.dampening, "weight_decay": opt.weight_decay,
             "nesterov": opt.nesterov}
    for g in opt_groups[:1]:
        for k, v in flags.items():
            if k in g and not math.isclose(float(g[k]), float(v), rel_tol=1e-9, abs_tol=1e-15):
                out[k] = f"{name}: its optimizer has {k} {g[k]}, the flags say {v}"
        if "lr" in g and step > 0:
            near = [opt.lr(s) for s in (step - 1, step)]
            if not any(math.isclose(float(g["lr"]), x, rel_tol=1e-6) for x in near):
                out["lr"] = f"{name}: its optimizer has lr {g['lr']:g}, the flags give {near[0]:g} at step {step - 1}"
    return out


def _load_all(directory: Path, model, reducers, data, batch_size: int, batches: int, seed: int, loss_fn, device,
              opt: SGDSetting, model_name: str) -> tuple[list[CheckpointStats], list[str], str | None]:
    import torch

    files, warns = list_checkpoint_files(directory)
    params = {n: tuple(p.shape) for n, p in model.named_parameters()}
    buffers = {n: tuple(b.shape) for n, b in model.state_dict().items() if n not in params}
    stats, seen, dtype, flagged = [], {}, None, {}
    for path in files:
        ck = load_checkpoint_file(path)
        if ck.step in seen:
            raise CheckpointError(f"{path} and {seen[ck.step]} both hold step {ck.step}")
        seen[ck.step] = path
        if ck.name_step is not None and ck.name_step != ck.step:
            warns.append(f"{path.name}: its 'step' key says {ck.step}, its name {ck.name_step}; the key is used")
        warns += fit_to_model(ck, params, buffers, model_name)
        dtype = dtype or ck.dtype
        state = {k: torch.from_numpy(v).to(device) for k, v in ck.state.items()}
        model.load_state_dict(state, strict=False)
        ost = optimizer_state(ck, list(params), params)
        if ost is not None:
            warns += [w for w in [ost.warning] if w]
            for key, why in _flag_warnings(ost.groups, opt, ck.step, path.name).items():
                flagged.setdefault(key, why)   # the first checkpoint that contradicts each value
        sample = BatchSampler(data, batch_size, seed * 1_000_003 + ck.step, device)
        stats.append(checkpoint_statistics(model, str(path), ck.step, reducers, sample, loss_fn, opt, batches,
                                           ost.buffers if ost is not None else None))
    stats.sort(key=lambda s: s.step)
    if len(stats) < 2:
        raise CheckpointError(f"{directory} holds one checkpoint ({Path(stats[0].path).name}); the laws need at least two")
    return stats, list(dict.fromkeys(warns + list(flagged.values()))), dtype


def _kind_stats(cols: dict[str, np.ndarray], initial: dict[str, np.ndarray], G: int) -> KindStats:
    ar = np.arange(G, dtype=np.int64)
    return KindStats(cols, ar, np.zeros(G, dtype=np.int64), ar, initial)


def _schedule(opt: SGDSetting, lrs: np.ndarray, fresh: bool, names: Sequence[str]) -> list[ClassSchedule]:
    T = lrs.shape[0]
    cls = OptimizerClass(0, 0, True, True, fresh, "sgd", opt.nesterov, False, tuple(names))
    full = lambda v: np.full(T, float(v))  # noqa: E731
    return [ClassSchedule(cls, lrs, full(opt.momentum), full(opt.dampening), full(opt.weight_decay), np.ones(T, bool))]


def _breaking(stats: Sequence[CheckpointStats], kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Per group: max over checkpoints and replica steps of |⟨ĝ, ξ⟩| / (|ĝ| |ξ|); and whether it was ever ≠ 0."""
    worst, exercised = None, None
    for s in stats:
        k = s.kinds[kind]
        den = np.sqrt(np.maximum(s.grad_sq, 0))[:, None] * k.xi_norm
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.where(den > 0, np.abs(k.inner) / np.where(den > 0, den, 1.0), 0.0).max(axis=0)
        nz = np.any(k.inner != 0, axis=0)
        worst = r if worst is None else np.maximum(worst, r)
        exercised = nz if exercised is None else exercised | nz
    return worst, exercised


def _blocks(G: int, T: int):
    size = max(1, int(4_000_000 // max(T + 1, 1)))
    for start in range(0, G, size):
        yield slice(start, min(G, start + size))


@dataclass
class _KindOut:
    measured: np.ndarray
    law: np.ndarray
    continuous: np.ndarray
    approx: np.ndarray
    drift: np.ndarray
    norm: np.ndarray
    note: str | None = None
    drive_sums: dict[str, np.ndarray] = field(default_factory=dict)


def _fresh(first: CheckpointStats) -> bool:
    """The laws start from an empty buffer (PyTorch's undampened first step), or need no buffer at all."""
    return first.buffer_source in ("fresh", "none")


def _translation(stats, opt: SGDSetting, lrs, rows, names) -> _KindOut:
    C, T = len(stats), lrs.shape[0]
    meas = np.stack([s.kinds["translation"].state["s"] for s in stats])
    size = np.stack([s.kinds["translation"].state["A"] for s in stats])
    norm = np.max(size, axis=0)
    G = meas.shape[1]
    nan = np.full((C, G), np.nan)
    first = stats[0]
    if first.buffer_source == "burn-in":
        return _KindOut(meas, nan, nan, nan, np.zeros(G), norm,
                        f"the first checkpoint (step {first.step}) holds no momentum buffers and is not at step 0: the "
                        "law cannot be started (save the optimizer state, or a checkpoint at step 0)")
    buf = first.kinds["translation"].buffer
    ck_steps = np.array([s.step for s in stats], dtype=np.float64)
    absP = np.stack([np.abs(s.kinds["translation"].inner).mean(axis=0) for s in stats])
    law, cont, drift = nan.copy(), nan.copy(), np.zeros(G)
    sched = _schedule(opt, lrs, _fresh(first), names)
    for b in _blocks(G, T):
        g = b.stop - b.start
        col = lambda row0: np.vstack([row0[None], np.full((T, g), np.nan)])  # noqa: E731 - the laws read row 0
        init = {"m": buf["m"][b] if buf else np.zeros(g)}
        base = {"s": col(meas[0, b]), "A": col(size[0, b])}
        ks = _kind_stats({**base, "P": np.zeros((T + 1, g))}, init, g)
        f_law = class_laws.forecast_exact("translation", ks, sched, T, "law")
        # what the measured round-off breaking could move the quantity by (same sign every step: a bound)
        P = np.vstack([interpolate(absP[:, b], ck_steps, ck_steps[0] + np.arange(T)), np.zeros((1, g))])
        f_drift = class_laws.forecast_exact("translation", _kind_stats({**base, "P": P}, init, g), sched, T, "identity")
        drift[b] = np.max(np.abs(f_drift - f_law), axis=0)
        law[:, b] = f_law[rows]
        cont[:, b] = class_laws.forecast_continuous("translation", ks, sched, T)[rows]
    return _KindOut(meas, law, cont, nan, drift, norm)


def _quadratic(kind: str, stats, opt: SGDSetting, lrs, rows, names) -> _KindOut:
    C, T = len(stats), lrs.shape[0]
    meas = np.stack([s.kinds[kind].state["N"] for s in stats])
    size = np.stack([s.kinds[kind].state["M"] for s in stats])
    norm = np.max(size, axis=0)
    G = meas.shape[1]
    approx = np.full((C, G), np.nan)
    sums = {"G": np.zeros(G), "D": np.zeros(G)}
    sched = _schedule(opt, lrs, _fresh(stats[0]), names)
    for b in _blocks(G, T):
        g = b.stop - b.start
        est = estimate_drive(stats, kind, b, lrs)
        for k in sums:
            sums[k][b] = est.inputs[k].sum(axis=0)
        col = lambda row0: np.vstack([row0[None], np.full((T, g), np.nan)])  # noqa: E731 - the laws read row 0
        pad = lambda x: np.vstack([x, np.full((1, g), np.nan)])  # noqa: E731 - inputs are rows 0..T-1
        cols = {"N": col(meas[0, b]), "M": col(size[0, b]), "Q": np.zeros((T + 1, g)),
                **{k: pad(v) for k, v in est.inputs.items()}}
        init = {k: est.initial.get(k, np.zeros(g)) for k in ("W", "V")}
        approx[:, b] = class_laws.forecast_exact(kind, _kind_stats(cols, init, g), sched, T, "law")[rows]
    nan = np.full((C, G), np.nan)
    return _KindOut(meas, nan, nan, approx, np.zeros(G), norm, drive_sums=sums)


def evaluate_checkpoints(directory: str | os.PathLike, model, data, *, lr: float | Callable[[int], float],
                         momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False,
                         weight_decay: float = 0.0, loss: str = "cross_entropy", loss_fn: Callable | None = None,
                         batch_size: int = 64, batches: int = 16, seed: int = 0,
                         symmetries: Sequence[Symmetry] | None = None, example_inputs=None, dtype: str | None = None,
                         device: str = "cpu", model_info: Mapping[str, Any] | None = None) -> CheckpointEvaluation:
    """Evaluate checkpoints saved without the tracker (see the module doc and docs/run_format.md).

    ``model`` is the architecture (a copy is loaded with each checkpoint, in float64 and train mode);
    ``data`` a map-style dataset of (input, label) pairs from which the replica of ``batches`` training
    steps at every checkpoint samples minibatches of ``batch_size`` (numeric/checkpoint_drive.py); ``lr``
    a number or a function of the optimizer step (a schedule); ``momentum``, ``dampening``, ``nesterov``
    and ``weight_decay`` those of the ``torch.optim.SGD`` that trained it. ``symmetries`` default to
    ``analyze(model, example_inputs, loss)`` on the first samples of ``data``. ``dtype`` (for the
    round-off thresholds) defaults to the dtype the checkpoints were saved in. Errors are one-line
    ``CheckpointError`` (files) or ``ValueError`` (arguments).
    """
    import torch

    lr_fn = _lr_function(lr)
    first_lr = lr if not callable(lr) else None
    check_hyperparameters(first_lr if first_lr is not None else 1.0, momentum, dampening, nesterov, weight_decay)
    if int(batches) < 1:
        raise ValueError(f"batches (replica steps per checkpoint) must be positive, got {batches}")
    if int(batch_size) < 1:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    opt = SGDSetting(lr_fn, float(momentum), float(dampening), bool(nesterov), float(weight_decay))
    directory = Path(directory)
    list_checkpoint_files(directory)   # a missing or empty directory fails before any model work
    net = copy.deepcopy(model).to(device=device, dtype=torch.float64).train()
    if symmetries is None:
        from ..graph.analysis import analyze

        if example_inputs is None:
            example_inputs = BatchSampler(data, 4, seed, device)()[0]
        symmetries = analyze(net, example_inputs.to(device=device, dtype=torch.float64), loss=loss).symmetries
    symmetries = list(symmetries)
    by_kind = {k: [i for i, s in enumerate(symmetries) if s.kind == k] for k in KINDS}
    reducers = {k: GroupReducer([symmetries[i] for i in idx], device) for k, idx in by_kind.items() if idx}
    name = str((model_info or {}).get("spec") or type(model).__name__)
    stats, warns, saved_dtype = _load_all(directory, net, reducers, data, int(batch_size), int(batches), int(seed),
                                          loss_fn or loss_function(loss), device, opt, name)
    ck_steps = np.array([s.step for s in stats], dtype=np.int64)
    t0, T = int(ck_steps[0]), int(ck_steps[-1] - ck_steps[0])
    lrs = np.array([float(lr_fn(n)) for n in range(t0, t0 + T)], dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(lrs) | (lrs < 0))
    if bad.size:
        raise ValueError(f"the learning rate at step {t0 + int(bad[0])} is {lrs[bad[0]]!r}; it must be finite and ≥ 0")
    if callable(lr) and lrs.size:
        check_hyperparameters(float(lrs.max()), momentum, dampening, nesterov, weight_decay)
    rows = ck_steps - t0
    th = Thresholds.for_dtype(dtype or saved_dtype)
    names = [n for n, _ in net.named_parameters()]
    pred_errors: dict[str, str] = {}
    drive_sums: dict[str, dict[str, np.ndarray]] = {}
    groups: list[GroupResult] = []
    series: dict[str, CheckpointKindSeries] = {}
    for kind in KINDS:
        if kind not in reducers:
            continue
        syms = [symmetries[i] for i in by_kind[kind]]
        try:
            if kind == "translation":
                out = _translation(stats, opt, lrs, rows, names)
            else:
                out = _quadratic(kind, stats, opt, lrs, rows, names)
        except LawUnavailable as exc:
            pred_errors[f"{kind}/exact"] = " ".join(str(exc).split())
            continue
        if out.note:
            pred_errors[f"{kind}/exact"] = out.note
        if out.drive_sums:
            drive_sums[kind] = out.drive_sums
        brk, exercised = _breaking(stats, kind)
        denom = np.maximum(out.norm, _TINY)
        err = {k: np.max(np.abs(out.measured - v), axis=0) / denom
               for k, v in (("law", out.law), ("continuous", out.continuous), ("approx", out.approx))}
        verdicts = [_verdict(kind, th, s, err, brk, exercised, out, j) for j, s in enumerate(syms)]
        series[kind] = CheckpointKindSeries(out.measured, out.law, out.law, out.continuous, out.norm, syms,
                                            [v.verdict for v in verdicts], out.approx)
        for j, (gi, s) in enumerate(zip(by_kind[kind], syms)):
            v, quad = verdicts[j], kind != "translation"
            groups.append(GroupResult(
                gi, kind, s.key, s.layer, s.channel, v.verdict, v.cause, float(err["law"][j]), float(err["law"][j]),
                float(err["continuous"][j]), float(brk[j]), 0.0, [0], float(out.measured[-1, j]),
                float(out.law[-1, j]), float(out.law[-1, j]), float(out.continuous[-1, j]), float(out.norm[j]),
                float(err["approx"][j]) if quad else None))
    groups.sort(key=lambda g: g.index)
    summary, layers = _summaries(groups)
    for kind, s in summary.items():
        s["approx"] = _summarise([g.err_approx for g in groups if g.kind == kind and g.verdict != "degenerate"])
    for row in layers:
        row["approx"] = _summarise([g.err_approx for g in groups if g.kind == row["kind"] and g.layer == row["layer"]
                                    and g.verdict != "degenerate"])
    if any(k != "translation" for k in series):
        warns.insert(0, APPROX_NOTE.format(batches=int(batches), batch_size=int(batch_size)))
    if stats[0].buffer_source == "burn-in" and any(k != "translation" for k in series):
        warns.append(f"the first checkpoint (step {t0}) holds no momentum buffers: the scale/rescale laws start "
                     "from a buffer estimated by a burn-in replica")
    sched = _schedule(opt, lrs, _fresh(stats[0]), names)
    meta = {"optimizer": {"rule": "sgd", "optimizer_class": "SGD", "lr": float(lrs[0]) if T else float("nan"),
                          "momentum": opt.momentum, "dampening": opt.dampening, "nesterov": opt.nesterov,
                          "weight_decay": opt.weight_decay, "decoupled_weight_decay": False},
            "dtype": th.dtype, "device": str(device), "model": dict(model_info) if model_info else None,
            "train": None, "closed": True}
    estimation = {"checkpoints": [{"path": s.path, "step": s.step, "buffer": s.buffer_source,
                                   "replica_loss": float(np.mean(s.losses))} for s in stats],
                  "replica_steps": int(batches), "batch_size": int(batch_size), "seed": int(seed),
                  "interpolation": "replica means at their centre steps, linear in the step between checkpoints",
                  "approximate": sorted(k for k in series if k != "translation"),
                  "note": APPROX_NOTE.format(batches=int(batches), batch_size=int(batch_size))}
    return CheckpointEvaluation(run_dir=directory, meta=meta, steps=ck_steps, lrs=lrs, losses=np.full(T, np.nan),
                                series=series, groups=groups, summary=summary, layers=layers, thresholds=th,
                                classes=_class_summaries(sched), prediction_errors=pred_errors, warnings=warns,
                                source="checkpoints", estimation=estimation, drive_sums=drive_sums)


def _verdict(kind: str, th: Thresholds, s: Symmetry, err, brk, exercised, out: _KindOut, j: int) -> Verdict:
    eps = float((s.extra or {}).get("eps", 0.0) or 0.0)
    b = float(brk[j]) if np.isfinite(brk[j]) else None
    if kind != "translation" or out.note:
        v = judge(th, err_law=float("inf"), breaking=b, eps=eps, size_max=float(out.norm[j]), breaking_drift=0.0)
        if v.verdict == "broken":
            return v
        return Verdict("approximate", ESTIMATED if kind != "translation" else
                       "law not started: no momentum buffers at the first checkpoint")
    e = float(err["law"][j]) if np.isfinite(err["law"][j]) else float("inf")
    v = judge(th, err_law=e, breaking=b, eps=eps, size_max=float(out.norm[j]), breaking_drift=float(out.drift[j]),
              exercised=bool(exercised[j]))
    if v.verdict == "approximate" and e > INCONSISTENT * th.law_holds:
        # the constraint holds on the sampled batches, yet the trajectory leaves the law: the law was fed
        # the wrong optimizer, or the training's loss/data are not the ones the gradients were sampled with
        return Verdict("broken", "law fails between checkpoints though the sampled gradients satisfy the "
                       "constraint: optimizer flags, schedule or loss differ from the training's")
    return v


__all__ = ["evaluate_checkpoints", "CheckpointEvaluation", "CheckpointKindSeries", "check_hyperparameters",
           "CheckpointError", "ESTIMATED"]
