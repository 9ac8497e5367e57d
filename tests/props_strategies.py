"""Hypothesis strategies over both random-architecture generators, as printable *specs*.

A spec is a plain tuple (so a failing example prints as something one can paste into ``@example``):
``("conv", seed, family, activations, norms, residual, concat, min_width)`` for
``random_arch.random_architecture`` (the conventional menu, exact expected list) and
``("wide", seed, family, blocks, depth, max_width)`` for ``wide_arch.wide_architecture`` (features on the
last axis, norms, attention, GLU, round trips, depthwise, adversarial constructs; declared subset).

Profiles (tests/conftest.py): ``ci`` (derandomized, loaded when CI is set), the default, and
``thorough`` (``HYPOTHESIS_PROFILE=thorough``): ``examples(n)`` scales every property's count by 10.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from model_zoo.random_arch import ALL_ACTIVATIONS, ALL_NORMS, RandomArch, random_architecture
from model_zoo.wide_arch import IMG_BLOCKS, SEQ_BLOCKS, VEC_BLOCKS, wide_architecture

Spec = tuple
MENUS = {"seq": SEQ_BLOCKS, "vec": VEC_BLOCKS, "img": IMG_BLOCKS}


def thorough() -> bool:
    return os.environ.get("HYPOTHESIS_PROFILE") == "thorough"


def examples(n: int) -> int:
    """Examples per property: n in the CI/default profiles, 10 n in the thorough one."""
    return n * 10 if thorough() else n


def prop_settings(n: int) -> Any:
    return settings(max_examples=examples(n), deadline=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])


@st.composite
def conventional_specs(draw) -> Spec:
    acts = tuple(draw(st.lists(st.sampled_from(ALL_ACTIVATIONS), min_size=1, max_size=3, unique=True)))
    norms = tuple(draw(st.lists(st.sampled_from(ALL_NORMS), max_size=3, unique=True)))
    return ("conv", draw(st.integers(0, 2**31 - 1)), draw(st.sampled_from(("mlp", "cnn"))), acts, norms,
            draw(st.booleans()), draw(st.booleans()), draw(st.integers(1, 2)))


@st.composite
def wide_specs(draw, families: tuple[str, ...] = ("seq", "vec", "img")) -> Spec:
    family = draw(st.sampled_from(families))
    blocks = tuple(draw(st.lists(st.sampled_from(MENUS[family]), min_size=1, max_size=4, unique=True)))
    return ("wide", draw(st.integers(0, 2**31 - 1)), family, blocks, draw(st.integers(1, 3)), draw(st.integers(1, 4)))


def specs(wide_weight: int = 2) -> st.SearchStrategy[Spec]:
    """Both generators; the widened one drawn ``wide_weight`` times as often."""
    return st.one_of(conventional_specs(), *([wide_specs()] * wide_weight))


def build(spec: Spec) -> RandomArch:
    if spec[0] == "conv":
        _, seed, family, acts, norms, residual, concat, wmin = spec
        return random_architecture(seed, family=family, activations=acts, norms=norms, residual=residual,
                                   concat=concat, widths=(wmin, 4))
    _, seed, family, blocks, depth, wmax = spec
    return wide_architecture(seed, family=family, blocks=blocks, depth=(depth, depth), widths=(1, wmax))


def spec_from_json(text: str) -> Spec:
    """A spec that went through JSON (lists back to tuples)."""
    import json

    return tuple(tuple(v) if isinstance(v, list) else v for v in json.loads(text))


def cli_model():
    """Zero-argument factory for ``nmech analyze tests.props_strategies:cli_model`` (spec in $PROPS_SPEC)."""
    return build(spec_from_json(os.environ["PROPS_SPEC"])).model
