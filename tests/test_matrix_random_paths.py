"""Random paths between a producer Linear and a consumer Linear (and random attention wiring): every
matrix symmetry the analyzer reports must certify (no false symmetry), and paths made only of
transparent ops must give at least one group (the pass is not vacuous)."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from symmetry_engine.graph import capture
from symmetry_engine.graph.matrix import matrix_pass
from symmetry_engine.graph.matrix_certify import certify_matrix

B, S, F_ = 2, 4, 6

# (name, transparent?, function of (h, x)) with h [B, S, F_] and x the input [B, S, F_]
OPS = [
    ("scale", True, lambda h, x: h * -1.5),
    ("neg", True, lambda h, x: -h),
    ("clone", True, lambda h, x: h.clone()),
    ("transpose_back", True, lambda h, x: h.transpose(0, 1).contiguous().transpose(0, 1)),
    ("split_heads_merge", True, lambda h, x: h.view(len(h), S, 2, F_ // 2).transpose(1, 2).transpose(1, 2).reshape(len(h), S, F_)),
    ("expand_positions", True, lambda h, x: h.unsqueeze(1).expand(len(h), 2, S, F_).reshape(len(h), 2 * S, F_)[:, :S]),
    ("permute_back", True, lambda h, x: h.permute(2, 0, 1).permute(1, 2, 0)),
    ("cat_positions", True, lambda h, x: torch.cat([h, x], 1)[:, :S]),
    ("div", True, lambda h, x: h / 3.0),
    ("relu", False, lambda h, x: torch.relu(h)),
    ("shift", False, lambda h, x: h + 0.5),
    ("add_input", False, lambda h, x: h + x),
    ("mul_input", False, lambda h, x: h * x),
    ("square", False, lambda h, x: h * h),
    ("softmax_features", False, lambda h, x: torch.softmax(h, -1)),
    ("flip_features", False, lambda h, x: h.flip(-1)),
    ("cumsum_features", False, lambda h, x: h.cumsum(-1)),
    ("roll_features", False, lambda h, x: h.roll(1, -1)),
    ("dropout", False, lambda h, x: F.dropout(h, 0.5, training=True)),
    ("mix_positions_features", False, lambda h, x: h.reshape(len(h), F_, S).transpose(1, 2)),
]


class RandomPath(nn.Module):
    def __init__(self, ops: list) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(F_, F_), nn.Linear(F_, 3)
        self.ops = ops

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        for _, _, fn in self.ops:
            h = fn(h, x)
        return self.b(h).mean(1)


def random_ops(seed: int) -> list:
    rng = random.Random(seed)
    pool = OPS if seed % 2 else [o for o in OPS if o[1]]
    return [rng.choice(pool) for _ in range(rng.randint(1, 4))]


@pytest.mark.parametrize("seed", range(24))
def test_reported_groups_certify(seed: int) -> None:
    ops = random_ops(seed)
    torch.manual_seed(seed)
    model = RandomPath(ops)
    x = torch.randn(B, S, F_, generator=torch.Generator().manual_seed(seed))
    syms = matrix_pass(capture(model, x))
    names = [o[0] for o in ops]
    for c in certify_matrix(model, x, syms, seed=seed):
        assert c.certified, (names, c.key, c.loss_rel_joint, c.grad_rel)
    if all(o[1] for o in ops):
        assert any(s.members[0].param == "a.weight" for s in syms), names


class RandomAttention(nn.Module):
    """Random transparent or breaking ops on q, k and v before a hand-written attention."""

    def __init__(self, q_ops: list, k_ops: list, v_ops: list) -> None:
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(F_, F_) for _ in range(4))
        self.ops = (q_ops, k_ops, v_ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q(x), self.k(x), self.v(x)
        outs = []
        for t, ops in zip((q, k, v), self.ops):
            for _, _, fn in ops:
                t = fn(t, x)
            outs.append(t.view(len(t), S, 2, F_ // 2).transpose(1, 2))
        q, k, v = outs
        a = torch.softmax(q @ k.transpose(-1, -2), -1) @ v
        return self.o(a.transpose(1, 2).reshape(len(x), S, F_)).mean(1)


@pytest.mark.parametrize("seed", range(12))
def test_random_attention_groups_certify(seed: int) -> None:
    rng = random.Random(100 + seed)
    ops = [[rng.choice(OPS) for _ in range(rng.randint(0, 2))] for _ in range(3)]
    torch.manual_seed(seed)
    model = RandomAttention(*ops)
    x = torch.randn(B, S, F_, generator=torch.Generator().manual_seed(seed))
    syms = matrix_pass(capture(model, x))
    for c in certify_matrix(model, x, syms, seed=seed):
        assert c.certified, ([[o[0] for o in p] for p in ops], c.key, c.loss_rel_joint, c.grad_rel)
    clean = [all(o[1] for o in p) for p in ops]
    notes = {s.note.split(": ")[1] for s in syms}
    if clean[0] and clean[1]:
        assert "query/key logits" in notes, [[o[0] for o in p] for p in ops]
    if clean[2]:
        assert "value/output" in notes, [[o[0] for o in p] for p in ops]
