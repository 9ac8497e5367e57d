"""Architecture report (no run) and the Jupyter HTML renderers."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from analyses.arch_report import diagram, layer_table
from analyses.html_repr import analysis_html, evaluation_html
from analyses.report import write_architecture_report
from symmetry_engine.graph.analysis import analyze
from symmetry_engine.numeric.evaluate import evaluate_run

from .chromium import HOW_TO_GET, check_page, find_chromium
from .report_fixtures import attach_law, contract_json, toy_run


@pytest.fixture(scope="module")
def vgg(tmp_path_factory):
    """``nmech report vgg11_bn`` through the CLI (the analysis goes through the cache)."""
    from analyses.cli import main

    out = tmp_path_factory.mktemp("arch") / "vgg"
    assert main(["report", "vgg11_bn", "--width", "0.125", "--momentum", "0.9", "--weight-decay", "5e-4",
                 "--out", str(out)]) == 0
    return out


def test_per_layer_counts_equal_the_analysis(vgg):
    data = json.loads((vgg / "report.json").read_text())
    analysis = data["analysis"]
    rows = {r["layer"]: r for r in data["layers"]}
    # every group is counted exactly once, at the module of its first sign +1 member
    for kind, n in analysis["counts"].items():
        assert sum(r["groups"][kind] for r in rows.values()) == n
    owner = {}
    for s in analysis["symmetries"]:
        m = next(m for m in s["members"] if m["sign"] > 0)["param"].rsplit(".", 1)[0]
        owner.setdefault((m, s["kind"]), 0)
        owner[(m, s["kind"])] += 1
    for (m, kind), n in owner.items():
        assert rows[m]["groups"][kind] == n
    assert rows["features.0"]["groups"] == {"translation": 8, "scale": 8, "rescale": 0}   # conv before BN, 8 channels
    assert rows["features.4"]["rescale_consumer_of"] == {"features.1": 8}                # BN (γ, β) → next conv
    assert list(rows) == [p.rsplit(".", 1)[0] for p in analysis["parameters"]][::2]       # network order
    text = (vgg / "report.md").read_text()
    assert text.index("`features.4`") < text.index("`features.11`")                       # natural sort
    for part in ("## Symmetries per layer", "## Where there is no symmetry, and why",
                 "the loss.cross_entropy head is not scale-invariant: 10 channel(s)",
                 "## Conserved quantities and their laws", "heavy-ball momentum", "## Layer diagram",
                 "| `features.4` | weight 16×8×3×3, bias 16 | 16 | 16 |  | 8 from `features.1` |"):
        assert part in text, part
    assert data["figures"] == ["architecture.png"] and data["optimizer"]["momentum"] == 0.9


def test_diagram_marks_every_count_and_link(vgg):
    analysis = json.loads((vgg / "report.json").read_text())["analysis"]
    layers = layer_table(analysis)
    fig = diagram(layers, "t")
    gids = [p.get_gid() for ax in fig.axes for p in ax.patches if p.get_gid()]
    counts = {(g.split("|")[1], g.split("|")[2]): int(g.split("|")[3]) for g in gids if g.startswith("count|")}
    for name, info in layers.items():
        for kind, n in info.groups.items():
            assert counts.get((kind, name), 0) == n
    links = {(g.split("|")[1], g.split("|")[2]): int(g.split("|")[3]) for g in gids if g.startswith("link|")}
    assert links == {(p, name): n for name, info in layers.items() for p, n in info.consumes_from.items()}
    assert sum(g.startswith("layer|") for g in gids) == len(layers) == 19


def test_gl_pairs_and_layers_without_symmetry(tmp_path):
    model = nn.Sequential(nn.Linear(6, 4), nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    analysis = analyze(model, torch.randn(4, 6)).to_json()
    analysis["model"] = {"spec": "tests:linear_pair", "input_shape": [6]}
    assert analysis["matrix_symmetries"], "the analyzer finds the GL pair (0, 1)"
    md = write_architecture_report(analysis, {"rule": "sgd", "lr": 0.1}, tmp_path / "a")
    text = md.read_text()
    assert "GL(4) with 1" in text
    row = next(l for l in text.splitlines() if l.startswith("| `1` |"))
    assert "**none**" not in row   # GL's second layer: member of the pair
    data = json.loads(md.with_name("report.json").read_text())
    assert next(r for r in data["layers"] if r["layer"] == "0")["gl"] == ["GL(4) with 1"]
    binary = find_chromium()
    if binary is None:
        pytest.skip(HOW_TO_GET)
    seen = check_page(md.with_suffix(".html"), binary)
    assert not seen.console_errors and seen.images and all(i["complete"] and i["width"] > 0 for i in seen.images)


def test_cli_model_report_bad_spec_is_one_line(tmp_path, capsys):
    from analyses.cli import main

    assert main(["report", "no_such_model_xyz", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no_such_model_xyz" in err[0]
    assert not (tmp_path / "x").exists()


def test_jupyter_renderers(vgg, tmp_path):
    analysis = json.loads((vgg / "report.json").read_text())["analysis"]
    page = analysis_html(analysis)
    assert "Symmetries of vgg11_bn" in page and "409 translation" in page and "<script" not in page
    assert page.index(">features.4<") < page.index(">features.11<")
    toy_run(tmp_path / "r", steps=10, every=5, eval_log=False)
    ev = evaluate_run(tmp_path / "r")
    plain = evaluation_html(ev.to_json())
    assert "10 steps" in plain and "translation" in plain and "broken group" not in plain
    ev2 = copy.deepcopy(ev)
    attach_law(ev2)
    data = contract_json(ev2, broken=["rescale:conv2[1]"])
    page = evaluation_html(data)
    assert 'class="v-broken">1 broken' in page and "rescale:conv2[1]" in page and "law max" in page


def test_jupyter_counts_agree_with_the_architecture_report(vgg):
    from analyses.html_repr import layer_counts

    data = json.loads((vgg / "report.json").read_text())
    counts = layer_counts(data["analysis"])
    for row in data["layers"]:
        assert {k: counts[row["layer"]][k] for k in row["groups"]} == row["groups"]
        assert counts[row["layer"]]["consumer"] == sum(row["rescale_consumer_of"].values())
    import subprocess
    import sys
    code = "import sys, analyses.html_repr; sys.exit(any(m.startswith(('matplotlib', 'analyses.report')) for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0   # light: no plotting stack imported
