"""Verdict rules on hand-picked numbers: every branch, and the thresholds' dependence on the dtype."""

from __future__ import annotations

import pytest

from symmetry_engine.numeric.verdicts import Thresholds, judge

T64, T32 = Thresholds.for_dtype("float64"), Thresholds.for_dtype("float32")


def test_thresholds_follow_the_dtype():
    assert T64.unit_roundoff == pytest.approx(2.220446e-16) and T32.unit_roundoff == pytest.approx(1.1920929e-7)
    assert T64.law_holds == 1e3 * T64.unit_roundoff and T32.breaking_roundoff == 1e3 * T32.unit_roundoff
    assert T64.allowed_breaking(1e-5) == pytest.approx(1e-2) and T64.allowed_breaking(0) == T64.breaking_roundoff
    assert "float32 thresholds" in Thresholds.for_dtype("bfloat16").dtype


@pytest.mark.parametrize("kw,verdict,cause", [
    (dict(err_law=1e-15, breaking=1e-16, eps=0.0), "holds", None),
    (dict(err_law=1e-15, breaking=1e-3, eps=0.0), "broken", "breaking above the round-off bound"),
    (dict(err_law=1e-6, breaking=1e-3, eps=1e-5), "approximate", "normalizer ε = 1e-05"),
    (dict(err_law=1e-6, breaking=0.5, eps=1e-5), "broken", "breaking above 1e3·ε (normalizer ε = 1e-05)"),
    (dict(err_law=0.9, breaking=1e-16, eps=0.0, size_max=1e-12, breaking_drift=1e-12), "degenerate", "round-off quantity"),
    (dict(err_law=1e-9, breaking=1e-16, eps=0.0), "approximate", "float64 round-off accumulated by the law"),
    (dict(err_law=1e-15, breaking=None, eps=0.0), "holds", "symmetry not tested: members without a computed gradient"),
    (dict(err_law=0.0, breaking=0.0, eps=0.0, exercised=False), "holds", "not exercised"),
    (dict(err_law=float("inf"), breaking=1e-16, eps=0.0, closed_law=False), "holds", "no closed law"),
    (dict(err_law=float("inf"), breaking=1e-2, eps=0.0, closed_law=False), "broken", "round-off bound"),
])
def test_each_branch(kw, verdict, cause):
    args = dict(size_max=1.0, breaking_drift=0.0)
    args.update(kw)
    v = judge(T64, **args)
    assert v.verdict == verdict
    assert (v.cause is None) if cause is None else (cause in v.cause)


def test_float32_cannot_separate_epsilon_from_roundoff():
    v = judge(T32, err_law=5e-4, breaking=1e-5, eps=1e-5, size_max=1.0, breaking_drift=1e-6)
    assert v.verdict == "approximate" and "not separable" in v.cause
