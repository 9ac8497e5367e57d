"""``nmech analyze --graph FILE``: the graph file read back (node count, ops, shapes, group membership)
and the drawing written beside it."""

from __future__ import annotations

import json

import networkx as nx
import pytest
import torch

from analyses.cli import main
from symmetry_engine.graph.analysis import analyze
from symmetry_engine.graph.export import read_graph, write_graph
from tests.test_attention_matrix import Heads


@pytest.mark.parametrize("suffix", [".graphml", ".json"])
def test_graph_file_round_trip(tmp_path, suffix: str) -> None:
    torch.manual_seed(0)
    model = Heads(H=4, Hkv=2)
    a = analyze(model, torch.randn(2, 5, 8))
    write_graph(a, tmp_path / f"g{suffix}")
    g = read_graph(tmp_path / f"g{suffix}")
    hidden = sum(1 for _, d in a.graph.nodes(data=True) if str(d.get("target")).startswith("aten._assert"))
    assert g.number_of_nodes() == a.graph.number_of_nodes() - hidden
    params = {d["param"]: d for _, d in g.nodes(data=True) if d["kind"] == "param"}
    assert set(params) == {"q.weight", "q.bias", "k.weight", "k.bias", "v.weight", "v.bias", "o.weight", "o.bias"}
    groups = json.loads(g.graph["matrix_groups"])
    assert len(groups) == len(a.matrix_symmetries) == 4
    # membership: q/k weights in the two Q/K groups, v and o in the two V/O groups
    ids = lambda p: {x for x in params[p]["groups"].split(";") if x.startswith("gl:")}  # noqa: E731
    qk = {gid for gid, info in groups.items() if "query" in info["note"]}
    vo = {gid for gid, info in groups.items() if "value" in info["note"]}
    assert ids("q.weight") == ids("k.weight") == ids("q.bias") == qk and len(qk) == 2
    assert ids("v.weight") == ids("o.weight") == vo and len(vo) == 2
    assert ids("o.bias") == set()
    for gid, s in zip(sorted(groups, key=lambda x: int(x.split(":")[1])), a.matrix_symmetries):
        assert {p for p, d in params.items() if gid in d["groups"].split(";")} == {m.param for m in s.members}
    linears = [d for _, d in g.nodes(data=True) if d["op"] == "aten.linear"]
    assert len(linears) == 4 and all(d["feature_axis"] == "-1" for d in linears)
    assert sorted(sum(x.startswith("gl:") for x in d["groups"].split(";")) for d in linears) == [2, 2, 2, 2]
    assert all(int(d["n_groups"]) == len([x for x in d["groups"].split(";") if x]) for d in linears)
    assert any(d["shape"] == "2x4x5x4" for _, d in g.nodes(data=True))
    # the feature axes the matrix pass tracked: [B, S, F] out of a Linear, then heads after view + transpose
    assert all(d["label_axes"] == "2" for d in linears)
    views = [d for _, d in g.nodes(data=True) if d["op"] == "aten.view" and d["label_axes"]]
    assert views and all(d["label_axes"] == "2,3" for d in views)
    # q, k, v to [B, H, S, d] (heads on 1, features on 3); the attention output back to [B, S, H, d]
    assert sorted(d["label_axes"] for _, d in g.nodes(data=True) if d["op"] == "aten.transpose") == \
        ["1,3", "1,3", "1,3", "2,3"]


def test_graph_names_where_labels_stop(tmp_path) -> None:
    """A GELU on the queries: the Q/K groups are gone and the GELU node says why."""
    torch.manual_seed(1)
    a = analyze(Heads(q_act=True), torch.randn(2, 5, 8))
    g = read_graph(write_graph(a, tmp_path / "g.json") and tmp_path / "g.json")
    gelu = [d for _, d in g.nodes(data=True) if d["op"] == "aten.gelu"]
    assert len(gelu) == 1 and gelu[0]["matrix_blocks"] == "aten.gelu"
    assert len(json.loads(g.graph["matrix_groups"])) == 2


def test_cli_graph_and_drawing(tmp_path, capsys) -> None:
    out = tmp_path / "mlp.graphml"
    assert main(["analyze", "mlp", "--graph", str(out), "--json", "--no-cache"]) == 0
    data = json.loads(capsys.readouterr().out)
    g = nx.read_graphml(out)
    assert g.number_of_nodes() > 0
    n_param = sum(1 for _, d in g.nodes(data=True) if d["kind"] == "param")
    assert n_param == len(data["parameters"])
    for suffix in (".svg", ".png"):
        assert (tmp_path / f"mlp{suffix}").stat().st_size > 1000
    assert (tmp_path / "mlp.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_graph_bad_suffix(tmp_path, capsys) -> None:
    assert main(["analyze", "mlp", "--graph", str(tmp_path / "g.txt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ".graphml or .json" in err
    assert not (tmp_path / "g.txt").exists()
