"""Tiny Hugging Face transformers built from configs (random weights, nothing downloaded).

Four families people train now, each small enough for a test in seconds: BERT (post-norm encoder,
sequence classification), GPT-2 (pre-norm decoder, tied input/output embeddings, ``Conv1D`` = addmm),
Llama (RMSNorm, SwiGLU MLP, rotary embeddings, grouped-query attention when ``kv_heads < heads``) and
ViT (class token, position embedding, image classification). Every builder returns a :class:`Logits`
wrapper whose ``forward`` returns the logits tensor, because the analyzer follows one tensor to the loss.

Token models take ``int64`` ids in ``[0, vocab)`` of shape ``[B, S]``; ``input_shape`` is ``(S,)`` and
``input_dtype`` says ``int64`` so callers (the CLI, tests) can build an example batch. Language models
(GPT-2, Llama) return ``[B, S, V]`` logits scored by cross-entropy over the last axis, as Hugging Face
computes it; BERT and ViT return ``[B, classes]``.

Attention runs through the ``eager`` implementation (explicit matmul-softmax-matmul) by default, so the
captured graph is the same on every torch version; ``attn="sdpa"`` selects
``scaled_dot_product_attention``.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

HF_MODELS = ("hf_bert", "hf_gpt2", "hf_llama", "hf_vit")


class Logits(nn.Module):
    """Wrap a Hugging Face model so that ``forward(x)`` returns ``model(...).logits`` as a tensor.

    ``key`` is the keyword the model takes (``input_ids`` or ``pixel_values``). ``input_shape``,
    ``input_dtype``, ``vocab_size`` and ``num_classes`` describe the example input a caller must build.
    """

    def __init__(self, model: nn.Module, key: str, input_shape: tuple[int, ...], input_dtype: torch.dtype,
                 vocab_size: int | None, num_classes: int) -> None:
        super().__init__()
        self.model = model
        self.key = key
        self.input_shape = tuple(input_shape)
        self.input_dtype = input_dtype
        self.vocab_size = vocab_size
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(**{self.key: x}).logits

    def example_input(self, batch: int = 2, seed: int = 0) -> torch.Tensor:
        """A batch the model accepts: token ids in ``[0, vocab)`` or a standard-normal image batch."""
        g = torch.Generator().manual_seed(seed)
        if self.input_dtype == torch.int64:
            return torch.randint(0, int(self.vocab_size), (batch, *self.input_shape), generator=g)
        return torch.randn((batch, *self.input_shape), generator=g)


def _common(cfg: Any, attn: str) -> None:
    cfg._attn_implementation = attn
    cfg.use_cache = False   # no key/value cache: the graph is the plain forward pass
    for k in ("hidden_dropout_prob", "attention_probs_dropout_prob", "resid_pdrop", "embd_pdrop", "attn_pdrop",
              "attention_dropout"):
        if hasattr(cfg, k):
            setattr(cfg, k, 0.0)


def build_bert(hidden: int = 16, layers: int = 2, heads: int = 2, vocab: int = 50, seq: int = 8,
               num_classes: int = 3, attn: str = "eager") -> Logits:
    """BERT for sequence classification: word + position + token-type embeddings, post-norm blocks,
    pooler (Linear + tanh on the first token), classifier."""
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=2 * hidden, max_position_embeddings=max(seq, 16), num_labels=num_classes,
                     hidden_act="gelu")
    _common(cfg, attn)
    return Logits(BertForSequenceClassification(cfg), "input_ids", (seq,), torch.int64, vocab, num_classes).train()


def build_gpt2(hidden: int = 16, layers: int = 2, heads: int = 2, vocab: int = 50, seq: int = 8,
               attn: str = "eager") -> Logits:
    """GPT-2 language model: pre-norm blocks, ``Conv1D`` projections (addmm), tied embeddings."""
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=heads, n_positions=max(seq, 16),
                     tie_word_embeddings=True, bos_token_id=0, eos_token_id=0)
    _common(cfg, attn)
    model = GPT2LMHeadModel(cfg)
    model.tie_weights()
    return Logits(model, "input_ids", (seq,), torch.int64, vocab, vocab).train()


def build_llama(hidden: int = 16, layers: int = 2, heads: int = 2, kv_heads: int | None = None, vocab: int = 50,
                seq: int = 8, attn: str = "eager") -> Logits:
    """Llama language model: RMSNorm, SwiGLU MLP, rotary position embedding, optional grouped-query
    attention (``kv_heads < heads``), untied output head, no biases."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                      num_key_value_heads=kv_heads or heads, intermediate_size=2 * hidden,
                      max_position_embeddings=max(seq, 16), tie_word_embeddings=False)
    _common(cfg, attn)
    return Logits(LlamaForCausalLM(cfg), "input_ids", (seq,), torch.int64, vocab, vocab).train()


def build_vit(image_size: int = 16, patch: int = 4, hidden: int = 16, layers: int = 2, heads: int = 2,
              num_classes: int = 3, attn: str = "eager") -> Logits:
    """ViT for image classification: patch conv, class token, position embedding, pre-norm blocks."""
    from transformers import ViTConfig, ViTForImageClassification

    cfg = ViTConfig(image_size=image_size, patch_size=patch, num_channels=3, hidden_size=hidden,
                    num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=2 * hidden,
                    num_labels=num_classes, hidden_act="gelu")
    _common(cfg, attn)
    return Logits(ViTForImageClassification(cfg), "pixel_values", (3, image_size, image_size), torch.float32,
                  None, num_classes).train()


BUILDERS: dict[str, Callable[..., Logits]] = {
    "hf_bert": build_bert, "hf_gpt2": build_gpt2, "hf_llama": build_llama, "hf_vit": build_vit,
}


def build_hf(name: str, **kwargs: Any) -> Logits:
    """Build one of :data:`HF_MODELS` with its keyword options (seeded by the caller)."""
    if name not in BUILDERS:
        raise ValueError(f"unknown tiny Hugging Face model {name!r}; choose from {', '.join(HF_MODELS)}")
    return BUILDERS[name](**kwargs)
