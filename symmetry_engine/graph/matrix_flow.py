"""Where each output feature of a parameterised layer goes: the label flow behind the matrix symmetries.

Why labels: a GL(r) symmetry acts on r output features of a *producer* (Linear, Conv, addmm, embedding)
by an invertible M.  It is exact when every path from those features ends where M can be undone — the
input columns of a *consumer* layer (act M⁻ᵀ), or a query/key contraction whose other side carries M⁻ᵀ —
and everything on the way commutes with M.  Instead of pattern-matching attention code, the pass runs
each data-movement op (view, transpose, unflatten, split, expand, cat, ...) on integer *label* tensors of
the real shapes: every element knows which producer feature it copies (``code`` = 2·label + negated) and
which producer vector (``row``) it came from.  Head splits, packed in-projections, grouped-query
``expand`` and rotate-half are then read off the labels, not guessed.

Rules (fail closed: anything else *blocks* every label it carries, and the reason is counted):
* data movement and ±scalar multiples are transparent; so is a product with a one-element tensor;
* a consumer (linear / addmm / mm with a parameter / conv with groups = 1) takes fibers along its input
  feature axis; they must show the same label pattern everywhere;
* ``matmul(A, B)`` / ``scaled_dot_product_attention``: labeled A and B (queries, keys) form a Q/K
  contraction — the logits are invariant, the probabilities carry no labels; an unlabeled A times a
  labeled B (probabilities × values) keeps B's labels on its free axis (every key row must carry the same
  pattern) and starts a new row per output vector;
* rotary embeddings ``x·C + rot(x)·S`` (rot a signed pairing of x's last axis, C and S provably equal on
  paired positions) keep x's labels and record the pairs: only M commuting with the rotations survive.

The records live in ``matrix_labels.py``, the attention ends in ``attention.py``; ``matrix.py`` groups them.
"""

from __future__ import annotations

from typing import Any

import networkx as nx
import numpy as np
import torch

from .attention import AttentionEnds
from .capture import CapturedGraph
from .matrix_labels import (ConsumerUse, Flow, FlowResult, Source, _fibers, _kw, _negate, _param_rows,
                            _single_use_param)
from .scaling import arg, tensor_arg

#: Ops that copy elements around (run on the label tensors as they are).
MOVE_OPS = frozenset("""aten.view aten.reshape aten._unsafe_view aten.flatten aten.unflatten aten.transpose aten.t
aten.permute aten.unsqueeze aten.squeeze aten.select aten.slice aten.narrow aten.expand aten.cat aten.concat
aten.concatenate aten.stack aten.split aten.split_with_sizes aten.chunk aten.unbind aten.repeat aten.movedim
aten.swapaxes aten.repeat_interleave aten.unsafe_split aten.unsafe_chunk""".split())
#: Ops that are the identity on values.
IDENTITY_OPS = frozenset("aten.clone aten.contiguous aten.alias aten.identity aten.lift_fresh_copy".split())
CAST_OPS = frozenset("aten._to_copy aten.to aten.type_as".split())
LIST_OPS = frozenset("aten.cat aten.concat aten.concatenate aten.stack".split())
CONV_OPS = frozenset("aten.conv1d aten.conv2d aten.conv3d aten.convolution".split())
FLOAT_DTYPES = frozenset("float16 float32 float64 bfloat16 half float double".split())
DTYPE_NAMES = FLOAT_DTYPES | frozenset("""int8 int16 int32 int64 uint8 bool complex64 complex128 float8_e4m3fn
float8_e5m2 long int short""".split())
#: Ops without a data output (shape assertions): they neither block nor carry labels.
NO_OUTPUT_OPS = frozenset("aten._assert_tensor_metadata aten._assert_scalar aten.sym_constrain_range_for_size".split())


def _node_refs(a: Any) -> list[str]:
    """Every graph node referenced in ``a`` (nested lists included): sizes or indices only known at run time."""
    if isinstance(a, tuple) and len(a) == 2 and a[0] == "node":
        return [a[1]]
    if isinstance(a, (list, tuple)):
        return [n for x in a for n in _node_refs(x)]
    return []


class _Propagate(AttentionEnds):
    def __init__(self, cg: CapturedGraph):
        self.cg, self.g = cg, cg.graph
        self.flows: dict[str, Any] = {}
        self.res = FlowResult()
        self.next_label = 0
        self.current: str | None = None
        for _, d in self.g.nodes(data=True):            # annotations of a previous pass on this graph
            d.pop("label_axes", None)
            d.pop("matrix_blocks", None)
        self.next_row = 0

    # -- bookkeeping ---------------------------------------------------------------------------------
    def block(self, flow: Flow | list | None, reason: str) -> None:
        flows = flow if isinstance(flow, (list, tuple)) else [flow]
        for f in flows:
            if f is None:
                continue
            labels = f.labels()
            if len(labels):
                new = set(labels.tolist()) - self.res.blocked
                self.res.blocked |= new
                if new:
                    self.res.reasons[reason] = self.res.reasons.get(reason, 0) + len(new)
                    if self.current is not None:           # the graph export shows where labels stop
                        self.g.nodes[self.current].setdefault("matrix_blocks", reason)

    def fresh_rows(self, n: int) -> torch.Tensor:
        out = torch.arange(self.next_row, self.next_row + n, dtype=torch.int64)
        self.next_row += n
        return out

    # -- sources -------------------------------------------------------------------------------------
    def source(self, name: str, d: dict) -> tuple[str, int, str | None, int, int] | None:
        """(weight, weight axis, bias, feature axis of the output, bias row offset) when ``name`` produces."""
        t, args = d["target"], d["args"]
        if t == "aten.linear":
            w, b = _single_use_param(self.g, arg(args, 1)), arg(args, 2)
            return self._src(w, 0, b, -1)
        if t == "aten.addmm":
            if any(_kw(d, k, 99, 1) != 1 for k in ("beta", "alpha")):
                return None
            w = _single_use_param(self.g, arg(args, 2))
            bshape = self.g.nodes[tensor_arg(arg(args, 0))]["shape"] if tensor_arg(arg(args, 0)) else None
            if bshape is None or len(bshape) != 1:
                return None
            return self._src(w, 1, arg(args, 0), -1)
        if t in ("aten.mm", "aten.matmul") and tensor_arg(arg(args, 1)):
            w = _single_use_param(self.g, arg(args, 1))
            if w is None or len(self.cg.param_shapes[w]) != 2:
                return None
            return self._src(w, 1, None, -1)
        if t in CONV_OPS and self._conv_plain(d):
            w = _single_use_param(self.g, arg(args, 1))
            return self._src(w, 0, arg(args, 2), 1)
        if t == "aten.embedding" and arg(args, 2, -1) in (-1, None) and not arg(args, 3, False):
            # a padding row (its gradient forced to 0) or frequency-scaled gradients are not the loss's gradient
            w = _single_use_param(self.g, arg(args, 0))
            return self._src(w, 1, None, -1)
        return None

    def _src(self, w: str | None, w_axis: int, bias_arg: Any, feat_axis: int):
        if w is None:
            return None
        if bias_arg is None:
            return w, w_axis, None, feat_axis, 0
        b = _param_rows(self.g, bias_arg)
        return None if b is None else (w, w_axis, b[0], feat_axis, b[1])

    def _conv_plain(self, d: dict) -> bool:
        t, args = d["target"], d["args"]
        if t == "aten.convolution":
            return not arg(args, 6, False) and arg(args, 8, 1) == 1
        return _kw(d, "groups", 6, 1) == 1

    def start(self, name: str, d: dict, spec: tuple) -> None:
        w, w_axis, b, axis, b_off = spec
        shape = d["shape"]
        size = self.cg.param_shapes[w][w_axis]
        if shape is None or shape[axis] != size:
            return
        axis = axis % len(shape)
        first = self.next_label
        self.next_label += size
        self.res.sources.append(Source(name, w, w_axis, b, first, size, d["target"], b_off))
        view = [1] * len(shape)
        view[axis] = size
        code = ((torch.arange(size) + first) * 2).reshape(view).expand(shape).contiguous()
        other = [s for i, s in enumerate(shape) if i != axis]
        rows = self.fresh_rows(int(np.prod(other, dtype=np.int64)) if other else 1)
        row = rows.reshape(other).unsqueeze(axis).expand(shape).contiguous()
        self.flows[name] = Flow(code, row)

    # -- the walk ------------------------------------------------------------------------------------
    def run(self) -> FlowResult:
        remaining = {n: self.g.out_degree(n) for n in self.g}    # label tensors are freed after their last user
        for name in nx.topological_sort(self.g):
            self.visit(name)
            for p in self.g.predecessors(name):
                remaining[p] -= 1
                if remaining[p] == 0:
                    self.flows.pop(p, None)
        return self.res

    def visit(self, name: str) -> None:
        self.current = name
        self._visit(name)
        f = self.flows.get(name)
        if isinstance(f, Flow) and f.code.ndim:         # axes along which labels vary: the feature axes here
            axes = [i for i in range(f.code.ndim) if f.code.shape[i] > 1
                    and bool((f.code != f.code.narrow(i, 0, 1)).any())]
            self.g.nodes[name]["label_axes"] = ",".join(map(str, axes))

    def _visit(self, name: str) -> None:
        d = self.g.nodes[name]
        if d["kind"] in ("loss", "output"):
            for p in self.g.predecessors(name):
                self.block(self.flows.get(p), "reaches the model output")
            return
        if d["kind"] == "op":
            ins = {p: self.flows[p] for p in self.g.predecessors(name) if p in self.flows}
            if ins:
                try:
                    out = self.step(name, d, ins)
                except (RuntimeError, ValueError, TypeError, IndexError) as exc:  # label op failed: block
                    self.block(list(ins.values()), f"{d['target']} (labels: {type(exc).__name__})")
                    out = None
                if out is not None:
                    self.flows[name] = out
            try:
                spec = self.source(name, d)
                if spec is not None and name not in self.flows:
                    self.start(name, d, spec)
            except (RuntimeError, ValueError, TypeError, IndexError, KeyError):   # unusual args: not a producer
                self.flows.pop(name, None)

    def step(self, name: str, d: dict, ins: dict[str, Any]) -> Any:
        t, args = d["target"], d["args"]
        data = tensor_arg(arg(args, 0))
        if t in NO_OUTPUT_OPS:
            return None
        if t == "getitem":
            src = ins.get(data)
            return src[arg(args, 1)] if isinstance(src, list) else self._blocked(ins, t)
        if any(isinstance(f, list) for f in ins.values()):
            return self._blocked(ins, f"{t} on a tuple")
        if any(f.scaled is not None for f in ins.values()) and t not in ("aten.add", "aten.sub"):
            return self._blocked(ins, f"{t} after a product with a tensor")
        if t in ("aten.linear", "aten.addmm", "aten.mm", "aten.matmul", "aten.bmm") or t in CONV_OPS:
            return self.affine(name, d, ins)
        if t == "aten.scaled_dot_product_attention":
            return self.sdpa(name, d, ins)
        if t == "aten.einsum":
            return self.einsum(name, d, ins)
        if t == "aten.baddbmm":                        # β·input + α·A@B: an unlabeled input adds to the logits
            if tensor_arg(arg(args, 0)) in ins or _kw(d, "alpha", 4, 1) == 0:
                return self._blocked(ins, "baddbmm with labeled input or alpha 0")
            return self.matmul(name, d, ins, first=1)
        if t in IDENTITY_OPS and set(ins) == {data}:
            return ins[data]
        if t in CAST_OPS and set(ins) == {data}:
            dtypes = [v for v in list(args[1:]) + list(d.get("kwargs", {}).values())
                      if isinstance(v, str) and v.startswith("torch.") and v[6:] in DTYPE_NAMES]
            exact = all(v[6:] in FLOAT_DTYPES for v in dtypes)
            return ins[data] if exact else self._blocked(ins, f"{t} to a non-floating dtype")
        if t in ("aten.mul", "aten.div", "aten.neg"):
            return self.scalar(name, d, ins)
        if t in ("aten.add", "aten.sub"):
            return self.add(name, d, ins)
        if t in MOVE_OPS or (t == "aten.constant_pad_nd" and arg(args, 2, 0) == 0):
            return self.move(name, d, ins)
        return self._blocked(ins, t)

    def _blocked(self, ins: dict[str, Any], reason: str) -> None:
        self.block(list(ins.values()), reason)
        return None

    # -- transparent ops -----------------------------------------------------------------------------
    def move(self, name: str, d: dict, ins: dict[str, Flow]) -> Any:
        t = d["target"]
        tensor_args = _node_refs(list(d["args"][1:]) + list(d.get("kwargs", {}).values()))
        if t not in LIST_OPS and (set(ins) != {tensor_arg(arg(d["args"], 0))} or tensor_args):
            return self._blocked(ins, f"{t} with a tensor index/size/repeats argument")
        op = getattr(torch.ops.aten, t.split(".", 1)[1])
        outs = []
        for part in ("code", "row"):
            args = self._substitute(d["args"], ins, part)
            kwargs = {k: v for k, v in d.get("kwargs", {}).items() if not (isinstance(v, tuple) and v[:1] == ("node",))}
            outs.append(op(*args, **kwargs))
        code, row = outs
        base = next(iter(ins.values()))
        if isinstance(code, (list, tuple)):
            return [Flow(c.contiguous(), r.contiguous(), base.pv, base.rope) for c, r in zip(code, row)]
        if d["shape"] is not None and tuple(code.shape) != tuple(d["shape"]):
            return self._blocked(ins, f"{t} (label shape mismatch)")
        rope = frozenset().union(*(f.rope for f in ins.values()))
        return Flow(code.contiguous(), row.contiguous(), any(f.pv for f in ins.values()), rope)

    def _substitute(self, a: Any, ins: dict[str, Flow], part: str) -> Any:
        if isinstance(a, tuple) and len(a) == 2 and a[0] == "node":
            if a[1] in ins:
                return getattr(ins[a[1]], part)
            shape = self.g.nodes[a[1]]["shape"]
            if shape is None:
                raise ValueError("unknown shape")
            return torch.full(shape, -1, dtype=torch.int64)
        if isinstance(a, (list, tuple)):
            return type(a)(self._substitute(x, ins, part) for x in a)
        return a

    def scalar(self, name: str, d: dict, ins: dict[str, Flow]) -> Any:
        t, args = d["target"], d["args"]
        x = tensor_arg(arg(args, 0))
        if t == "aten.neg":
            return _negate(ins[x]) if x in ins else None
        if len(ins) != 1:
            return self._blocked(ins, f"{t} of two labeled tensors")
        (src, f), = ins.items()
        if t == "aten.div" and src != x:
            return self._blocked(ins, "division by a labeled tensor")
        other = arg(args, 1) if src == x else arg(args, 0)
        if isinstance(other, (int, float)) and not isinstance(other, bool):
            if other == 0 or (other != other):
                return self._blocked(ins, f"{t} by {other}")
            return _negate(f) if other < 0 else f
        o = tensor_arg(other)
        oshape = self.g.nodes[o]["shape"] if o is not None else None
        if oshape is not None and int(np.prod(oshape, dtype=np.int64)) == 1:
            return f                                  # one number for every element commutes with M
        if t == "aten.mul" and o is not None:
            return Flow(f.code, f.row, f.pv, f.rope, scaled=o)   # half of a rotary embedding, or blocks
        return self._blocked(ins, f"{t} by a tensor")

    def add(self, name: str, d: dict, ins: dict[str, Flow]) -> Any:
        """Only the rotary form x·C ± rot(x)·S is transparent (a shift or a sum of two features is not)."""
        a, b = tensor_arg(arg(d["args"], 0)), tensor_arg(arg(d["args"], 1))
        alpha = _kw(d, "alpha", 2, 1)
        if a not in ins or b not in ins or alpha not in (1, -1):
            if arg(d["args"], 1) == 0 and a in ins and ins[a].scaled is None:
                return ins[a]
            return self._blocked(ins, f"{d['target']}: shift or sum with unlabeled values")
        fa, fb = ins[a], ins[b]
        if fa.scaled is None or fb.scaled is None:
            return self._blocked(ins, f"{d['target']} of two labeled tensors")
        out = self.rotary(fa, fb)
        if out is None:
            out = self.rotary(fb, fa)
        return out if out is not None else self._blocked(ins, "rotary embedding not recognised")

    def affine(self, name: str, d: dict, ins: dict[str, Flow]) -> Any:
        t, args = d["target"], d["args"]
        data_pos = 1 if t == "aten.addmm" else 0
        x = tensor_arg(arg(args, data_pos))
        if t in ("aten.matmul", "aten.bmm", "aten.mm") and not self.source(name, d):
            return self.matmul(name, d, ins)
        spec = self.source(name, d)
        others = [n for n in ins if n != x]
        if others or x not in ins:
            return self._blocked(ins, f"{t}: labeled weight or bias")
        if spec is None:
            return self._blocked(ins, f"{t}: weight shared or not a parameter, or grouped/transposed convolution")
        w, w_axis = spec[0], spec[1]
        in_axis = 1 - w_axis if t not in CONV_OPS else 1
        feat_axis = 1 if t in CONV_OPS else -1
        groups = _fibers(ins[x], feat_axis)
        if groups is None:
            return self._blocked(ins, f"{t}: input features mixed across vectors")
        self.res.consumers.append(ConsumerUse(name, w, in_axis, groups, ins[x].pv, ins[x].rope))
        return None


def propagate(cg: CapturedGraph) -> FlowResult:
    """Label flow of every producer in ``cg`` (see the module docstring)."""
    return _Propagate(cg).run()
