"""The analyzed computation graph as a file (GraphML or node-link JSON) and a drawing with groups marked.

Why: a researcher asking "why is this layer (not) symmetric?" wants to see the graph the analyzer saw —
each op, its tensor shape and feature axis, and which symmetry groups each parameter and layer belongs
to.  Node attributes are plain strings and numbers so GraphML readers (Gephi, yEd, networkx) take them:

  ``kind``       param | buffer | input | const | op | loss
  ``op``         the aten op (``aten.linear``) or ``param``/``input``/...
  ``param``      state_dict key (parameter and buffer nodes), else ""
  ``shape``      "2x5x16" ("" when unknown); ``ndim``
  ``feature_axis`` the axis holding a layer's output features (producers: -1 Linear, 1 Conv), else ""
  ``groups``     ";"-separated ids of the groups the node belongs to: matrix groups ``gl:<i>`` (index into
                 the analysis's ``matrix_symmetries``) and diagonal families ``<kind>:<layer>`` (one id per
                 kind and layer, not one per channel)
  ``n_groups``   how many ids ``groups`` lists
  ``label_axes`` the axes along which the matrix pass's producer labels vary (the feature axes it tracked:
                 "2" for a Linear's [B, S, F] output, "1,3" for heads after view + transpose), else ""
  ``matrix_blocks`` the first reason this op stopped producer labels (``aten.gelu``, "query or key without
                 its partner", ...), else ""
Graph attributes: ``matrix_groups`` (JSON: id → note, layer, r, subgroup) and ``families`` (JSON: id → count).
An op node belongs to a group when it reads one of the group's parameters.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import networkx as nx

GRAPH_SUFFIXES = (".graphml", ".json")
HIDDEN_OPS = ("aten._assert_tensor_metadata", "aten._assert_scalar")
FEATURE_AXIS = {"aten.linear": -1, "aten.addmm": -1, "aten.embedding": -1, "aten.conv1d": 1, "aten.conv2d": 1,
                "aten.conv3d": 1, "aten.convolution": 1}


def export_graph(analysis: Any) -> nx.DiGraph:
    """A copy of the analysis graph with the attributes above (plain types only)."""
    g: nx.DiGraph = analysis.graph
    member_groups: dict[str, list[str]] = {}
    matrix_info = {}
    for i, s in enumerate(analysis.matrix_symmetries):
        gid = f"gl:{i}"
        matrix_info[gid] = {"note": s.note, "layer": s.layer, "r": s.r, "subgroup": s.basis is not None}
        for m in s.members:
            ids = member_groups.setdefault(m.param, [])
            if gid not in ids:                     # a parameter can hold several members of one group
                ids.append(gid)
    families: dict[str, int] = {}
    for s in analysis.symmetries:
        fid = f"{s.kind}:{s.layer}"
        families[fid] = families.get(fid, 0) + 1
        for m in s.members:
            ids = member_groups.setdefault(m.param, [])
            if fid not in ids:
                ids.append(fid)
    out = nx.DiGraph(matrix_groups=json.dumps(matrix_info), families=json.dumps(families),
                     loss=str(getattr(analysis, "loss", "")))
    for n, d in g.nodes(data=True):
        if d.get("target") in HIDDEN_OPS:
            continue
        shape = d.get("shape")
        groups = list(member_groups.get(d.get("param") or "", [])) if d["kind"] == "param" else []
        out.add_node(n, kind=d["kind"], op=d.get("target") or d["kind"], param=d.get("param") or "",
                     shape="x".join(map(str, shape)) if shape else "", ndim=len(shape) if shape else -1,
                     feature_axis="" if d.get("target") not in FEATURE_AXIS else str(FEATURE_AXIS[d["target"]]),
                     groups=";".join(groups), n_groups=len(groups), label_axes=d.get("label_axes", ""),
                     matrix_blocks=d.get("matrix_blocks", ""))
    for u, v in g.edges():
        if u in out and v in out:
            out.add_edge(u, v)
    for n, d in out.nodes(data=True):              # a layer op belongs to the groups of the parameters it reads
        if d["kind"] == "op":
            ids: list[str] = []
            for p in out.predecessors(n):
                if out.nodes[p]["kind"] == "param":
                    ids += [x for x in out.nodes[p]["groups"].split(";") if x and x not in ids]
            d["groups"], d["n_groups"] = ";".join(ids), len(ids)
    return out


def write_graph(analysis: Any, path: str | Path) -> nx.DiGraph:
    """GraphML (``.graphml``) or node-link JSON (``.json``); the suffix is checked before anything is written."""
    path = Path(path)
    if path.suffix.lower() not in GRAPH_SUFFIXES:
        raise ValueError(f"--graph file must end in .graphml or .json, got {path.name!r}")
    g = export_graph(analysis)
    if path.suffix.lower() == ".graphml":
        nx.write_graphml(g, path)
    else:
        path.write_text(json.dumps(nx.node_link_data(g, edges="links"), indent=1))
    return g


def read_graph(path: str | Path) -> nx.DiGraph:
    """Read back what :func:`write_graph` wrote (either format)."""
    path = Path(path)
    if path.suffix.lower() == ".graphml":
        return nx.read_graphml(path)
    return nx.node_link_graph(json.loads(path.read_text()), edges="links")
