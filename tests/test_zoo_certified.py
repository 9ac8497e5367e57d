"""Every zoo model (and a torchvision model) analyzes with all reported symmetries certified; VGG counts
equal what the layer structure implies (issue acceptance: zoo + analyzer)."""

from __future__ import annotations

import pytest
import torch

from model_zoo import build_model
from symmetry_engine.graph.analysis import analyze

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


@pytest.mark.heavy
@pytest.mark.parametrize("spec", ["vgg16", "vgg16_bn"])
def test_cli_certifies_every_vgg16_symmetry(spec: str) -> None:
    """`nmech analyze vgg16[_bn] --certify` (full width with NMECH_HEAVY_WIDTH=1; CI runs width 0.25)."""
    import json
    import os
    import subprocess
    import sys

    width = os.environ.get("NMECH_HEAVY_WIDTH", "0.25")
    out = subprocess.run([sys.executable, "-m", "analyses.cli", "analyze", spec, "--width", width, "--certify",
                          "--json", "--compact", "--certify-batch", "4"], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    model, _ = build_model(spec, num_classes=10, input_shape=(3, 32, 32), width=float(width))
    assert data["counts"] == expected_counts_sequential(model)
    cert = data["certification"]
    assert cert["all_certified"] and len(cert["results"]) == sum(data["counts"].values())
