"""Tiny Hugging Face models built offline from configs (nothing downloads), returning logits tensors.

Why here: the matrix-symmetry tests need BERT, GPT-2 (tied embeddings), Llama (grouped-query heads,
rotary embeddings) and ViT with their real attention code; a few hundred parameters each keep the
tests at seconds.  ``attn`` picks Hugging Face's attention code: "sdpa" (scaled_dot_product_attention) or
"eager" (matmul, mask, softmax, dropout, matmul written out).  Each builder returns (model, example input, expected layout) where the layout lists
what the analyzer must find per layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

VOCAB, HIDDEN, LAYERS, SEQ = 32, 16, 2, 5


class Logits(nn.Module):
    """The model's ``.logits`` as one tensor (the analyzer traces a tensor-valued forward)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.m = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(x).logits


@dataclass(frozen=True)
class Layout:
    heads: int          # query heads per layer
    kv_heads: int       # key/value heads per layer
    head_dim: int
    rotary: bool
    qkv: tuple[str, str, str, str]   # parameter names (relative to a layer) of the Q, K, V and O weights
    layer_prefix: str   # format string with {i}


def tokens(seed: int = 0, batch: int = 2) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, SEQ), generator=torch.Generator().manual_seed(seed))


def bert(attn: str = "sdpa") -> tuple[nn.Module, torch.Tensor, Layout]:
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=2,
                     intermediate_size=24, max_position_embeddings=16, num_labels=3, attn_implementation=attn)
    return Logits(BertForSequenceClassification(cfg)), tokens(), Layout(
        2, 2, 8, False, ("attention.self.query.weight", "attention.self.key.weight", "attention.self.value.weight",
                         "attention.output.dense.weight"), "m.bert.encoder.layer.{i}.")


def gpt2(attn: str = "sdpa") -> tuple[nn.Module, torch.Tensor, Layout]:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=2, n_positions=16,
                     tie_word_embeddings=True, bos_token_id=0, eos_token_id=0, attn_implementation=attn)
    return Logits(GPT2LMHeadModel(cfg)), tokens(1), Layout(
        2, 2, 8, False, ("attn.c_attn.weight", "attn.c_attn.weight", "attn.c_attn.weight", "attn.c_proj.weight"),
        "m.transformer.h.{i}.")


def llama(attn: str = "sdpa") -> tuple[nn.Module, torch.Tensor, Layout]:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=24, num_hidden_layers=LAYERS,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16,
                      bos_token_id=0, eos_token_id=0, pad_token_id=0, attn_implementation=attn)
    return Logits(LlamaForCausalLM(cfg)), tokens(2), Layout(
        4, 2, 4, True, ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
                        "self_attn.o_proj.weight"), "m.model.layers.{i}.")


def vit(attn: str = "sdpa") -> tuple[nn.Module, torch.Tensor, Layout]:
    from transformers import ViTConfig, ViTForImageClassification

    cfg = ViTConfig(image_size=8, patch_size=4, num_channels=3, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                    num_attention_heads=2, intermediate_size=24, num_labels=3, attn_implementation=attn)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    model = ViTForImageClassification(cfg)
    names = {n for n, _ in model.named_parameters()}
    q = "attention.attention.query.weight" if any("attention.attention.query" in n for n in names) else \
        "attention.q_proj.weight"
    base = q.rsplit(".", 2)[0]
    kname = {"attention.attention": "key", "attention": "k_proj"}[base]
    vname = {"attention.attention": "value", "attention": "v_proj"}[base]
    oname = "attention.output.dense.weight" if base == "attention.attention" else "attention.o_proj.weight"
    return Logits(model), x, Layout(2, 2, 8, False, (q, f"{base}.{kname}.weight", f"{base}.{vname}.weight", oname),
                                    "m.vit.encoder.layer.{i}." if base == "attention.attention" else "m.vit.layers.{i}.")


BUILDERS = {"bert": bert, "gpt2": gpt2, "llama": llama, "vit": vit}
