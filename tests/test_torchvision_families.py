"""torchvision's ViT, ConvNeXt, Swin, EfficientNet and MaxViT get their diagonal families, certified.

Fast tests build each architecture's own classes at toy sizes (seconds each); the heavy ones run the
named torchvision models at small inputs (reduced further when ``CI`` is set).
"""

from __future__ import annotations

import os

import pytest
import torch

from symmetry_engine.graph.analysis import analyze


def _run(model: torch.nn.Module, size: int, batch: int = 2, certify: bool = True):
    torch.manual_seed(0)
    result = analyze(model.train(), torch.randn(batch, 3, size, size), certify_symmetries=certify, batch_size=4,
                     samples=8)
    assert result.unknown_ops == []
    if certify:
        assert result.all_certified, [c.key for c in result.certificates if not c.certified][:5]
    return result


def _params(result, kind: str) -> list[set[str]]:
    return [set(s.params) for s in result.symmetries if s.kind == kind]


def _vit_checks(result, hidden: int, layers: int) -> None:
    (stream,) = _params(result, "scale")
    assert {"class_token", "encoder.pos_embedding", "conv_proj.weight", "conv_proj.bias"} <= stream
    for i in range(layers):
        enc = f"encoder.layers.encoder_layer_{i}"
        keys = [s for s in result.symmetries if s.kind == "translation" and s.members[0].param == f"{enc}.self_attention.in_proj_bias"]
        assert sorted(s.members[0].indices for s in keys) == [(j,) for j in range(hidden, 2 * hidden)]
        inproj = [p for p in _params(result, "rescale") if p == {f"{enc}.self_attention.in_proj_weight",
                                                                f"{enc}.self_attention.in_proj_bias"}]
        vo = [p for p in _params(result, "rescale") if f"{enc}.self_attention.out_proj.weight" in p
              and f"{enc}.self_attention.in_proj_weight" in p]
        assert len(inproj) == hidden and len(vo) == hidden   # Q/K per feature; V against out_proj's column


def test_vit() -> None:
    from torchvision.models.vision_transformer import VisionTransformer

    model = VisionTransformer(image_size=16, patch_size=8, num_layers=2, num_heads=2, hidden_dim=8, mlp_dim=16,
                              num_classes=3)
    _vit_checks(_run(model, 16), 8, 2)


def _convnext_checks(result, dwconvs: list[str]) -> None:
    scales = _params(result, "scale")
    for dw in dwconvs:   # the depthwise conv feeds a LayerNorm through a permute: its whole output scales
        assert {f"{dw}.weight", f"{dw}.bias"} in scales
        assert any(s.kind == "translation" and s.members[0].param == f"{dw}.bias" and s.members[0].axis is None
                   for s in result.symmetries)
    assert any(any(p.endswith("layer_scale") for p in ps) for ps in _params(result, "rescale"))


def test_convnext_with_stochastic_depth() -> None:
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    model = ConvNeXt([CNBlockConfig(8, 16, 1), CNBlockConfig(16, None, 1)], stochastic_depth_prob=0.1, num_classes=3)
    _convnext_checks(_run(model, 16), ["features.1.0.block.0", "features.3.0.block.0"])


def test_swin() -> None:
    from torchvision.models.swin_transformer import SwinTransformer

    model = SwinTransformer(patch_size=[2, 2], embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=[2, 2],
                            stochastic_depth_prob=0.1, num_classes=3)
    result = _run(model, 8)
    qkv = "features.1.0.attn.qkv"
    keys = [s for s in result.symmetries if s.kind == "translation" and s.members[0].param == f"{qkv}.bias"]
    assert sorted(s.members[0].indices for s in keys) == [(j,) for j in range(8, 16)]
    assert sum(1 for p in _params(result, "rescale") if p == {f"{qkv}.weight", f"{qkv}.bias"}) == 8
    assert result.counts["scale"] >= 1


def test_swin_v2_cosine_attention() -> None:
    """Swin V2 normalises q and k (F.normalize: a norm, a tiny clamp, a division) before their product."""
    from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformer, SwinTransformerBlockV2

    model = SwinTransformer(patch_size=[2, 2], embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=[2, 2],
                            stochastic_depth_prob=0.1, num_classes=3, block=SwinTransformerBlockV2,
                            downsample_layer=PatchMergingV2)
    result = _run(model, 8)
    # residual post-norm: the attention projection and the MLP output feed a LayerNorm: scale groups. (The
    # q/k rows are scale-invariant too, but V2 builds its qkv bias by cloning and zeroing the key part, a
    # computed bias, which blocks them.)
    scales = _params(result, "scale")
    assert {"features.1.0.attn.proj.weight", "features.1.0.attn.proj.bias"} in scales
    assert {"features.1.0.mlp.3.weight", "features.1.0.mlp.3.bias"} in scales


def test_maxvit_relative_attention_einsum() -> None:
    from torchvision.models.maxvit import MaxVit

    model = MaxVit(input_size=(16, 16), stem_channels=8, partition_size=2, block_channels=[8, 16], block_layers=[1, 1],
                   head_dim=4, stochastic_depth_prob=0.1, num_classes=3)
    result = _run(model, 16)
    assert result.counts["rescale"] > 0 and result.counts["scale"] > 0 and result.counts["translation"] > 0


def test_efficientnet_train_mode_stochastic_depth_keeps_rescales() -> None:
    from torchvision.models.efficientnet import EfficientNet, MBConvConfig

    model = EfficientNet([MBConvConfig(1, 3, 1, 8, 8, 1), MBConvConfig(4, 3, 2, 8, 16, 2)], dropout=0.1,
                         stochastic_depth_prob=0.2, num_classes=3)
    result = _run(model, 16)
    # the second MBConv of stage 2 has a residual with a bernoulli mask: its projection BN is coupled
    assert any({"features.2.0.block.3.1.weight", "features.2.1.block.3.1.weight"} <= p for p in _params(result, "rescale"))


HEAVY = [("vit_b_16", dict(image_size=32), 32), ("convnext_tiny", {}, 32), ("swin_t", {}, 64),
         ("efficientnet_b1", {}, 32), ("maxvit_t", {}, 224)]


@pytest.mark.heavy
@pytest.mark.parametrize("name,kw,size", HEAVY, ids=[h[0] for h in HEAVY])
def test_torchvision_models_families(name: str, kw: dict, size: int) -> None:
    import torchvision

    model = torchvision.models.get_model(name, weights=None, num_classes=10, **kw)
    result = _run(model, size, certify=not os.environ.get("CI"))
    counts = result.counts
    assert counts["translation"] > 0 and counts["rescale"] > 0
    if name == "vit_b_16":
        _vit_checks(result, 768, 12)
    if name == "convnext_tiny":
        _convnext_checks(result, ["features.1.0.block.0", "features.7.2.block.0"])
    if name == "efficientnet_b1":
        assert counts["rescale"] >= 768
