"""Hold a run's matrix log (matrix.json + matrix.bin) against the exact matrix laws.

Per matrix symmetry the conserved functions are the projections c_n = ⟨S_l, C_n⟩ on an orthonormal basis
S_l of 𝔤 ∩ Sym(r) (all of C's upper triangle for GL(r); see ``GLSymmetry.conserved_directions``).  Two
free-running forecasts from C_0, both from the law the symbolic engine derives for the symmetry's act
signature and the optimizer rule of its param group:

* **exact**: the recorded Q_n as input (an identity that holds for any member list: a check of the
  tracker and of the optimizer description, ~1e-15 in float64);
* **law**: Q_n set to 0, what the symmetry predicts.  Only Q's projection on 𝔤 is 0 under the symmetry,
  and ⟨S, Q + Qᵀ⟩ = 2⟨S, Q⟩ for S in 𝔤 ∩ Sym, so zeroing Q changes nothing else in the projections.

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

#: breaking above which a symmetry is called broken, per parameter dtype (round-off of ĝ and θ)
BREAKING_TOL = {"float64": 1e-9, "float32": 1e-4, "bfloat16": 3e-2, "float16": 1e-2}


def _sym_from_ut(ut: np.ndarray, r: int) -> np.ndarray:
    out = np.zeros(ut.shape[:-1] + (r, r))
    iu = np.triu_indices(r)
    out[..., iu[0], iu[1]] = ut
    out[..., iu[1], iu[0]] = ut
    return out


def _matrices(coords: np.ndarray, r: int, directions: np.ndarray | None) -> np.ndarray:
    """Coordinates → symmetric r×r matrices (upper triangle, or Σ_l c_l S_l on orthonormal directions).

    For a subgroup this is the orthogonal projection of the matrix on 𝔤 ∩ Sym(r); the laws are linear
    with scalar coefficients, so forecasting the projections is projecting the forecast."""
    if directions is None:
        return _sym_from_ut(coords, r)
    return np.einsum("...l,lij->...ij", coords, directions)


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


def _block(data: np.ndarray, blk: Mapping[str, Any], T: int) -> dict[str, np.ndarray]:
    r, L, offset = int(blk["r"]), int(blk["coordinates"]), int(blk["offset"])
    lay = block_layout(L)
    dirs = None if blk.get("directions") is None else np.asarray(blk["directions"], dtype=np.float64)

    def col(name: str, rows: int) -> np.ndarray:
        s, n = lay[name]
        return data[:rows, offset + s: offset + s + n]

    return {"eta": col("eta", T)[:, 0], "C": _matrices(col("C", T + 1), r, dirs),
            "Q": _matrices(col("Q", T), r, dirs), blk.get("Gamma_or_D", "D"): _matrices(col("Gamma_or_D", T), r, dirs),
            "Q_constraint": col("Q_constraint", T)[:, 0], "theta_sq": col("theta_sq", T + 1)[:, 0],
            "grad_sq": col("grad_sq", T)[:, 0]}


def _summary(values: list[float]) -> dict[str, float]:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    return {"max": float(v.max()) if v.size else float("nan"), "median": float(np.median(v)) if v.size else float("nan")}


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def evaluate_matrix_run(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """Per matrix symmetry err_exact, err_law, breaking, drift and a verdict; None without a matrix log."""
    from ..symbolic.matrix_laws import forecast_matrix

    log = read_matrix_log(run_dir)
    if log is None:
        return None
    meta, data, warnings = log
    warnings = list(warnings) + list(meta.get("warnings", []))
    if data.shape[0] == 0:
        return {"format": "nmech-matrix-evaluation/1", "run_dir": str(run_dir), "steps": 0, "symmetries": [],
                "summary": {}, "warnings": warnings + ["matrix log has no records"]}
    steps = data[:, 0]
    if not np.array_equal(steps, steps[0] + np.arange(len(steps))):
        bad = int(np.argmax(np.diff(steps) != 1)) + 1
        warnings.append(f"matrix log steps are not consecutive at record {bad}; using the records before it")
        data = data[:bad]
    # A log without a final record (crash, still running) uses its last record as the final state.
    closed = bool(meta.get("closed"))
    T = data.shape[0] - 1
    c_cols = [int(b["offset"]) + block_layout(int(b["coordinates"]))["C"][0] + j
              for b in meta["blocks"] for j in range(int(b["coordinates"]))]
    finite = np.all(np.isfinite(data[:, c_cols]), axis=1)   # C is recorded in every record, NaN only if diverged
    if not finite.all():
        T = min(T, int(np.argmin(finite)) - 1)
        warnings.append(f"non-finite statistics from step {int(steps[0]) + T + 1}; compared up to step {int(steps[0]) + T}")
    dtype = str(meta.get("dtype", "float64"))
    tol = BREAKING_TOL.get(dtype, 1e-4)
    syms = [GLSymmetry.from_json(s) for s in meta["symmetries"]]

    results: list[dict[str, Any]] = []
    for i, (sym, blk) in enumerate(zip(syms, meta["blocks"])):
        r = sym.r
        st = _block(data, blk, max(T, 0))
        dirs = sym.conserved_directions()
        cols = blk.get("columns") or {}
        laws = (gl_law_count(r, cols.get("M", r), cols.get("M^-T", r)) if sym.basis is None
                else (len(dirs) if cols.get("M", 0) + cols.get("M^-T", 0) >= r else None))
        row: dict[str, Any] = {"index": i, "key": sym.key, "layer": sym.layer, "note": sym.note, "r": r,
                               "subgroup": sym.basis is not None, "conserved_functions": int(len(dirs)),
                               "laws": laws, "optimizer": blk.get("optimizer")}
        spec, why = _spec(blk.get("optimizer"))
        scale = float(np.nanmax(st["theta_sq"])) if T >= 0 else 0.0
        proj = lambda X: np.einsum("lij,...ij->...l", dirs, X)  # noqa: E731
        meas = proj(st["C"])
        drift = float(np.max(np.linalg.norm(meas - meas[0], axis=-1))) / scale if scale > 0 else float("nan")
        den = np.sqrt(st["grad_sq"] * st["theta_sq"][:T])
        ratio = st["Q_constraint"][den > 0] / den[den > 0]
        breaking = float(ratio.max()) if ratio.size else 0.0
        row.update(drift=drift, breaking=breaking, rule=None if spec is None else spec.describe())
        if spec is None or T < 1 or scale == 0:
            row.update(err_exact=float("nan"), err_law=float("nan"),
                       verdict="degenerate" if spec is not None else "no law",
                       reason=why or ("nothing to compare (no steps or zero members)"))
            results.append(row)
            continue
        cfg = blk["optimizer"]
        kw = dict(lam=cfg["weight_decay"], beta=cfg["momentum"], d=cfg["dampening"], acts=sym.acts)
        needed = "D" if spec.momentum else "Gamma"
        if needed not in st:   # plain SGD's law from D: the heavy-ball form at β = 0 is the same rule
            spec = type(spec)(momentum=True, decoupled=spec.decoupled)
            kw.update(beta=0.0, d=0.0)
        base = {k: st[k] for k in ("Gamma", "D") if k in st}
        exact = forecast_matrix(spec, st["C"][0], {**base, "Q": st["Q"]}, st["eta"], **kw)
        law = forecast_matrix(spec, st["C"][0], {**base, "Q": np.zeros_like(st["Q"])}, st["eta"], **kw)
        err_exact = float(np.max(np.linalg.norm(proj(exact) - meas, axis=-1))) / scale
        err_law = float(np.max(np.linalg.norm(proj(law) - meas, axis=-1))) / scale
        verdict = "holds" if breaking <= tol else "broken"
        row.update(err_exact=err_exact, err_law=err_law, verdict=verdict,
                   final_measured=meas[-1].tolist(), final_law=proj(law)[-1].tolist())
        if err_exact > max(tol, 1e-9) * 10:
            row["reason"] = "the exact identity does not close: the log or the optimizer description is off"
        results.append(row)

    verdicts: dict[str, int] = {}
    for row in results:
        verdicts[row["verdict"]] = verdicts.get(row["verdict"], 0) + 1
    summary = {"symmetries": len(results), "verdicts": verdicts,
               "err_exact": _summary([r["err_exact"] for r in results]),
               "err_law": _summary([r["err_law"] for r in results]),
               "breaking": _summary([r["breaking"] for r in results]),
               "breaking_tolerance": tol}
    clean = [{k: (_finite(v) if isinstance(v, float) else v) for k, v in row.items()} for row in results]
    return {"format": "nmech-matrix-evaluation/1", "run_dir": str(run_dir), "steps": int(T),
            "closed": closed, "dtype": dtype, "header": list(HEADER), "symmetries": clean,
            "summary": {k: ({kk: _finite(vv) if isinstance(vv, float) else vv for kk, vv in v.items()}
                            if isinstance(v, dict) else v) for k, v in summary.items()},
            "warnings": warnings}
