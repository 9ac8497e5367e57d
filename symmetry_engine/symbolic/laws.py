"""Law objects: everything the engine derives for one (symmetry family, optimizer rule) pair.

Derivations are cached per structure (family, rule key): numeric hyper-parameters stay symbols,
so one derivation serves every learning rate, momentum and weight decay.  The exact recurrence is
compiled with ``lambdify`` into an affine map x_{n+1} = A_n x_n + C_n u_n + c_n whose coefficients
are evaluated for all steps at once; the steps themselves run in one compiled scan over steps and
groups (numeric/scan.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Mapping

import numpy as np
import sympy as sp

from .algebra import linear_coefficients
from .discrete import Recurrence, at_zero, bookkeeping_identity, derive_recurrence, latex, sym
from .families import FAMILIES, FamilyDerivation, derive_family
from .modified import ContinuousLaw, ModifiedFlow, continuous_law, modified_flow
from .optimizers import BETA, DAMP, ETA, LAM, RuleSpec, adam_update_latex

PARAM_NAMES = ("lambda", "beta", "d")
#: η used for a step with lr = 0: the momentum laws divide the recorded D = η²|v|² (exactly 0 then) by η
#: (heavy ball) or η² (Nesterov); 1e-100 keeps η² and η³ normal, so 0/η² is 0, and every term linear in η
#: is ~1e-100 of the others, far below float64 resolution.
ETA_ZERO = 1e-100


@dataclass(frozen=True)
class LawSet:
    """Generator, constraints, conserved quantity, exact and continuous laws for one pair."""

    kind: str
    spec: RuleSpec
    family: FamilyDerivation
    exact: Recurrence | None
    bookkeeping: dict | None
    flow: ModifiedFlow | None
    continuous: ContinuousLaw

    @property
    def quantity(self) -> str:
        return "N" if self.family.quadratic else "s"

    @property
    def required_statistics(self) -> tuple[str, ...]:
        """Per-step, per-group statistics a tracker must record (η_n is always needed)."""
        if self.exact is None:
            return ("N", "D", "eta")
        return (self.quantity,) + self.exact.inputs + ("eta",)

    def latex(self) -> dict[str, str]:
        """LaTeX strings for reports, keyed by section."""
        fam = self.family
        grad, hess = fam.constraint_latex()
        out = {
            "generator": rf"\xi(\theta) = {fam.generator_latex}",
            "gradient_constraint": grad,
            "hessian_constraint": hess,
            "theorem1": r"\langle \theta, (\partial_\theta \xi) g \rangle = 0"
                        + (r" \text{ (checked)}" if fam.theorem1_holds else r" \text{ (fails)}"),
            "conserved_quantity": fam.quantity_latex,
        }
        if self.exact is None:
            out["exact_law"] = sp.latex(self.bookkeeping["identity"]) + r"\quad \text{(no closed law)}"
            out["optimizer"] = adam_update_latex()
        else:
            rec = self.exact
            lines = [latex(sp.Eq(sym(s, 1), e)) for s, e in rec.step.items()]
            for key in ("identity", "U_first", "U", "law", "buffer_first", "buffer", "law_u",
                        "second_order", "discriminant"):
                if key in rec.closed_forms:
                    lines.append(latex(rec.closed_forms[key]))
            out["exact_law"] = r" \\ ".join(dict.fromkeys(lines))
            out["exact_first_step"] = r" \\ ".join(
                latex(sp.Eq(sp.Symbol(f"{s}_1"), at_zero(e))) for s, e in rec.first.items())
        if self.flow is not None:
            f = self.flow
            par = lambda e: r"\left(" + sp.latex(e) + r"\right)"  # noqa: E731
            out["modified_flow"] = par(f.m) + r"\theta'' + " + par(f.c) + r"\theta' = -g - " \
                + par(f.k) + r"\theta" + ("" if f.nu == 0 else " - " + par(f.nu) + r"H\theta'")
            out["modified_loss"] = r"\tilde L = L + " + sp.latex(f.modified_loss_coeff) + r"\,|\nabla L|^2"
            out["time"] = r"t = h n,\; h = " + (r"\eta (1-d)" if self.spec.momentum else r"\eta")
        c = self.continuous
        if c.closed:
            out["continuous_ode"] = sp.latex(c.ode)
            out["continuous_solution"] = sp.latex(c.solution)
            if c.order == 2:
                out["gamma"] = r"\gamma = " + sp.latex(c.gamma)
                out["omega2"] = r"\omega^2 = " + sp.latex(c.omega2)
                out["kernels"] = r" \\ ".join(
                    rf"\text{{{name}}}: K = {sp.latex(k['K'])},\; G = {sp.latex(k['G'])}"
                    for name, k in c.regimes.items())
        else:
            out["continuous_ode"] = r"\text{not closed: }" + c.reason.replace("_", r"\_")
        out["required_statistics"] = ", ".join(self.required_statistics)
        return out

    def text(self) -> dict[str, str]:
        """Plain-text (sympy ``str``, Greek letters in Unicode) forms of the same sections."""
        return {k: _plain(v) for k, v in self._text().items()}

    def _text(self) -> dict[str, str]:
        fam = self.family
        out = {"generator": f"xi = {fam.generator_latex}", "quantity": fam.quantity_latex,
               "gradient_constraint": fam.constraint_latex()[0], "hessian_constraint": fam.constraint_latex()[1],
               "theorem1": f"<theta, (d xi) g> = {fam.theorem1_condition} using the gradient constraint",
               "conserved": str(fam.conserved)}
        if self.exact is not None:
            out["exact_law"] = "; ".join(f"{sym(s, 1)} = {e}" for s, e in self.exact.step.items())
            out["exact_first_step"] = "; ".join(f"{s}_1 = {at_zero(e)}" for s, e in self.exact.first.items())
            for key, eq in self.exact.closed_forms.items():
                out[f"closed_{key}"] = f"{eq.lhs} = {eq.rhs}"
        else:
            out["exact_law"] = f"{self.bookkeeping['identity'].lhs} = {self.bookkeeping['identity'].rhs}"
            out["breaking_terms"] = "; ".join(f"{k}: {v}" for k, v in self.bookkeeping["breaking_terms"].items())
        if self.flow is not None:
            f = self.flow
            out["modified_flow"] = f"({f.m}) theta'' + ({f.c}) theta' = -g - ({f.k}) theta" + (
                "" if f.nu == 0 else f" - ({f.nu}) H theta'")
            out["modified_loss"] = f"L~ = L + ({f.modified_loss_coeff}) |grad L|^2"
        c = self.continuous
        out["continuous"] = (f"{c.ode.lhs} = {c.ode.rhs}; {c.solution.lhs} = {c.solution.rhs}" if c.closed
                             else f"not closed: {c.reason}")
        if c.closed and c.order == 2:
            out["gamma"], out["omega2"] = str(c.gamma), str(c.omega2)
        return out


@lru_cache(maxsize=None)
def derive_laws(kind: str, spec: RuleSpec) -> LawSet:
    """Derive (once per process) all laws for a symmetry family under an optimizer rule."""
    if kind not in FAMILIES:
        raise ValueError(f"unknown symmetry kind {kind!r}; known: {', '.join(FAMILIES)}")
    fam = derive_family(kind)
    if not spec.closed:
        return LawSet(kind, spec, fam, None, bookkeeping_identity(), None,
                      continuous_law(fam.quadratic, spec))
    return LawSet(kind, spec, fam, derive_recurrence(fam.quadratic, spec), None, modified_flow(spec),
                  continuous_law(fam.quadratic, spec))


@dataclass(frozen=True)
class CompiledRecurrence:
    """The exact law as numeric functions: x_{n+1} = A(η_n) x_n + b(inputs_n, η_n)."""

    states: tuple[str, ...]
    inputs: tuple[str, ...]
    zero_states: tuple[str, ...]
    matrices: tuple[Callable, Callable]   # (first, step): (eta, lambda, beta, d) -> nested list k×k
    offsets: tuple[Callable, Callable]    # (first, step): (*inputs, eta, lambda, beta, d) -> list k

    def coefficients(self, lrs: np.ndarray, params: Mapping[str, float | np.ndarray], first_at: int | None = 0,
                     active: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-step ``A [T, k, k]``, ``C [T, k, m]`` (inputs in ``self.inputs`` order) and ``c [T, k]`` of
        x_{n+1} = A_n x_n + C_n u_n + c_n: the offsets are linear in the recorded statistics, so C is
        read off by evaluating them at unit inputs. Idle steps get A = I, C = 0, c = 0."""
        lrs = np.asarray(lrs, dtype=np.float64)
        T, k, m = lrs.shape[0], len(self.states), len(self.inputs)
        eta = np.where(lrs == 0, ETA_ZERO, lrs)[:, None]
        p = [np.broadcast_to(np.asarray(params[n], dtype=np.float64), (T,))[:, None] for n in PARAM_NAMES]
        A, C, c = np.empty((T, k, k)), np.empty((T, k, m)), np.empty((T, k))
        for which in (1, 0):
            if which == 0 and (first_at is None or not 0 <= first_at < T):
                continue
            rows = slice(None) if which == 1 else slice(first_at, first_at + 1)
            mat = self.matrices[which](eta, *p)
            zero = self.offsets[which](*([0.0] * m), eta, *p)
            for i in range(k):
                c[rows, i] = np.broadcast_to(zero[i], (T, 1))[rows, 0]
                for j in range(k):
                    A[rows, i, j] = np.broadcast_to(mat[i][j], (T, 1))[rows, 0]
            for j in range(m):
                unit = [1.0 if q == j else 0.0 for q in range(m)]
                off = self.offsets[which](*unit, eta, *p)
                for i in range(k):
                    C[rows, i, j] = np.broadcast_to(off[i], (T, 1))[rows, 0] - c[rows, i]
        if active is not None:
            idle = ~np.asarray(active, dtype=bool)[:T]
            A[idle], C[idle], c[idle] = np.eye(k), 0.0, 0.0
        return A, C, c

    def run(self, initial: np.ndarray, inputs: Mapping[str, np.ndarray], lrs: np.ndarray,
            params: Mapping[str, float | np.ndarray], first_at: int | None = 0,
            active: np.ndarray | None = None) -> np.ndarray:
        """Free-running forecast: states [k, G] at step 0 → quantity [T+1, G].

        ``params`` values are scalars or per-step arrays [T] (OneCycle's momentum, a class's weight
        decay). ``first_at`` is the step whose update fills the momentum buffer with PyTorch's undampened
        first step (None: the buffer already existed when the log began). ``active[n]`` False means the
        optimizer did not touch these parameters at step n (no gradient, frozen): every state stays.
        A zero learning rate is exact too: the D/η terms of the momentum laws are 0/0 there, and their
        limit is 0 (D = η²|v|²), which a tiny positive η (``ETA_ZERO``) reproduces because D is recorded as
        exactly 0.
        The steps run in one compiled scan (numeric/scan.py), no Python loop over steps.
        """
        from ..numeric.scan import scan_affine  # numpy (+ optional numba); no torch

        x = np.array(initial, dtype=np.float64)
        T = np.asarray(lrs).shape[0]
        out = np.empty((T + 1, x.shape[1]))
        out[0] = x[0]
        if T == 0:
            return out
        A, C, c = self.coefficients(lrs, params, first_at, active)
        scan_affine(A, C, c, [np.asarray(inputs[name])[:T] for name in self.inputs], x, out=out[1:])
        return out


def _affine_parts(rec: Recurrence, exprs: Mapping[str, sp.Expr]) -> tuple[sp.Matrix, list[sp.Expr]]:
    states = [sym(s) for s in rec.states]
    rows, offs = [], []
    for s in rec.states:
        coeffs, rest = linear_coefficients(exprs[s], states)
        rows.append([coeffs[v] for v in states])
        offs.append(rest)
    return sp.Matrix(rows), offs


@lru_cache(maxsize=None)
def compiled_recurrence(kind: str, spec: RuleSpec) -> CompiledRecurrence:
    """lambdify the exact law of (kind, rule) once per process."""
    laws = derive_laws(kind, spec)
    if laws.exact is None:
        raise ValueError(f"{spec.describe()}: no closed exact law")
    rec = laws.exact
    params = (ETA, LAM, BETA, DAMP)
    ins = [sym(i) for i in rec.inputs]
    mats, offs = [], []
    for exprs in (rec.first, rec.step):
        A, b = _affine_parts(rec, exprs)
        if A.free_symbols - set(params):
            raise ValueError("the law's state matrix depends on statistics; it is not affine")
        mats.append(sp.lambdify(params, A.tolist(), modules="numpy"))
        offs.append(sp.lambdify(ins + list(params), b, modules="numpy"))
    return CompiledRecurrence(rec.states, rec.inputs, rec.zero_states, tuple(mats), tuple(offs))


_PLAIN = [(r"\mathbb{1}", "1"), (r"\langle ", "⟨"), (r"\langle", "⟨"), (r" \rangle", "⟩"), (r"\rangle", "⟩"),
          (r"\partial", "∂"), (r"\theta", "θ"), (r"\xi", "ξ"), (r"\eta", "η"), (r"\lambda", "λ"),
          (r"\beta", "β"), (r"\gamma", "γ"), (r"\omega", "ω"), (r"\tau", "τ"), (r"\nabla", "∇"),
          (r"\left", ""), (r"\right", ""), (r"\,", " "), (r"\;", " "), (r"\quad", "  "), ("{", ""), ("}", "")]
_GREEK = [("lambda", "λ"), ("theta", "θ"), ("omega", "ω"), ("gamma", "γ"), ("beta", "β"), ("eta", "η"), ("xi", "ξ"),
          ("tau", "τ")]


def _plain(text: str) -> str:
    """LaTeX snippets and sympy names → readable Unicode for terminals (``nmech laws`` text format)."""
    import re

    # compound subscripts keep their grouping: N_{n+1} → N[n+1] (not N_n+1); simple ones: θ_{A_1} → θ_A1
    text = re.sub(r"_\{([^{}]*[+\-][^{}]*)\}", r"[\1]", text)
    text = re.sub(r"_\{([^{}]+)\}", lambda m: "_" + m.group(1).replace("_", ""), text)
    for old, new in _PLAIN:
        text = text.replace(old, new)
    for name, letter in _GREEK:
        text = re.sub(rf"(?<![A-Za-z]){name}(?![A-Za-z])", letter, text)
    return text.replace("**", "^")
