"""The random-architecture generator: its `expected` symmetries hold exactly, and only where they should."""

from __future__ import annotations

import random

import torch

from model_zoo.graphnet import Builder
from model_zoo.random_arch import ALL_ACTIVATIONS, ALL_NORMS, RandomArch, random_architecture, verify_expected
from symmetry_engine.symmetry import Symmetry, apply_action, canonical_form


def _shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_expected_symmetries_hold_on_many_seeds() -> None:
    kinds = {"translation": 0, "scale": 0, "rescale": 0}
    blocks = set()
    worst = 0.0
    for seed in range(300):
        arch = random_architecture(seed)
        errs = verify_expected(arch)
        worst = max([worst] + errs)
        for s in arch.expected:
            kinds[s.kind] += 1
        blocks.update(b.rstrip("0123456789") for b in arch.blocks)
    assert worst < 1e-9, worst
    assert min(kinds.values()) > 50, kinds
    assert {"dense", "residual-identity", "residual-projection", "concat", "flatten"} <= blocks


def test_restricted_menus_hold_and_are_respected() -> None:
    r = random.Random(1)
    for _ in range(60):
        acts = r.sample(ALL_ACTIVATIONS, r.randint(1, 2))
        norms = r.sample(ALL_NORMS, r.randint(0, 2))
        fam = r.choice(["mlp", "cnn"])
        arch = random_architecture(r.randrange(2**31), family=fam, activations=acts, norms=norms,
                                   residual=r.random() < 0.5, concat=r.random() < 0.5, losses=("mse",))
        assert arch.family == fam and arch.loss == "mse"
        names = {type(m).__name__ for m in arch.model.modules()}
        assert not names & {"LayerNorm", "GroupNorm", "InstanceNorm2d", "BatchNorm1d", "BatchNorm2d"} - {
            {"ln": "LayerNorm", "gn": "GroupNorm", "in": "InstanceNorm2d"}.get(n, "") for n in norms} - (
            {"BatchNorm1d", "BatchNorm2d"} if "bn" in norms else set())
        assert max(verify_expected(arch) or [0.0]) < 1e-9


def _perturbed(sym: Symmetry) -> Symmetry:
    """Drop the −1 members of a rescale (or the +1 members' bias) — no longer a symmetry."""
    keep = tuple(m for m in sym.members if m.sign == 1)
    return Symmetry("scale", keep, sym.layer, sym.channel)


def test_broken_versions_change_the_loss() -> None:
    """The numerical check can fail: a rescale without its consumers is not a symmetry."""
    broken = 0
    for seed in range(40):
        arch = random_architecture(seed)
        rescales = [s for s in arch.expected if s.kind == "rescale"]
        if not rescales:
            continue
        fake = RandomArch(arch.model, arch.input_shape, arch.loss, arch.num_outputs,
                          [_perturbed(s) for s in rescales], arch.family)
        errs = verify_expected(fake)
        broken += sum(e > 1e-6 for e in errs)
        assert max(errs) > 1e-6
    assert broken > 20


def test_deterministic_per_seed() -> None:
    a, b = random_architecture(7), random_architecture(7)
    assert a.blocks == b.blocks and a.expected == b.expected
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    rng = random.Random(3)
    assert random_architecture(rng).blocks == random_architecture(random.Random(3)).blocks


def _forms(b: Builder, syms):
    return {canonical_form(s, _shapes(b.net)) for s in syms}


def test_mlp_relu_ce_exact_list() -> None:
    torch.manual_seed(0)
    b = Builder((3,))
    h = b.act(b.linear(b.input, 4), "relu")
    syms = b.head(h, 2, "cross_entropy")
    want = {("rescale", (("fc0.bias", 0, (c,), 1), ("fc0.weight", 0, (c,), 1), ("fc2.weight", 1, (c,), -1)))
            for c in range(4)}
    want |= {("translation", (("fc2.weight", 1, (j,), 1),)) for j in range(4)}
    want.add(("translation", (("fc2.bias", None, (), 1),)))
    assert _forms(b, syms) == want


def test_identity_skip_from_input_kills_symmetry_and_bn_gives_scale() -> None:
    torch.manual_seed(0)
    b = Builder((3,))
    h = b.act(b.linear(b.input, 5), "relu")
    f = b.norm(b.linear(h, 3, bias=False), "bn")  # f's channels are joined to the network input
    y = b.act(b.add(f, b.input), "relu")
    syms = b.head(y, 2, "mse")
    kinds = sorted(s.kind for s in syms)
    # fc0 rows rescale against fc2 columns (5); fc2 rows are scaled by BN (3); bn/γβ joined with the
    # input: nothing; MSE head: no translation; fc2 has no bias: no bias translation
    assert kinds == ["rescale"] * 5 + ["scale"] * 3
    arch = RandomArch(b.net, (3,), "mse", 2, syms, "mlp")
    assert max(verify_expected(arch)) < 1e-9


def test_conv_flatten_block_and_norm_translations() -> None:
    torch.manual_seed(0)
    b = Builder((2, 4, 4))
    c = b.act(b.norm(b.pool(b.conv(b.input, 3), "max"), "gn", num_groups=1), "relu")  # conv → pool → GN
    y = b.flatten(c)  # 3 channels × 2·2 positions
    syms = b.head(y, 2, "cross_entropy")
    shapes = _shapes(b.net)
    by_kind = {}
    for s in syms:
        by_kind.setdefault(s.kind, []).append(canonical_form(s, shapes))
    assert ("scale", (("conv0.bias", None, (), 1), ("conv0.weight", None, (), 1))) in by_kind["scale"]
    assert ("translation", (("conv0.bias", None, (), 1),)) in by_kind["translation"]
    blocks = [dict((m[0], m) for m in f[1])["fc5.weight"][2] for f in by_kind["rescale"]]
    assert sorted(blocks) == [(0, 1, 2, 3), (4, 5, 6, 7), (8, 9, 10, 11)]
    arch = RandomArch(b.net, (2, 4, 4), "cross_entropy", 2, syms, "cnn")
    assert max(verify_expected(arch)) < 1e-9


def test_apply_action_really_moves_parameters() -> None:
    arch = random_architecture(11)
    sd = arch.model.state_dict()
    sym = arch.expected[0]
    moved = apply_action(sd, sym, 1.7)
    m = sym.members[0]
    assert not torch.equal(moved[m.param], sd[m.param])
