"""The analyzer against architectures whose symmetries are known by construction (model_zoo.random_arch).

The generator derives its `expected` symmetries while it builds the model, independently of the graph
passes; equality is checked on `canonical_form`, so labels and member splitting do not matter.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model_zoo.random_arch import ALL_ACTIVATIONS, ALL_NORMS, random_architecture
from symmetry_engine import canonical_form
from symmetry_engine.graph.analysis import analyze


def _diff(arch, certify: bool = False):
    result = analyze(arch.model, arch.example_inputs(4), loss=arch.loss, certify_symmetries=certify, batch_size=8)
    shapes = result.param_shapes
    got = {canonical_form(s, shapes) for s in result.symmetries}
    want = {canonical_form(s, shapes) for s in arch.expected}
    return got, want, result


def test_declared_symmetries_equal_found_on_200_models() -> None:
    mismatches = []
    kinds_seen = {"translation": 0, "scale": 0, "rescale": 0}
    for seed in range(200):
        arch = random_architecture(seed)
        got, want, result = _diff(arch)
        if got != want:
            mismatches.append((seed, arch.blocks, len(want - got), len(got - want)))
        for k, n in result.counts.items():
            kinds_seen[k] += n
    assert mismatches == []
    assert all(n > 0 for n in kinds_seen.values())   # the sample exercises every family


def test_found_symmetries_certify_on_a_sample() -> None:
    for seed in range(0, 200, 10):
        arch = random_architecture(seed)
        _, _, result = _diff(arch, certify=True)
        assert result.all_certified, [c.key for c in result.certificates if not c.certified]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), family=st.sampled_from(["mlp", "cnn"]),
       acts=st.lists(st.sampled_from(ALL_ACTIVATIONS), min_size=1, max_size=3, unique=True),
       norms=st.lists(st.sampled_from(ALL_NORMS), max_size=2, unique=True),
       residual=st.booleans(), concat=st.booleans(), loss=st.sampled_from(["cross_entropy", "mse"]))
def test_restricted_menus_agree(seed, family, acts, norms, residual, concat, loss) -> None:
    arch = random_architecture(seed, family=family, activations=acts, norms=norms, residual=residual,
                               concat=concat, losses=(loss,))
    got, want, _ = _diff(arch)
    assert got == want
