"""The analyzer's known gaps on the widened generator's constructs, and the one judge every property uses.

``KNOWN_GAPS`` is the only place a construct is excused. A tag listed here (model_zoo/wide_arch.py tags
every declared symmetry and the parameters of every adversarial construct) excuses exactly: declared
symmetries with that tag that the analyzer does not report, reported symmetries that fail the numerical
check *and* touch the tag's risky parameters, and — where ``crash`` is set — an exception from
``analyze``. ``tests/test_props_gaps.py`` turns every entry into a ``pytest.mark.xfail(strict=True)``
test on fixed examples, so when the analyzer is fixed that test XPASSes and fails loudly: then delete
the entry here (one line), which also makes the random-architecture properties strict for it.

Measured on main 1793411 with ``wide_architecture`` seeds 0..149; see docs/testing.md for what closed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from model_zoo.random_arch import RandomArch
from model_zoo.wide_arch import WideArch
from symmetry_engine import canonical_form

from .props_checks import GRAD_TOL, LOSS_TOL, Problem, as_gl, diag_errors, gl_errors, gl_form


@dataclass(frozen=True)
class Gap:
    reason: str
    crash: bool = False


# Eleven of the twelve gaps measured on main 1793411 closed with the analyzer's axis flow and attention
# families (issue 8). What is left:
KNOWN_GAPS: dict[str, Gap] = {
    "glu-relu": Gap("a ReLU-gated GLU has two rescale directions per channel (value ↔ down, gate ↔ down); the "
                    "signed union-find expresses one generator per class and reports only value ↔ gate"),
}


@dataclass
class Verdict:
    """What one architecture shows; ``problems`` are the findings no known gap excuses."""

    problems: list[str] = field(default_factory=list)
    excused: dict[str, int] = field(default_factory=dict)
    found: int = 0
    checked: int = 0

    def excuse(self, tag: str) -> None:
        self.excused[tag] = self.excused.get(tag, 0) + 1


def _tags(arch: RandomArch) -> tuple[list[str], list[str], dict[str, set[str]]]:
    if isinstance(arch, WideArch):
        return arch.tags, arch.gl_tags, arch.risky
    return [""] * len(arch.expected), [], {}


def judge(arch: RandomArch, analyze_fn: Any, gaps: dict[str, Gap] = KNOWN_GAPS, soundness: bool = True,
          seed: int = 0) -> tuple[Verdict, Any]:
    """Run the analyzer on ``arch``; check completeness (declared ⊆ found, exact slices; equality for the
    conventional generator) and soundness (every found symmetry, diagonal and matrix, leaves the float64
    loss unchanged and satisfies ⟨g, ξ⟩ = 0). Returns the verdict and the analysis (None on a crash)."""
    v = Verdict()
    tags, gl_tags, risky = _tags(arch)
    try:
        result = analyze_fn(arch.model, arch.example_inputs(4), loss=arch.loss)
    except Exception as exc:  # noqa: BLE001 - a crash is a finding like any other
        crashing = [t for t in arch.constructs if t in gaps and gaps[t].crash] if isinstance(arch, WideArch) else []
        if crashing:
            v.excuse(crashing[0])
        else:
            v.problems.append(f"analyze crashed: {exc!r}"[:300])
        return v, None
    shapes = result.param_shapes
    found = {canonical_form(s, shapes) for s in result.symmetries}
    v.found = len(found) + len(result.matrix_symmetries)
    declared = {}
    for s, t in zip(arch.expected, tags):
        declared.setdefault(canonical_form(s, shapes), t)
    for form, t in declared.items():
        if form not in found:
            if t in gaps:
                v.excuse(t)
            else:
                v.problems.append(f"missing [{t or 'conventional'}] {form}")
    if not isinstance(arch, WideArch):  # the conventional generator's list is complete: nothing extra
        for form in found - set(declared):
            v.problems.append(f"not declared by the conventional generator: {form}")
    found_gl = {gl_form(as_gl(m)) for m in result.matrix_symmetries}
    for g, t in zip(getattr(arch, "expected_gl", []), gl_tags):
        if gl_form(g) not in found_gl:
            if t in gaps:
                v.excuse(t)
            else:
                v.problems.append(f"missing matrix [{t or 'conventional'}] {gl_form(g)}")
    if not soundness:
        return v, result
    pb = Problem(arch, seed=seed)
    grads = pb.grad()
    rng = random.Random(seed)
    for s in result.symmetries:
        loss_rel, grad_rel = diag_errors(pb, s, rng, grads)
        v.checked += 1
        if loss_rel > LOSS_TOL or grad_rel > GRAD_TOL:
            culprits = [t for t, ps in risky.items() if t in gaps and set(s.params) & ps]
            if culprits:
                v.excuse(culprits[0])
            else:
                v.problems.append(f"false {s.key}: loss {loss_rel:.1e}, grad {grad_rel:.1e}")
    for i, m in enumerate(result.matrix_symmetries):
        g = as_gl(m)
        loss_rel, grad_rel = gl_errors(pb, g, seed + i)
        v.checked += 1
        if loss_rel > LOSS_TOL or grad_rel > GRAD_TOL:
            params = {mm.param for mm in g.members}
            culprits = [t for t, ps in risky.items() if t in gaps and params & ps]
            if culprits:
                v.excuse(culprits[0])
            else:
                v.problems.append(f"false {g.key}: loss {loss_rel:.1e}, grad {grad_rel:.1e}")
    return v, result
