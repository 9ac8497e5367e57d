"""Verdicts: what a group's numbers say about its symmetry in this run, with thresholds from the dtype.

Why: the exact identity takes the recorded breaking terms as inputs, so it matches whatever the slice is;
only the *law* (breaking set to what the symmetry says) and the measured breaking test the symmetry
(theory.md §5). The thresholds follow from u, the unit round-off of the run's dtype
(``np.finfo(dtype).eps``: 1.2e-7 for float32, 2.2e-16 for float64):

* ``exact_identity = law_holds = 1e3·u`` — a recurrence of float64 statistics of parameters stored in the
  run's dtype accumulates about u per step relative to the group's size, growing like √T; 1e3·u covers
  runs up to ~10⁶ steps (measured: 6e-15 in float64, 1e-6 in float32 after a few hundred steps);
* ``breaking_roundoff = 1e3·u`` — the measured breaking |⟨ĝ, ξ⟩| / (|ĝ| |ξ|) (|ĝ| over the whole model, as
  certification uses) of an exact symmetry is round-off of the backward pass: certified models give ~1e-16
  in float64; in float32 the sums over a batch's activations give up to ~1e-5;
* ``breaking_eps_factor = 1e3`` — a normalizer with ε > 0 breaks its scale symmetry by ⟨g, θ_A⟩ = −2ε ∂L/∂ε,
  about ε/σ² of the gradient for a channel of variance σ²; breaking up to 1e3·ε (channels with σ² down to
  1e-3) is attributed to ε, above it no normalizer explains it;
* ``degenerate_ratio = 10`` — a group whose size stays within 10× the drift its own recorded breaking
  terms cause is round-off itself (zero-initialised biases before batch norm): its relative errors mean
  nothing, so it is counted apart.
* mixed precision (autocast bfloat16/float16, run.json ``amp``): ``law_holds`` and ``breaking_roundoff``
  become max(1e3·u, eps of the autocast dtype) — the low-precision backward pass breaks every symmetry at
  its own round-off (``Thresholds.for_dtype``). A group within those bounds but above the storage dtype's
  (1e3·u) is **approximate** with cause "<dtype> autocast round-off": the evaluation says what broke it.

Verdicts, in this order: **broken** — breaking above what round-off and ε explain (there is no such
symmetry in this run); **holds** — the law within ``law_holds`` and breaking at round-off;
**degenerate** — as above; **approximate** — everything else, with its cause (the normalizer's ε, or the
dtype's round-off accumulated by the law). A group whose breaking cannot be observed (members without a
computed gradient), or whose gradient was exactly zero throughout (a dead unit: the symmetry is not
exercised), is judged on its law alone, and its cause says so.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

VERDICTS = ("holds", "approximate", "broken", "degenerate")


#: Machine epsilon of the dtypes numpy does not know.
_EPS = {"bfloat16": 2.0 ** -7}


def dtype_eps(name: str) -> float | None:
    """np.finfo(dtype).eps by name (bfloat16 included); None for an unknown name."""
    if name in _EPS:
        return _EPS[name]
    try:
        return float(np.finfo(np.dtype(name)).eps)
    except TypeError:
        return None


@dataclass(frozen=True)
class Thresholds:
    dtype: str
    unit_roundoff: float
    exact_identity: float
    law_holds: float
    breaking_roundoff: float
    breaking_eps_factor: float = 1e3
    degenerate_ratio: float = 10.0
    compute_dtype: str | None = None

    @classmethod
    def for_dtype(cls, dtype: str | None, compute_dtype: str | None = None) -> "Thresholds":
        """Thresholds for parameters stored in ``dtype``; ``compute_dtype`` is the autocast dtype of the
        forward/backward pass (mixed precision), which sets the round-off of the gradients.

        Mixed precision: the gradient, computed in bfloat16/float16, breaks every symmetry at that dtype's
        round-off (measured on VGG-16-BN: breaking up to ~0.06·eps for both, docs/performance.md), and the law,
        which sets the breaking to 0, drifts by as much; so ``breaking_roundoff`` and ``law_holds`` become
        max(1e3·u, eps of the autocast dtype). The exact identity, which uses the recorded breaking, still
        checks the float64 bookkeeping of parameters stored in ``dtype``: it keeps 1e3·u."""
        name = str(dtype or "float32").replace("torch.", "")
        u = dtype_eps(name)
        if u is None or u > float(np.finfo(np.float32).eps):
            u = float(np.finfo(np.float32).eps)  # low-precision or unknown storage: the float32 statistics bound it
            name = f"{name} (float32 thresholds)"
        th = cls(name, u, 1e3 * u, 1e3 * u, 1e3 * u)
        comp = None if compute_dtype is None else str(compute_dtype).replace("torch.", "")
        uc = dtype_eps(comp) if comp else None
        if comp and uc is not None and uc > u:
            bound = max(1e3 * u, uc)
            th = cls(f"{name}, {comp} autocast", u, 1e3 * u, bound, bound, compute_dtype=comp)
        return th

    def allowed_breaking(self, eps: float) -> float:
        return max(self.breaking_roundoff, self.breaking_eps_factor * max(float(eps), 0.0))

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Verdict:
    verdict: str
    cause: str | None


def judge(th: Thresholds, *, err_law: float, breaking: float | None, eps: float, size_max: float,
          breaking_drift: float, closed_law: bool = True, exercised: bool = True) -> Verdict:
    """One group's verdict from its law error, measured breaking and normalizer ε (see the module doc).

    Causes are short categories (the numbers are in the group's own fields), so reports can count them."""
    allowed = th.allowed_breaking(eps)
    observed = breaking is not None and math.isfinite(breaking)
    eps_cause = f"normalizer ε = {eps:g}"
    if observed and breaking > allowed:
        return Verdict("broken", f"breaking above 1e3·ε ({eps_cause})" if eps > 0 else
                       "breaking above the round-off bound")
    if not closed_law:
        if not observed:
            return Verdict("approximate", "no closed law for this optimizer; gradient constraint not observable")
        if breaking <= th.breaking_roundoff:
            return Verdict("holds", "gradient constraint at round-off; no closed law for this optimizer")
        return Verdict("approximate", f"{eps_cause}; no closed law for this optimizer")
    untested = None if observed else "symmetry not tested: members without a computed gradient"
    if observed and not exercised:
        untested = "not exercised: its gradient was exactly zero at every step (e.g. a dead unit)"
    if err_law <= th.law_holds and (not observed or breaking <= th.breaking_roundoff):
        if th.compute_dtype and (err_law > th.exact_identity or (observed and breaking > th.exact_identity)):
            return Verdict("approximate", f"{th.compute_dtype} autocast round-off")  # above the storage dtype's
        return Verdict("holds", untested)
    if size_max <= th.degenerate_ratio * breaking_drift:
        return Verdict("degenerate", "round-off quantity")
    if eps > 0 and observed:
        # above round-off the breaking is the normalizer's; below it, ε and round-off cannot be told apart
        return Verdict("approximate", eps_cause if breaking > th.breaking_roundoff else
                       f"{eps_cause} or {th.dtype} round-off (not separable at this precision)")
    return Verdict("approximate", untested or f"{th.dtype} round-off accumulated by the law")
