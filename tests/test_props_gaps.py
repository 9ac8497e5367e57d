"""One test per construct of the widened generator, on fixed examples: the analyzer finds every declared
symmetry of that construct (exact slices), reports nothing false on it, and does not crash.

Constructs listed in tests/props_gaps.py ``KNOWN_GAPS`` are ``xfail(strict=True)``: when the analyzer is
fixed the test XPASSes, which fails the suite — then delete the entry from ``KNOWN_GAPS``.
"""

from __future__ import annotations

import pytest

from model_zoo.wide_arch import wide_architecture
from symmetry_engine.graph.analysis import analyze

from .props_gaps import KNOWN_GAPS, judge

# construct tag -> (family, block that produces it)
CONSTRUCTS = {
    "": ("seq", "mlp"),
    "concat-last": ("seq", "concat"),
    "attention": ("seq", "attn"),
    "attention-gl": ("seq", "mha"),
    "glu": ("vec", "glu"),
    "glu-relu": ("vec", "glu"),
    "rmsnorm": ("seq", "norm"),
    "norm-gain": ("vec", "norm"),
    "reshape": ("vec", "reshape"),
    "permute": ("seq", "permute"),
    "pool-seq": ("seq", "pool_seq"),
    "depthwise-consumer": ("img", "depthwise"),
    "norm-axis1": ("seq", "adv_norm_axis1"),
    "pool-feature-axis": ("vec", "adv_pool_feature"),
    "pool3d-4d": ("img", "adv_pool3d"),
}
assert set(KNOWN_GAPS) <= set(CONSTRUCTS), set(KNOWN_GAPS) - set(CONSTRUCTS)


def examples_with(tag: str, n: int = 4):
    family, block = CONSTRUCTS[tag]
    out = []
    for seed in range(200):
        arch = wide_architecture(seed, family=family, blocks=(block,), depth=(1, 1), widths=(1, 3))
        if tag in arch.constructs or (tag == "" and "" in arch.tags):
            out.append(arch)
            if len(out) == n:
                return out
    raise AssertionError(f"no example of construct {tag!r} in 200 seeds")


def _param(tag: str):
    marks = [pytest.mark.xfail(strict=True, reason=f"issue 8: {KNOWN_GAPS[tag].reason}")] if tag in KNOWN_GAPS else []
    return pytest.param(tag, marks=marks, id=tag or "conventional")


@pytest.mark.parametrize("tag", [_param(t) for t in CONSTRUCTS])
def test_construct_is_handled(tag: str) -> None:
    strict = {k: v for k, v in KNOWN_GAPS.items() if k != tag}
    for arch in examples_with(tag):
        verdict, _ = judge(arch, analyze, gaps=strict)
        assert not verdict.problems, (arch.seed, arch.blocks, verdict.problems[:4])
