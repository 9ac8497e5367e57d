"""`nmech laws` with matrix symmetries: the matrix section in text, LaTeX and JSON; scalar output unchanged."""

from __future__ import annotations

import json
import subprocess
import sys

from analyses.laws_text import render_laws
from symmetry_engine.matrix_symmetry import from_pair, multihead_attention, rope_basis
from symmetry_engine.numeric.predict import OptimizerConfig

SHAPES = {"attn.in_proj_weight": (24, 8), "attn.in_proj_bias": (24,), "attn.out_proj.weight": (8, 8),
          "a.weight": (5, 6), "a.bias": (5,), "b.weight": (4, 5)}


def symmetries():
    return multihead_attention("attn", 8, 2) + [from_pair("a.weight", "a.bias", "b.weight", 5)]


def test_text_section_per_head_and_pair() -> None:
    opt = OptimizerConfig(lr=0.1, momentum=0.9, weight_decay=1e-4)
    scalar = render_laws(["rescale"], opt, "text")
    both = render_laws(["rescale"], opt, "text", symmetries(), SHAPES)
    assert both.startswith(scalar)                     # the scalar part is unchanged
    gl = both[len(scalar):]
    assert "C = Σ_i X_i X_iᵀ − Σ_j Y_j Y_jᵀ" in gl and "U_n = (β*η_n/η[n-1])*D[n-1]" in gl
    assert "X = [attn.in_proj_weight[0:4] | attn.in_proj_bias[0:4]], Y = [attn.in_proj_weight[8:12] | " \
           "attn.in_proj_bias[8:12]]; 10 independent laws" in gl
    assert "Y = [attn.out_proj.weight[:, 4:8]ᵀ]; 10 independent laws" in gl
    assert "Y = [b.weight[:, 0:5]ᵀ]; 15 independent laws" in gl
    assert gl.count("derived for members acting by") == 1   # both act signatures derive the same law


def test_plain_sgd_law_latex_and_json() -> None:
    opt = OptimizerConfig(lr=0.1, weight_decay=1e-3)
    tex = render_laws([], opt, "latex", symmetries(), SHAPES)
    assert r"\subsection*{gl (matrix symmetries)}" in tex and r"\Gamma_{n}" in tex and "M^-T" not in tex
    data = json.loads(render_laws([], opt, "json", symmetries(), SHAPES))
    rows = data["matrix"]["symmetries"]
    assert [r["laws"] for r in rows] == [10, 10, 10, 10, 15]
    assert "law" in data["matrix"]["signatures"][0]["text"]


def test_subgroup_and_nesterov() -> None:
    qk = multihead_attention("attn", 8, 2)[0]
    from symmetry_engine.matrix_symmetry import GLSymmetry

    rope = GLSymmetry(4, qk.members, "attn", "rotary q/k", tuple(tuple(map(tuple, b)) for b in rope_basis(4)))
    data = json.loads(render_laws([], OptimizerConfig(lr=0.1, momentum=0.9, nesterov=True), "json", [rope], SHAPES))
    (row,) = data["matrix"]["symmetries"]
    assert row["subgroup"] and row["conserved_functions"] == 2 and row["laws"] == 2
    assert data["matrix"]["signatures"][0]["text"]["law"].startswith("no matrix law")


def test_cli_prints_the_matrix_section_for_a_linear_network() -> None:
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "analyses.cli", "laws", *args], capture_output=True,
                              text=True, timeout=300)

    lin = run("mlp", "--input-shape", "12", "--model-kw", 'widths="5,4"', "--model-kw", 'activation="identity"')
    assert lin.returncode == 0, lin.stderr
    assert "== gl" in lin.stdout and "X = [layers.0.weight[0:5] | layers.0.bias[0:5]], Y = [layers.2.weight[:, 0:5]ᵀ]; " \
                                      "15 independent laws" in lin.stdout
    assert "== rescale ==" in lin.stdout     # the identity units' rescale groups, printed as before


def test_cli_kinds_gl_and_relu_without_section(capsys) -> None:
    from analyses.cli import main

    assert main(["laws", "mlp", "--kinds", "gl", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["matrix"]["symmetries"] == []
    assert main(["laws", "mlp", "--kinds", "rescale,translation"]) == 0
    assert "== gl" not in capsys.readouterr().out
    assert main(["laws", "mlp", "--kinds", "gl,bogus"]) == 2
    assert "unknown symmetry kind(s) bogus" in capsys.readouterr().err


def _cli(*argv: str) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, "-m", "analyses.cli", *argv], capture_output=True, text=True, env=env,
                          timeout=600)


def test_laws_and_count_for_an_analysed_attention_model() -> None:
    """`nmech laws` prints each head's matrices from the analyzer (grouped-query heads, rotary subgroup);
    `--count-laws` counts them: 2 × (2 + 10) = 24."""
    spec = ("tests.attention_models:gqa_rotary", "--input-shape", "5,8", "--no-cache")
    res = _cli("laws", *spec, "--json")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)["matrix"]["symmetries"]
    assert [(r["subgroup"], r["laws"]) for r in rows] == [(True, 2), (True, 2), (False, 10), (False, 10)]
    assert rows[0]["X"] == ["q.weight[0:4]", "q.bias[0:4]", "q.weight[4:8]", "q.bias[4:8]"]
    assert rows[0]["Y"] == ["k.weight[0:4]", "k.bias[0:4]"]
    assert rows[2]["Y"] == ["o.weight[:, 0:4]ᵀ", "o.weight[:, 4:8]ᵀ"]
    text = _cli("laws", *spec)
    assert "key head 0: query/key logits (query heads 0, 1)" in text.stdout
    res = _cli("analyze", *spec, "--loss", "mse", "--count-laws", "--json")
    assert res.returncode == 0, res.stderr
    lc = json.loads(res.stdout)["law_count"]
    # the diagonal rescales the analyzer also reports (Q/K rotary pairs, V/O) lie inside the GL blocks: no law
    assert lc["count"] == 24 and lc["by_family"] == {"gl-subgroup": 4, "gl": 20, "rescale": 12}
    text = _cli("analyze", *spec, "--loss", "mse")
    assert "matrix symmetries: 4 (query/key 2, value/output 2; 2 rotary subgroups)" in text.stdout
    assert text.stdout.count("\ngl ") == 4
