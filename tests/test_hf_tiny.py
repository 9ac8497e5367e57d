"""Tiny Hugging Face builders (model_zoo/hf_tiny.py): offline, the right logits, specs and int64 inputs."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from model_zoo import build_model  # noqa: E402


@pytest.mark.parametrize("name,shape,dtype,out", [
    ("hf_bert", (8,), "int64", (2, 10)),
    ("hf_gpt2", (8,), "int64", (2, 8, 50)),
    ("hf_llama", (8,), "int64", (2, 8, 50)),
    ("hf_vit", (3, 16, 16), "float32", (2, 10)),
])
def test_hf_spec_builds_and_returns_logits(name, shape, dtype, out):
    torch.manual_seed(0)
    model, info = build_model(name)
    assert info.input_shape == shape and info.input_dtype == dtype
    x = model.example_input(2)
    assert x.dtype == (torch.int64 if dtype == "int64" else torch.float32)
    y = model(x)
    assert isinstance(y, torch.Tensor) and tuple(y.shape) == out


def test_gpt2_embeddings_are_tied_and_llama_gqa():
    model, _ = build_model("hf_gpt2")
    assert model.model.lm_head.weight is model.model.transformer.wte.weight
    llama, _ = build_model("hf_llama", heads=4, kv_heads=2, hidden=16)
    attn = llama.model.model.layers[0].self_attn
    assert attn.k_proj.weight.shape == (8, 16) and attn.q_proj.weight.shape == (16, 16)


def test_token_model_rejects_image_shape():
    from model_zoo import SpecError

    with pytest.raises(SpecError, match="sequence length"):
        build_model("hf_gpt2", input_shape=(3, 8, 8))
