"""Hold a run's matrix log (matrix.json + matrix.bin) against the exact matrix laws.

Per matrix symmetry the conserved functions are the projections c_n = ⟨S_l, C_n⟩ on an orthonormal basis
S_l of 𝔤 ∩ Sym(r) (all of C's upper triangle for GL(r); see ``GLSymmetry.conserved_directions``).  Two
free-running forecasts from C_0, both from the law the symbolic engine derives for the symmetry's act
signature and the optimizer rule of its param group:

* **exact**: the recorded Q_n as input (an identity that holds for any member list: a check of the
  tracker and of the optimizer description, ~1e-15 in float64);
* **law**: Q_n set to 0, what the symmetry predicts.  Only Q's projection on 𝔤 is 0 under the symmetry,
  and ⟨S, Q + Qᵀ⟩ = 2⟨S, Q⟩ for S in 𝔤 ∩ Sym, so zeroing Q changes nothing else in the projections.

The forecasts run on the recorded coordinates themselves (C's upper triangle, or the projections): the laws
are linear with scalar coefficients and transposition acts trivially on coordinates of symmetric parts
(Q and Qᵀ, U and Uᵀ have the same ones), so each coordinate is forecast as a 1×1 matrix by the same
compiled law — no r×r matrices are rebuilt, and symmetries with the same law, act signature and
hyper-parameters are forecast together, in chunks of bounded memory.

Errors are max_n |forecast_n − c_n|₂ / max_n (|θ_n|² over the members): C is a difference of two
Gram matrices and can pass near 0, so it is normalised by the size of its terms (as the scalar
evaluation normalises N by M).  ``breaking`` is max_n |P_𝔤(Q_n)|_F / (|ĝ_n| |θ_n|) over the members:
round-off for an exact symmetry, O(0.01–1) for a member list that is not one.  ``drift`` is
max_n |c_n − c_0|₂ on the same scale: how far the quantity moved, so err_law can be read against it.
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping

import numpy as np

from ..matrix_symmetry import GLSymmetry, gl_law_count
from .matrix_tracker import HEADER, block_layout, read_matrix_log
from .verdicts import Thresholds, judge


def _spec(cfg: Mapping[str, Any] | None):
    """The RuleSpec of a param group, or a reason why no law is derived."""
    from ..symbolic.optimizers import RuleSpec

    if cfg is None:
        return None, "members are not in the optimizer"
    if cfg.get("rule") != "sgd":
        return None, f"no matrix law for optimizer rule {cfg.get('rule')!r} (SGD and heavy ball only)"
    if cfg.get("nesterov") or cfg.get("maximize"):
        return None, "no matrix law for Nesterov momentum or maximize=True"
    return RuleSpec(momentum=cfg.get("momentum", 0.0) > 0, decoupled=bool(cfg.get("decoupled_weight_decay"))), ""


def _columns(data: np.ndarray, blk: Mapping[str, Any], T: int) -> dict[str, np.ndarray]:
    """One block's columns: coordinates [rows, L] for C, Q, Γ or D; scalars [rows]."""
    L, offset = int(blk["coordinates"]), int(blk["offset"])
    lay = block_layout(L)

    def col(name: str, rows: int) -> np.ndarray:
        s, n = lay[name]
        return data[:rows, offset + s: offset + s + n]

    return {"eta": col("eta", T)[:, 0], "C": col("C", T + 1), "Q": col("Q", T),
            blk.get("Gamma_or_D", "D"): col("Gamma_or_D", T), "Q_constraint": col("Q_constraint", T)[:, 0],
            "theta_sq": col("theta_sq", T + 1)[:, 0], "grad_sq": col("grad_sq", T)[:, 0]}


def _weights(blk: Mapping[str, Any]) -> np.ndarray:
    """Squared-norm weights of the coordinates: |X|_F² = Σ w c² (upper triangle: off-diagonal entries twice)."""
    if blk.get("directions") is not None:
        return np.ones(int(blk["coordinates"]))
    r = int(blk["r"])
    iu = np.triu_indices(r)
    return np.where(iu[0] == iu[1], 1.0, 2.0)


def forecast_coordinates(spec, c0: np.ndarray, stats: Mapping[str, np.ndarray], eta: np.ndarray,
                         lam: float, beta: float, d: float, acts: tuple[str, ...]) -> np.ndarray:
    """Forecast coordinates c0 [S, L] with stats [T, S, L] and η [T, S] → [T+1, S, L] (each as a 1×1 matrix)."""
    from ..symbolic.matrix_laws import forecast_matrix

    S, L = c0.shape
    T = eta.shape[0]
    as11 = lambda x: x.reshape(x.shape[:-2] + (S * L, 1, 1))  # noqa: E731
    out = forecast_matrix(spec, as11(c0[None])[0], {k: as11(v) for k, v in stats.items()},
                          np.repeat(eta, L, axis=1), lam=lam, beta=beta, d=d, acts=acts)
    return out.reshape(T + 1, S, L)


#: bytes of float64 arrays a forecast chunk may hold (stats, two forecasts, measurements)
CHUNK_BYTES = 256 << 20


def _summary(values: list[float]) -> dict[str, float]:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    return {"max": float(v.max()) if v.size else float("nan"), "median": float(np.median(v)) if v.size else float("nan")}


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def evaluate_matrix_run(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """Per matrix symmetry err_exact, err_law, breaking, drift and a verdict; None without a matrix log."""
    log = read_matrix_log(run_dir)
    if log is None:
        return None
    meta, data, warnings = log
    warnings = list(warnings) + list(meta.get("warnings", []))
    out: dict[str, Any] = {"format": "nmech-matrix-evaluation/1", "run_dir": str(run_dir), "steps": 0,
                           "closed": bool(meta.get("closed")), "dtype": str(meta.get("dtype", "float64")),
                           "header": list(HEADER), "symmetries": [], "summary": {}, "warnings": warnings}
    if data.shape[0] == 0:
        warnings.append("matrix log has no records")
        return out
    steps = data[:, 0]
    if not np.array_equal(steps, steps[0] + np.arange(len(steps))):
        bad = int(np.argmax(np.diff(steps) != 1)) + 1
        warnings.append(f"matrix log steps are not consecutive at record {bad}; using the records before it")
        data = data[:bad]
    # A log without a final record (crash, still running) uses its last record as the final state.
    T = data.shape[0] - 1
    c_cols = [int(b["offset"]) + block_layout(int(b["coordinates"]))["C"][0] + j
              for b in meta["blocks"] for j in range(int(b["coordinates"]))]
    finite = np.all(np.isfinite(data[:, c_cols]), axis=1)   # C is in every record; non-finite only if diverged
    if not finite.all():
        T = int(np.argmin(finite)) - 1
        warnings.append(f"non-finite statistics from step {int(steps[0]) + T + 1}; compared up to step {int(steps[0]) + T}")
        if T < 0:
            return out
    out["steps"] = T
    th = Thresholds.for_dtype(out["dtype"])   # the same dtype-derived thresholds as the scalar verdicts
    tol = th.breaking_roundoff
    syms = [GLSymmetry.from_json(s) for s in meta["symmetries"]]

    rows: list[dict[str, Any]] = []
    batches: dict[tuple, list[int]] = {}
    cols_of: list[dict[str, np.ndarray]] = []
    for i, (sym, blk) in enumerate(zip(syms, meta["blocks"])):
        st = _columns(data, blk, T)
        cols_of.append(st)
        w = _weights(blk)
        cols = blk.get("columns") or {}
        L = int(blk["coordinates"])
        laws = (gl_law_count(sym.r, cols.get("M", sym.r), cols.get("M^-T", sym.r)) if sym.basis is None
                else (L if cols.get("M", 0) + cols.get("M^-T", 0) >= sym.r else None))
        spec, why = _spec(blk.get("optimizer"))
        scale = float(np.nanmax(st["theta_sq"]))
        drift = float(np.sqrt(((st["C"] - st["C"][0]) ** 2 @ w).max())) / scale if scale > 0 else float("nan")
        den = np.sqrt(st["grad_sq"] * st["theta_sq"][:T])
        ratio = st["Q_constraint"][den > 0] / den[den > 0]
        row: dict[str, Any] = {"index": i, "key": sym.key, "layer": sym.layer, "note": sym.note, "r": sym.r,
                               "subgroup": sym.basis is not None, "conserved_functions": L, "laws": laws,
                               "optimizer": blk.get("optimizer"), "rule": None if spec is None else spec.describe(),
                               "drift": drift, "breaking": float(ratio.max()) if ratio.size else 0.0,
                               "err_exact": float("nan"), "err_law": float("nan"), "scale": scale}
        rows.append(row)
        if spec is None or T < 1 or scale == 0:
            row.update(verdict="degenerate" if spec is not None else "no law",
                       reason=why or "nothing to compare (no steps or zero members)")
            continue
        cfg = blk["optimizer"]
        second = blk.get("Gamma_or_D", "D")
        if spec.momentum or second == "D":   # plain SGD's law from D: heavy ball at β = 0 is the same rule
            spec = type(spec)(momentum=True, decoupled=spec.decoupled)
        beta, d = (cfg["momentum"], cfg["dampening"]) if cfg["momentum"] > 0 else (0.0, 0.0)
        key = (spec, float(cfg["weight_decay"]), beta, d, sym.acts, second, L, blk.get("directions") is None)
        batches.setdefault(key, []).append(i)

    for (spec, lam, beta, d, acts, second, L, _), ids in batches.items():
        per = max(1, CHUNK_BYTES // max(1, 8 * (T + 1) * L * 6))
        for k in range(0, len(ids), per):
            chunk = ids[k:k + per]
            st = {n: np.stack([cols_of[i][n] for i in chunk], axis=1) for n in ("C", "Q", second, "eta")}
            base = {second: st[second]}
            exact = forecast_coordinates(spec, st["C"][0], {**base, "Q": st["Q"]}, st["eta"], lam, beta, d, acts)
            law = forecast_coordinates(spec, st["C"][0], {**base, "Q": np.zeros_like(st["Q"])}, st["eta"],
                                       lam, beta, d, acts)
            for j, i in enumerate(chunk):
                w, row = _weights(meta["blocks"][i]), rows[i]
                err = lambda pred: float(np.sqrt((((pred[:, j] - st["C"][:, j]) ** 2) @ w).max())) / row["scale"]  # noqa: E731
                row.update(err_exact=err(exact), err_law=err(law))
                v = judge(th, err_law=row["err_law"], breaking=row["breaking"], eps=0.0, size_max=1.0,
                          breaking_drift=float(np.sqrt((((exact[:, j] - law[:, j]) ** 2) @ w).max())) / row["scale"])
                row.update(verdict=v.verdict, cause=v.cause)
                if row["err_exact"] > 10 * max(tol, 1e-9):
                    row["reason"] = "the exact identity does not close: the log or the optimizer description is off"

    verdicts: dict[str, int] = {}
    for row in rows:
        row.pop("scale")
        verdicts[row["verdict"]] = verdicts.get(row["verdict"], 0) + 1
    out["summary"] = {"symmetries": len(rows), "verdicts": verdicts, "breaking_tolerance": tol,
                      **{k: {kk: _finite(vv) for kk, vv in _summary([r[k] for r in rows]).items()}
                         for k in ("err_exact", "err_law", "breaking")}}
    out["symmetries"] = [{k: (_finite(v) if isinstance(v, float) else v) for k, v in row.items()} for row in rows]
    return out
