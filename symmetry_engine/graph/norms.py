"""Normalizers written out in elementary ops: RMSNorm exported as pow / mean / add ε / rsqrt / mul.

Hugging Face's LlamaRMSNorm (and most hand-written RMSNorms) compute ``x * rsqrt(mean(x², dims) + ε)``
(or ``x / sqrt(…)``), which export keeps as separate ops. Read op by op, ``pow`` blocks every scaling; read
as a whole, the product is invariant under scaling all of ``x``'s entries in each normalization group
together — the scale symmetry of theory.md §8. :func:`rms_patterns` finds these subgraphs so the scaling
pass treats the product as a normalizer and skips its internal ops. The match is strict: every internal
op has exactly one use (its value goes nowhere else), the square is of the same tensor that is
normalized (up to dtype casts and copies), and the mean keeps its reduced axes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .capture import CapturedGraph

_CASTS = frozenset({"aten.to", "aten._to_copy", "aten.clone", "aten.contiguous", "aten.alias", "aten.type_as"})


@dataclass
class RmsPatterns:
    products: dict[str, tuple[str, list[int], float]] = field(default_factory=dict)   # mul/div node → (x, dims, ε)
    internal: set[str] = field(default_factory=set)


def _node_arg(a) -> str | None:
    return a[1] if isinstance(a, tuple) and len(a) == 2 and a[0] == "node" else None


def _strip(cg: CapturedGraph, name: str | None) -> str | None:
    """Back through dtype casts and copies."""
    while name is not None:
        d = cg.graph.nodes[name]
        if d["kind"] != "op" or d["target"] not in _CASTS:
            return name
        name = _node_arg(d["args"][0]) if d["args"] else None
    return name


def _single(cg: CapturedGraph, name: str) -> bool:
    return cg.graph.out_degree(name) == 1


def _match_factor(cg: CapturedGraph, r: str | None, inverse: bool) -> tuple[str, list[int], float, list[str]] | None:
    """``rsqrt(mean(x², dims, keepdim) + ε)`` (``sqrt`` when ``inverse``) → (x, dims, ε, internal nodes)."""
    chain: list[str] = []
    node = r
    while node is not None and cg.graph.nodes[node]["kind"] == "op" and cg.graph.nodes[node]["target"] in _CASTS:
        chain.append(node)
        node = _node_arg(cg.graph.nodes[node]["args"][0])
    if node is None:
        return None
    d = cg.graph.nodes[node]
    if d["kind"] != "op" or d["target"] != ("aten.sqrt" if inverse else "aten.rsqrt"):
        return None
    chain.append(node)
    add = _node_arg(d["args"][0])
    if add is None or cg.graph.nodes[add].get("target") != "aten.add":
        return None
    a_args = cg.graph.nodes[add]["args"]
    eps = a_args[1] if len(a_args) > 1 and isinstance(a_args[1], (int, float)) else None
    if eps is None:
        return None
    chain.append(add)
    mean = _node_arg(a_args[0])
    if mean is None or cg.graph.nodes[mean].get("target") != "aten.mean":
        return None
    m_args = cg.graph.nodes[mean]["args"]
    dims = m_args[1] if len(m_args) > 1 else None
    keep = m_args[2] if len(m_args) > 2 else (cg.graph.nodes[mean].get("kwargs") or {}).get("keepdim", False)
    if dims is None or not keep:
        return None
    dims = [dims] if isinstance(dims, int) else list(dims)
    chain.append(mean)
    sq = _node_arg(m_args[0])
    if sq is None:
        return None
    sd = cg.graph.nodes[sq]
    if sd.get("target") == "aten.pow" and len(sd["args"]) > 1 and sd["args"][1] == 2:
        x = _node_arg(sd["args"][0])
    elif sd.get("target") == "aten.mul" and len(sd["args"]) > 1 and sd["args"][0] == sd["args"][1]:
        x = _node_arg(sd["args"][0])
    else:
        return None
    chain.append(sq)
    if x is None or not all(_single(cg, n) for n in chain):
        return None
    return x, dims, float(eps), chain


def rms_patterns(cg: CapturedGraph) -> RmsPatterns:
    out = RmsPatterns()
    for name, d in cg.graph.nodes(data=True):
        if d["kind"] != "op" or d["target"] not in ("aten.mul", "aten.div") or len(d["args"]) != 2:
            continue
        a, b = (_node_arg(v) for v in d["args"])
        if a is None or b is None:
            continue
        cands = ((a, b), (b, a)) if d["target"] == "aten.mul" else ((a, b),)
        for x, r in cands:
            m = _match_factor(cg, r, inverse=d["target"] == "aten.div")
            if m is None or _strip(cg, m[0]) != _strip(cg, x):
                continue
            out.products[name] = (x, m[1], m[2])
            out.internal.update(m[3])
            break
    return out
