"""Every zoo model (and a torchvision model) analyzes with all reported symmetries certified; VGG counts
equal what the layer structure implies (issue acceptance: zoo + analyzer)."""

from __future__ import annotations

import pytest
import torch

from model_zoo import build_model
from symmetry_engine.analyze import analyze

from .test_analyze import expected_counts_sequential
from .test_zoo_models import CASES


@pytest.mark.parametrize("spec,kw,shape", CASES + [("torchvision:resnet18", {}, (3, 32, 32))])
def test_zoo_model_symmetries_are_all_certified(spec, kw, shape) -> None:
    torch.manual_seed(0)
    model, _ = build_model(spec, num_classes=7, input_shape=shape, **kw)
    result = analyze(model, torch.randn(2, *shape), certify_symmetries=True, batch_size=4)
    assert sum(result.counts.values()) > 0 and result.unknown_ops == []
    assert result.all_certified, [c.key for c in result.certificates if not c.certified][:5]


@pytest.mark.parametrize("spec", ["vgg11", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn"])
@pytest.mark.parametrize("size", [32, 64])
def test_zoo_vgg_counts_match_layer_structure(spec: str, size: int) -> None:
    model, _ = build_model(spec, num_classes=10, input_shape=(3, size, size), width=1 / 16)
    assert analyze(model, torch.randn(2, 3, size, size)).counts == expected_counts_sequential(model)
