"""The matrix section of ``nmech laws``: GL(r) and subgroup symmetries (Linear pairs, attention heads).

Per act signature (the tuple of member acts, e.g. (M, M, M⁻ᵀ, M⁻ᵀ) for a Q/K head with biases) the
symbolic engine derives the family (generator, constraint, conserved matrix; ``matrix_members.py``,
checked against the standard forms before anything is printed) and the exact discrete law for the
optimizer (``matrix_laws.derive_member_laws``).  Then one line per symmetry: its X and Y in the model's
own parameter names, so C = X Xᵀ − Y Yᵀ can be read off, and its number of independent laws (the
generic rank: ``gl_law_count`` for GL(r), the Jacobian rank for a subgroup).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from symmetry_engine.matrix_symmetry import GLMember, GLSymmetry, gl_law_count
from symmetry_engine.numeric.predict import OptimizerConfig

_TITLES = {"action": "action", "generator": "generator", "gradient_constraint": "gradient constraint",
           "conserved_quantity": "conserved quantity (gradient flow)", "identity": "identity",
           "law": "exact discrete law", "U_first": "first step (undampened buffer fill)", "U": "exact discrete law (U)",
           "required_statistics": "statistics to record", "state": "state"}


def _range(idx: Sequence[int]) -> str:
    if len(idx) > 1 and list(idx) == list(range(idx[0], idx[-1] + 1)):
        return f"{idx[0]}:{idx[-1] + 1}"
    return ",".join(map(str, idx))


def member_text(m: GLMember, shape: Sequence[int] | None) -> str:
    """The member's [r, rest] view in indexing notation: W[0:4], b[0:4], W[:, 4:8]ᵀ."""
    ndim = len(shape) if shape is not None else max(m.axis + 1, 1)
    sel = [":"] * ndim
    sel[m.axis] = _range(m.indices)
    body = f"{m.param}[{', '.join(sel[: max(m.axis + 1, 1)])}]"
    return body + ("ᵀ" if m.axis > 0 and ndim == 2 else "" if m.axis == 0 else f" (axis {m.axis} first)")


def _laws_count(sym: GLSymmetry, shapes: Mapping[str, Sequence[int]] | None) -> int | None:
    if shapes is None or any(m.param not in shapes for m in sym.members):
        return None
    rest = sym.rest_sizes(shapes)
    m = sum(n for n, mem in zip(rest, sym.members) if mem.act == "M")
    if sym.basis is None:
        return gl_law_count(sym.r, m, sum(rest) - m)
    from symmetry_engine.numeric.law_count import law_count

    return law_count([], [sym], {k: shapes[k] for k in {mm.param for mm in sym.members}})


def _derive(acts: tuple[str, ...], spec) -> tuple[Any, Any]:
    from symmetry_engine.symbolic.matrix_laws import derive_member_laws
    from symmetry_engine.symbolic.matrix_members import derive_member_family

    fam = derive_member_family(acts, (1,) * len(acts), 2)
    if not (fam.constraint_is_standard and fam.quantity_is_standard and all(fam.theorem1_holds)):
        raise RuntimeError(f"matrix family for acts {acts} did not derive the standard constraint/quantity")
    return fam, (derive_member_laws(spec, acts) if spec.closed and not spec.nesterov else None)


def _plain(text: str) -> str:
    from symmetry_engine.symbolic.laws import _plain as plain

    return plain(text).replace(".T", "ᵀ").replace("Gamma", "Γ").replace("(1)*", "")


def matrix_sections(symmetries: Sequence[GLSymmetry], opt: OptimizerConfig,
                    shapes: Mapping[str, Sequence[int]] | None = None) -> dict[str, Any]:
    """Everything the three formats print: per signature the derived statements, per symmetry its row."""
    spec = opt.rule_spec()
    derived: list[dict[str, Any]] = []   # one entry per distinct derivation; act signatures that agree share it
    for acts in dict.fromkeys([s.acts for s in symmetries] or [("M", "M", "M^-T")]):
        fam, laws = _derive(acts, spec)
        latex = {k: v for k, v in fam.latex().items() if k != "law_count"}
        text = {k: v for k, v in fam.text().items() if k != "law_count"}
        if laws is None:
            text["law"] = latex["law"] = f"no matrix law for {spec.describe()} (plain SGD and heavy ball only)"
        else:
            latex.update(laws.latex())
            text.update({k: _plain(v) for k, v in laws.text().items()})
        same = next((d for d in derived if d["text"] == text and d["latex"] == latex), None)
        if same is None:
            derived.append({"acts": [list(acts)], "latex": latex, "text": text})
        else:
            same["acts"].append(list(acts))
    rows = []
    for i, s in enumerate(symmetries):
        X = [member_text(m, (shapes or {}).get(m.param)) for m in s.members if m.act == "M"]
        Y = [member_text(m, (shapes or {}).get(m.param)) for m in s.members if m.act == "M^-T"]
        rows.append({"index": i, "key": s.key, "layer": s.layer, "note": s.note, "r": s.r, "acts": list(s.acts),
                     "subgroup": s.basis is not None, "X": X, "Y": Y,
                     "conserved_functions": int(len(s.conserved_directions())), "laws": _laws_count(s, shapes)})
    return {"signatures": derived, "symmetries": rows}


def _row_text(row: Mapping[str, Any]) -> str:
    c = f"X = [{' | '.join(row['X'])}]" + (f", Y = [{' | '.join(row['Y'])}]" if row["Y"] else "")
    kind = "subgroup" if row["subgroup"] else f"GL({row['r']})"
    laws = "?" if row["laws"] is None else row["laws"]
    return f"{row['layer'] or '-'} — {row['note']} ({kind}): {c}; {laws} independent laws"


def render_text(sec: Mapping[str, Any]) -> list[str]:
    lines = ["== gl (matrix symmetries: C = X Xᵀ − Y Yᵀ, X the act-M views, Y the act-M⁻ᵀ views) =="]
    for sig in sec["signatures"]:
        lines.append("  derived for members acting by " + "; ".join(f"({', '.join(a)})" for a in sig["acts"]))
        for key, txt in sig["text"].items():
            lines.append(f"  {key:>22}: {txt}")
    if sec["symmetries"]:
        lines.append(f"  {len(sec['symmetries'])} matrix symmetries:")
        lines += [f"    {_row_text(r)}" for r in sec["symmetries"]]
    return lines + [""]


def render_latex(sec: Mapping[str, Any]) -> list[str]:
    esc = lambda t: str(t).replace("_", r"\_").replace("#", r"\#")  # noqa: E731
    parts = [r"\subsection*{gl (matrix symmetries)}"]
    for sig in sec["signatures"]:
        acts = "; ".join("(" + ", ".join("$M$" if a == "M" else r"$M^{-\top}$" for a in acts) + ")" for acts in sig["acts"])
        parts.append(r"\paragraph{derived for members acting by} " + acts)
        for key, tex in sig["latex"].items():
            body = tex if key not in ("required_statistics",) and not tex.startswith("no matrix law") \
                else r"\text{" + esc(tex) + "}"
            parts.append(rf"\paragraph{{{_TITLES.get(key, key)}}} $\displaystyle {body}$")
    if sec["symmetries"]:
        parts.append(r"\begin{itemize}")
        parts += [r"\item " + esc(_row_text(r)).replace("ᵀ", r"$^\top$").replace("−", "-") for r in sec["symmetries"]]
        parts.append(r"\end{itemize}")
    return parts
