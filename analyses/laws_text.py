"""Render the engine's laws for ``nmech laws``: text, LaTeX or JSON.

Everything printed is derived by the symbolic engine for the optimizer's *structure* (momentum or
not, Nesterov, coupled/decoupled decay); the numeric hyper-parameters are shown alongside, and the
oscillator's γ, ω² and damping regime are evaluated at them.
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping, Sequence

from symmetry_engine.numeric.predict import OptimizerConfig
from symmetry_engine.symbolic import derive_laws
from symmetry_engine.symbolic.modified import H_STEP
from symmetry_engine.symbolic.optimizers import BETA, DAMP, LAM

FORMATS = ("text", "latex", "json")
_TITLES = {
    "generator": "generator", "gradient_constraint": "gradient constraint",
    "hessian_constraint": "Hessian constraint", "theorem1": "Theorem 1 condition",
    "conserved_quantity": "conserved quantity (gradient flow)", "exact_law": "exact discrete law",
    "exact_first_step": "first step (undampened buffer fill)", "optimizer": "update",
    "modified_flow": "modified flow", "modified_loss": "modified loss", "time": "time",
    "continuous_ode": "continuous dynamics", "continuous_solution": "solution", "gamma": "damping",
    "omega2": "frequency", "kernels": "kernels", "required_statistics": "statistics to record",
}


def _numbers(kind: str, opt: OptimizerConfig) -> dict[str, object]:
    """γ, ω² and the damping regime at the configured hyper-parameters (momentum runs)."""
    law = derive_laws(kind, opt.rule_spec()).continuous
    if not law.closed or law.order != 2:
        return {}
    h = opt.lr * (1 - opt.dampening)
    vals = {H_STEP: h, LAM: opt.weight_decay, BETA: opt.momentum, DAMP: opt.dampening}
    gamma, omega2 = float(law.gamma.subs(vals)), float(law.omega2.subs(vals))
    regime = ("critical" if math.isclose(gamma**2, omega2, rel_tol=1e-12)
              else "under-damped" if gamma**2 < omega2 else "over-damped")
    return {"gamma": gamma, "omega2": omega2, "regime": regime}


def _config_line(opt: OptimizerConfig) -> str:
    spec = opt.rule_spec()
    return (f"{spec.describe()}: lr={opt.lr:g}, momentum={opt.momentum:g}, dampening={opt.dampening:g}, "
            f"nesterov={opt.nesterov}, weight_decay={opt.weight_decay:g}, "
            f"decoupled_weight_decay={opt.decoupled_weight_decay}")


def render_laws(kinds: list[str], opt: OptimizerConfig, fmt: str = "text", matrix: Any = None,
                shapes: Mapping[str, Sequence[int]] | None = None) -> str:
    """Each kind's generator, constraints, conserved quantity, exact law, continuous law, statistics.

    ``matrix``: the model's matrix symmetries (GLSymmetry or JSON, member or pair form) for the matrix
    section (``analyses/matrix_laws_text.py``); ``[]`` prints the section for a generic Linear pair;
    None (the default) leaves it out.  ``shapes`` (parameter shapes) gives the per-symmetry law counts.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    spec = opt.rule_spec()
    laws = {k: derive_laws(k, spec) for k in kinds}
    msec = None
    if matrix is not None:
        from analyses import matrix_laws_text
        from symmetry_engine.matrix_symmetry import GLSymmetry

        syms = [m if isinstance(m, GLSymmetry) else GLSymmetry.from_json(m) for m in matrix]
        msec = matrix_laws_text.matrix_sections(syms, opt, shapes)
    if fmt == "json":
        out = {"optimizer": opt.to_json(), "rule": spec.describe(), "laws": {}}
        for k, L in laws.items():
            out["laws"][k] = {"latex": L.latex(), "text": L.text(),
                              "required_statistics": list(L.required_statistics),
                              "exact_law_closed": L.exact is not None,
                              "continuous_law_closed": L.continuous.closed, "at_config": _numbers(k, opt)}
        if msec is not None:
            out["matrix"] = msec
        return json.dumps(out, indent=2, ensure_ascii=False)
    if fmt == "latex":
        parts = [r"\section*{Laws: " + _config_line(opt).replace("_", r"\_") + "}"]
        for k, L in laws.items():
            parts.append(rf"\subsection*{{{k}}}")
            for key, tex in L.latex().items():
                body = tex if key != "required_statistics" else r"\text{" + tex.replace("_", r"\_") + "}"
                parts.append(rf"\paragraph{{{_TITLES.get(key, key)}}} $\displaystyle {body}$")
            num = _numbers(k, opt)
            if num:
                parts.append(rf"\paragraph{{at this configuration}} $\gamma = {num['gamma']:.6g},\ "
                             rf"\omega^2 = {num['omega2']:.6g}$ ({num['regime']})")
        if msec is not None:
            from analyses.matrix_laws_text import render_latex

            parts += render_latex(msec)
        return "\n".join(parts) + "\n"
    lines = [f"Laws for {_config_line(opt)}", ""]
    for k, L in laws.items():
        lines.append(f"== {k} ==")
        for key, txt in L.text().items():
            lines.append(f"  {key:>22}: {txt}")
        lines.append(f"  {'required statistics':>22}: {', '.join(L.required_statistics)}")
        num = _numbers(k, opt)
        if num:
            lines.append(f"  {'at this configuration':>22}: gamma = {num['gamma']:.6g}, "
                         f"omega^2 = {num['omega2']:.6g} ({num['regime']})")
        lines.append("")
    if msec is not None:
        from analyses.matrix_laws_text import render_text

        lines += render_text(msec)
    return "\n".join(lines)


def _main() -> None:  # pragma: no cover - timing helper: python -m analyses.laws_text
    import time
    t0 = time.perf_counter()
    text = render_laws(["translation", "scale", "rescale"],
                       OptimizerConfig(lr=0.1, momentum=0.9, weight_decay=5e-4), "text")
    print(text)
    print(f"derive + render: {time.perf_counter() - t0:.3f} s")


if __name__ == "__main__":  # pragma: no cover
    _main()
