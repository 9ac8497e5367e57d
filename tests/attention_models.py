"""Zero-argument factories of small attention models for CLI tests (``tests.attention_models:gqa``)."""

from __future__ import annotations

import torch
from torch import nn

from tests.test_attention_matrix import MHA, Heads


def mha() -> nn.Module:
    torch.manual_seed(0)
    return MHA(bias=True)


def gqa() -> nn.Module:
    torch.manual_seed(0)
    return Heads(H=4, Hkv=2)


def gqa_rotary() -> nn.Module:
    torch.manual_seed(0)
    return Heads(H=4, Hkv=2, rope="half", explicit=True)
