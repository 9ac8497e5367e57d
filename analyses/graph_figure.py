"""Draw an exported analysis graph (``symmetry_engine.graph.export``) with its symmetry groups marked.

Layout: data flows left to right in columns (longest path from the inputs), parameters sit in the column
before the layer that reads them.  Each matrix group (GL(r) pair, attention head) gets a colour: its
parameters and layer ops are filled with it and listed in the legend with their note; nodes that carry
only diagonal families (scale, rescale, translation) get a grey-blue fill; ops outside every group stay
white; a red outline marks an op where the matrix pass stopped.  Plumbing without data (shape assertions, constant buffers) is left out.
"""

from __future__ import annotations

import json
from pathlib import Path

import networkx as nx

PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324", "#800000",
           "#469990", "#808000", "#000075", "#bfef45", "#fabed4", "#ffd8b1", "#dcbeff", "#aaffc3", "#a9a9a9"]
DIAGONAL = "#c9d6ea"
STOP = "#d62728"
BAND = 32
MAX_INDIVIDUAL = 12


def _kind(info: dict) -> str:
    note = info["note"]
    kind = "query/key" if "query/key" in note else "value/output" if "value/output" in note else \
        note.split(" (")[0]
    return kind + (" (rotary subgroup)" if info["subgroup"] else "")


def _label(d: dict) -> str:
    if d["kind"] == "param":
        parts = d["param"].split(".")
        return ".".join(parts[-2:]) if len(parts) > 2 else d["param"]
    if d["kind"] in ("input", "loss"):
        return d["kind"] if d["kind"] == "input" else d["op"].replace("loss.", "loss: ")
    return d["op"].replace("aten.", "").replace("scaled_dot_product_attention", "sdpa")


def _columns(g: nx.DiGraph) -> dict[str, int]:
    col: dict[str, int] = {}
    for n in nx.topological_sort(g):
        preds = [col[p] + 1 for p in g.predecessors(n) if g.nodes[p]["kind"] not in ("param",)]
        col[n] = max(preds, default=0)
    for n, d in g.nodes(data=True):           # a parameter one column before its first reader
        if d["kind"] == "param":
            readers = [col[s] for s in g.successors(n)]
            col[n] = max(min(readers, default=1) - 1, 0)
    return col


def draw_graph(g: nx.DiGraph, path: str | Path, title: str = "") -> list[Path]:
    """Write ``path`` with suffix .svg and .png; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    keep = [n for n, d in g.nodes(data=True) if d["kind"] not in ("buffer", "const")]
    h = g.subgraph(keep).copy()
    col = _columns(h)
    by_col: dict[int, list[str]] = {}
    for n in nx.topological_sort(h):
        by_col.setdefault(col[n], []).append(n)
    # long graphs are folded into bands of BAND columns, read top band first (like lines of text)
    pos, offset = {}, 0.0
    ncols = max(by_col) + 1
    for band in range(0, ncols, BAND):
        cols = [c for c in range(band, min(band + BAND, ncols)) if c in by_col]
        height = max(len(by_col[c]) for c in cols)
        for c in cols:
            nodes = by_col[c]
            for i, n in enumerate(nodes):
                pos[n] = (c - band, offset - (i - (len(nodes) - 1) / 2))
        offset -= height + 2.5
    groups = json.loads(g.graph.get("matrix_groups", "{}"))
    # few groups: one colour each; many (a transformer's heads): one colour per kind of group
    per_group = len(groups) <= MAX_INDIVIDUAL
    kinds = {gid: _kind(info) for gid, info in groups.items()}
    kind_colour = {k: PALETTE[i] for i, k in enumerate(dict.fromkeys(sorted(kinds.values())))}
    colour = {gid: (PALETTE[i % len(PALETTE)] if per_group else kind_colour[kinds[gid]]) for i, gid in enumerate(groups)}
    width, depth = min(ncols, BAND), -offset
    fig, ax = plt.subplots(figsize=(max(8.0, 0.85 * width + 5), min(max(5.0, 0.5 * depth + 1.5), 80.0)))
    for u, v in h.edges():
        (x0, y0), (x1, y1) = pos[u], pos[v]
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                    arrowprops=dict(arrowstyle="-|>", color="#9aa0a6", lw=0.6, shrinkA=6, shrinkB=6))
    for n, d in h.nodes(data=True):
        ids = [x for x in d.get("groups", "").split(";") if x]
        gl = [x for x in ids if x.startswith("gl:")]
        face = colour[gl[0]] if gl else (DIAGONAL if ids else "white")
        x, y = pos[n]
        marker = "s" if d["kind"] == "param" else ("D" if d["kind"] in ("input", "loss") else "o")
        stops = bool(d.get("matrix_blocks"))
        ax.scatter([x], [y], s=170, marker=marker, c=face, edgecolors=STOP if stops else "#333333",
                   linewidths=2.0 if stops else 0.8, zorder=3)
        rings = list(dict.fromkeys(colour[x] for x in gl[1:] if colour[x] != face))[:3]
        for k, ring in enumerate(rings):          # groups of other colours as rings
            ax.scatter([x], [y], s=260 + 120 * k, marker=marker, facecolors="none", edgecolors=ring,
                       linewidths=1.6, zorder=2)
        text = _label(d) + (f" ×{len(gl)}" if len(gl) > 1 else "")
        above = d["kind"] == "param"                # parameter names above, op names below: fewer collisions
        ax.annotate(text, (x, y), xytext=(0, 9 if above else -11), textcoords="offset points", ha="center",
                    va="bottom" if above else "top", fontsize=6.5, zorder=4)
    if per_group:
        handles = [Line2D([], [], marker="o", ls="", markerfacecolor=colour[gid], markeredgecolor="#333333",
                          label=f"{gid}  {'.'.join(info['layer'].split('.')[-3:])}: "
                                f"{info['note'].replace(' (rotary: commutant of the rotations)', ', rotary')}"
                                + (" [subgroup]" if info["subgroup"] else f" GL({info['r']})"))
                   for gid, info in groups.items()]
    else:
        counts: dict[str, int] = {}
        for k in kinds.values():
            counts[k] = counts.get(k, 0) + 1
        handles = [Line2D([], [], marker="o", ls="", markerfacecolor=c, markeredgecolor="#333333",
                          label=f"{k}: {counts[k]} groups") for k, c in kind_colour.items()]
    handles.append(Line2D([], [], marker="o", ls="", markerfacecolor=DIAGONAL, markeredgecolor="#333333",
                          label="scale / rescale / translation families only"))
    handles.append(Line2D([], [], marker="o", ls="", markerfacecolor="white", markeredgecolor=STOP, markeredgewidth=2,
                          label="red outline: stops the matrix pass (reason in the graph file's matrix_blocks)"))
    handles.append(Line2D([], [], marker="s", ls="", markerfacecolor="white", markeredgecolor="#333333",
                          label="square: parameter   circle: op   diamond: input / loss"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False,
              title=f"{len(groups)} matrix groups" + ("" if per_group else " (colour = kind; ×n = groups on a node)"),
              title_fontsize=8)
    ax.set_title(title or "analysed computation graph", fontsize=10)
    ax.axis("off")
    ax.margins(0.04)
    fig.tight_layout()
    out = []
    for suffix in (".svg", ".png"):
        target = Path(path).with_suffix(suffix)
        fig.savefig(target, dpi=130, bbox_inches="tight")
        out.append(target)
    plt.close(fig)
    return out
