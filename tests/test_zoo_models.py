"""Every zoo model builds, has the right output shape, and trains a few steps; spec errors are one line."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from model_zoo import SpecError, build_model

TINY = {"width": 1 / 16}
CASES = [
    ("vgg11", TINY, (3, 32, 32)), ("vgg13_bn", TINY, (3, 32, 32)), ("vgg16", TINY, (3, 64, 64)),
    ("vgg16_bn", TINY, (3, 32, 32)), ("vgg19_bn", TINY, (3, 64, 64)), ("resnet18", TINY, (3, 32, 32)),
    ("resnet34", {"width": 1 / 16, "stem": "imagenet"}, (3, 64, 64)), ("mlp", {"widths": [8, 8]}, (20,)),
    ("mlp", {"widths": "6,5", "activation": "tanh"}, (3, 8, 8)), ("convnet", {"width": 0.25, "batch_norm": True}, (3, 16, 16)),
]


@pytest.mark.parametrize("spec,kw,shape", CASES)
def test_builds_and_trains(spec, kw, shape) -> None:
    torch.manual_seed(0)
    model, info = build_model(spec, num_classes=7, input_shape=shape, **kw)
    assert info.input_shape == shape and info.num_classes == 7
    x, y = torch.randn(4, *shape), torch.randint(0, 7, (4,))
    assert model(x).shape == (4, 7)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for _ in range(4):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]


def test_vgg_flatten_keeps_spatial_block_at_64() -> None:
    m32, _ = build_model("vgg16", input_shape=(3, 32, 32), width=1 / 16)
    m64, _ = build_model("vgg16", input_shape=(3, 64, 64), width=1 / 16)
    c = 32  # 512 / 16 channels after the last conv
    assert m32.classifier[0].in_features == c * 1 and m64.classifier[0].in_features == c * 4
    assert m64.classifier[0].out_features == 32 and m64.classifier[-1].out_features == 10
    convs = [m for m in m64.features if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 13 and all(cv.bias is not None for cv in convs)
    bn, _ = build_model("vgg16_bn", width=1 / 64)
    assert min(cv.out_channels for cv in bn.features if isinstance(cv, torch.nn.Conv2d)) == 1  # width floor


def test_vgg_default_is_full_width_and_param_count() -> None:
    model, info = build_model("vgg11")
    n = sum(p.numel() for p in model.parameters())
    # conv stack of VGG-11 (9,220,480) + classifier 512·512+512 + 512·512+512 + 512·10+10
    assert n == 9_220_480 + 2 * (512 * 512 + 512) + 5130
    assert info.input_shape == (3, 32, 32)


def test_torchvision_and_factory(tmp_path, monkeypatch) -> None:
    model, info = build_model("torchvision:resnet18", num_classes=5)
    assert model.fc.out_features == 5 and info.input_shape == (3, 224, 224)
    (tmp_path / "userzoo.py").write_text(textwrap.dedent("""
        import torch
        def small():
            return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        def broken():
            raise RuntimeError("boom")
        def not_a_module():
            return 3
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("userzoo", None)
    model, info = build_model("userzoo:small", input_shape=(3,))
    assert model(torch.randn(2, 3)).shape == (2, 2) and info.input_shape == (3,)
    for spec, needle in [("userzoo:smal", "did you mean small"), ("userzoo:broken", "boom"),
                         ("userzoo:not_a_module", "not an nn.Module"), ("nopkg_xyz.mod:f", "cannot import")]:
        with pytest.raises(SpecError, match=needle):
            build_model(spec)


@pytest.mark.parametrize("spec,kw,needle", [
    ("vgg61", {}, "did you mean vgg19, vgg16"), ("vgg16", {"widht": 2}, "did you mean width"),
    ("torchvision:resnt18", {}, "did you mean resnet18"), ("resnet18", {"stem": "tiny"}, "stem must be"),
    ("vgg16", {"input_size": 48}, "multiple of 32"), ("mlp", {"activation": "relu6"}, "unknown activation"),
    ("torchvision:resnet18", {"weights": "DEFAULT"}, "weights=None"),
])
def test_spec_errors_are_one_line(spec, kw, needle) -> None:
    with pytest.raises(SpecError) as err:
        build_model(spec, **kw)
    assert needle in str(err.value) and "\n" not in str(err.value)
