"""The diagonal families of theory.md §8 on tiny Hugging Face transformers (model_zoo/hf_tiny.py).

Every family each model has is found by plain analysis and every reported group is certified (a random
group element in float64, normalizer ε → 0, leaves the loss unchanged; the gradient constraint holds).
Counts follow from the configs: hidden d = 16, 2 layers, 2 heads (head size 8), MLP width 32.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from model_zoo import build_model  # noqa: E402
from symmetry_engine.graph.analysis import analyze  # noqa: E402

D, LAYERS = 16, 2


def _analyze(name: str, **kw):
    torch.manual_seed(0)
    model, _ = build_model(name, **kw)
    result = analyze(model, model.example_input(2), certify_symmetries=True, batch_size=4, samples=8)
    assert result.unknown_ops == []
    assert result.all_certified, [c.key for c in result.certificates if not c.certified][:5]
    return result


def _with(result, kind: str, plus: dict[str, int | None], minus: dict[str, int | None] | None = None) -> list:
    """Groups of ``kind`` whose +1 members include each ``param: axis`` of ``plus`` (−1: ``minus``)."""
    def has(s, want, sign):
        got = {(m.param.split("model.", 1)[-1], m.axis) for m in s.members if m.sign == sign}
        return all((p, a) in got for p, a in want.items())
    return [s for s in result.symmetries if s.kind == kind and has(s, plus, 1) and has(s, minus or {}, -1)]


def test_gpt2_tied_embedding_stream_heads_and_key_biases() -> None:
    r = _analyze("hf_gpt2")
    # the residual stream with all its writers; the tied embedding scales with it, the final LN inversely
    (stream,) = _with(r, "rescale", {"transformer.wte.weight": 1, "transformer.wpe.weight": 1},
                      {"transformer.ln_f.weight": 0})
    assert all(f"transformer.h.{i}.{w}.c_proj.weight" in {m.param.split("model.", 1)[-1] for m in stream.members}
               for i in range(LAYERS) for w in ("attn", "mlp"))
    for i in range(LAYERS):
        h = f"transformer.h.{i}"
        assert len(_with(r, "rescale", {f"{h}.ln_1.weight": 0}, {f"{h}.attn.c_attn.weight": 0})) == D   # gain ↔ columns
        assert len(_with(r, "rescale", {f"{h}.ln_2.weight": 0}, {f"{h}.mlp.c_fc.weight": 0})) == D
        qk = _with(r, "rescale", {f"{h}.attn.c_attn.weight": 1}, {f"{h}.attn.c_attn.weight": 1})
        vo = _with(r, "rescale", {f"{h}.attn.c_attn.weight": 1}, {f"{h}.attn.c_proj.weight": 0})
        assert len(qk) == D and len(vo) == D
        keys = [s for s in r.symmetries if s.kind == "translation" and s.members[0].param.endswith(f"{h}.attn.c_attn.bias")]
        assert sorted(s.members[0].indices for s in keys) == [(j,) for j in range(D, 2 * D)]   # every key-bias entry
        for w in ("attn", "mlp"):   # LayerNorm absorbs α·1 on a writer's bias and on each weight column
            assert any(s.kind == "translation" and s.members[0].param.endswith(f"{h}.{w}.c_proj.bias")
                       and s.members[0].axis is None for s in r.symmetries)


def test_llama_rmsnorm_swiglu_rope_heads() -> None:
    r = _analyze("hf_llama")
    (stream,) = [s for s in r.symmetries if s.kind == "scale"]
    assert {m.param.split("model.", 1)[-1] for m in stream.members} == {
        "model.embed_tokens.weight", *(f"model.layers.{i}.{p}.weight" for i in range(LAYERS)
                                       for p in ("self_attn.o_proj", "mlp.down_proj"))}
    for i in range(LAYERS):
        L = f"model.layers.{i}"
        assert len(_with(r, "rescale", {f"{L}.input_layernorm.weight": 0},
                         {f"{L}.self_attn.q_proj.weight": 1, f"{L}.self_attn.k_proj.weight": 1,
                          f"{L}.self_attn.v_proj.weight": 1})) == D
        assert len(_with(r, "rescale", {f"{L}.post_attention_layernorm.weight": 0},
                         {f"{L}.mlp.gate_proj.weight": 1, f"{L}.mlp.up_proj.weight": 1})) == D
        assert len(_with(r, "rescale", {f"{L}.mlp.up_proj.weight": 0}, {f"{L}.mlp.down_proj.weight": 1})) == 2 * D
        rope = _with(r, "rescale", {f"{L}.self_attn.q_proj.weight": 0}, {f"{L}.self_attn.k_proj.weight": 0})
        # rotary pairs (k, k + 4) of each head scale together (the a·I part of the RoPE-compatible subgroup)
        assert sorted(next(m.indices for m in s.members if m.param.endswith("q_proj.weight")) for s in rope) == [
            (h * 8 + k, h * 8 + k + 4) for h in range(2) for k in range(4)]
        assert len(_with(r, "rescale", {f"{L}.self_attn.v_proj.weight": 0}, {f"{L}.self_attn.o_proj.weight": 1})) == D
    assert len(_with(r, "rescale", {"model.norm.weight": 0}, {"lm_head.weight": 1})) == D
    # RMSNorm has the scale symmetry but no translations: only the output head's columns (softmax over V)
    assert {s.members[0].param.split("model.", 1)[-1] for s in r.symmetries if s.kind == "translation"} == {"lm_head.weight"}


def test_llama_grouped_query_heads_share_their_key_value_rows() -> None:
    r = _analyze("hf_llama", heads=4, kv_heads=2)
    L = "model.layers.0"
    rope = _with(r, "rescale", {f"{L}.self_attn.q_proj.weight": 0}, {f"{L}.self_attn.k_proj.weight": 0})
    # head size 4: pairs (k, k + 2); the two query heads sharing a key head scale with it
    got = sorted((next(m.indices for m in s.members if m.param.endswith("k_proj.weight")),
                  next(m.indices for m in s.members if m.param.endswith("q_proj.weight"))) for s in rope)
    assert got == [((g * 4 + k, g * 4 + k + 2), tuple(sorted((q * 4 + k, q * 4 + k + 2)[i] for q in (2 * g, 2 * g + 1)
                                                            for i in range(2)))) for g in range(2) for k in range(2)]
    vo = _with(r, "rescale", {f"{L}.self_attn.v_proj.weight": 0}, {f"{L}.self_attn.o_proj.weight": 1})
    assert len(vo) == 8 and all(len(next(m.indices for m in s.members if m.param.endswith("o_proj.weight"))) == 2 for s in vo)


def test_bert_post_norm_heads_and_key_biases() -> None:
    r = _analyze("hf_bert")
    assert _with(r, "scale", {"bert.embeddings.word_embeddings.weight": 1, "bert.embeddings.position_embeddings.weight": 1,
                              "bert.embeddings.token_type_embeddings.weight": 1})
    for i in range(LAYERS):
        a = f"bert.encoder.layer.{i}.attention.self"
        assert len(_with(r, "rescale", {f"{a}.query.weight": 0}, {f"{a}.key.weight": 0})) == D
        assert len(_with(r, "rescale", {f"{a}.value.weight": 0}, {f"bert.encoder.layer.{i}.attention.output.dense.weight": 1})) == D
        keys = [s for s in r.symmetries if s.kind == "translation" and s.members[0].param.endswith(f"{a}.key.bias")]
        assert len(keys) == D


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_vit_stream_with_class_token_and_position_embedding(attn: str) -> None:
    r = _analyze("hf_vit", attn=attn)
    (stream,) = [s for s in r.symmetries if s.kind == "scale"]
    params = {m.param.split("model.", 1)[-1] for m in stream.members}
    assert {"vit.embeddings.cls_token", "vit.embeddings.position_embeddings",
            "vit.embeddings.patch_embeddings.projection.weight"} <= params
    for i in range(LAYERS):
        key = [s for s in r.symmetries if s.kind == "translation" and "k_proj.bias" in s.members[0].param
               and f".{i}." in s.members[0].param]
        assert len(key) == D
    assert any(s.kind == "translation" and s.members[0].param.endswith("cls_token") for s in r.symmetries)
    counts = r.counts
    eager = _analyze("hf_vit", attn="eager").counts
    assert counts == eager   # the sdpa op and explicit matmul-softmax give the same groups
