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
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np
import torch

from .capture import CapturedGraph
from .rotary import pair_symmetric
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


@dataclass
class Flow:
    """Labels of one tensor: ``code`` 2·label (+1 when negated) or −1; ``row`` producer vector id or −1."""

    code: torch.Tensor
    row: torch.Tensor
    pv: bool = False                                  # passed a probabilities × values product
    rope: frozenset = frozenset()                     # label pairs rotated together
    scaled: str | None = None                         # times this unlabeled tensor (half of a rotary)

    def labels(self) -> np.ndarray:
        """The labels present (a bincount: −1 >> 1 = −1 lands in bin 0)."""
        if self.code.numel() == 0:
            return np.zeros(0, dtype=np.int64)
        counts = torch.bincount((self.code.reshape(-1) >> 1) + 1)
        return (counts[1:].nonzero().flatten()).numpy()


@dataclass(frozen=True)
class Source:
    """A producer: ``size`` output features labeled ``first .. first + size − 1``."""

    node: str
    weight: str
    weight_axis: int                                   # the weight axis indexed by output features
    bias: str | None
    first: int
    size: int
    op: str


@dataclass
class ConsumerUse:
    """Fibers of a consumer's input: per group of one producer row, (labels, positions) per copy."""

    node: str
    weight: str
    weight_axis: int
    groups: list[tuple[tuple[int, ...], tuple[int, ...]]]
    pv: bool
    rope: frozenset


@dataclass
class QKUse:
    """A query/key contraction: the distinct (query labels, key labels) fiber pairs, position-aligned."""

    node: str
    pairs: list[tuple[tuple[int, ...], tuple[int, ...]]]
    rope: frozenset


@dataclass
class FlowResult:
    sources: list[Source] = field(default_factory=list)
    consumers: list[ConsumerUse] = field(default_factory=list)
    qk: list[QKUse] = field(default_factory=list)
    blocked: set[int] = field(default_factory=set)
    reasons: dict[str, int] = field(default_factory=dict)

    def source_of(self, label: int) -> Source:
        i = bisect.bisect_right([s.first for s in self.sources], label) - 1   # sources are in label order
        if i < 0 or label >= self.sources[i].first + self.sources[i].size:
            raise KeyError(label)
        return self.sources[i]


def _single_use_param(g: nx.DiGraph, a: Any) -> str | None:
    n = tensor_arg(a)
    if n is None or g.nodes[n]["kind"] != "param" or g.out_degree(n) != 1:
        return None
    return g.nodes[n]["param"]


def _kw(d: dict, name: str, pos: int, default: Any = None) -> Any:
    return d.get("kwargs", {}).get(name, arg(d["args"], pos, default))


class _Propagate:
    def __init__(self, cg: CapturedGraph):
        self.cg, self.g = cg, cg.graph
        self.flows: dict[str, Any] = {}
        self.res = FlowResult()
        self.next_label = 0
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

    def fresh_rows(self, n: int) -> torch.Tensor:
        out = torch.arange(self.next_row, self.next_row + n, dtype=torch.int64)
        self.next_row += n
        return out

    # -- sources -------------------------------------------------------------------------------------
    def source(self, name: str, d: dict) -> tuple[str, int, str | None, int] | None:
        """(weight, weight axis, bias, feature axis of the output) when ``name`` is a producer."""
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
            return w, w_axis, None, feat_axis
        b = _single_use_param(self.g, bias_arg)
        return None if b is None else (w, w_axis, b, feat_axis)

    def _conv_plain(self, d: dict) -> bool:
        t, args = d["target"], d["args"]
        if t == "aten.convolution":
            return not arg(args, 6, False) and arg(args, 8, 1) == 1
        return _kw(d, "groups", 6, 1) == 1

    def start(self, name: str, d: dict, spec: tuple) -> None:
        w, w_axis, b, axis = spec
        shape = d["shape"]
        size = self.cg.param_shapes[w][w_axis]
        if shape is None or shape[axis] != size:
            return
        axis = axis % len(shape)
        first = self.next_label
        self.next_label += size
        self.res.sources.append(Source(name, w, w_axis, b, first, size, d["target"]))
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
            spec = self.source(name, d)
            if spec is not None and name not in self.flows:
                self.start(name, d, spec)

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
        tensor_args = [tensor_arg(a) for a in d["args"][1:] if tensor_arg(a) is not None]
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

    def rotary(self, fa: Flow, fb: Flow) -> Flow | None:
        """fa = x·C, fb = rot(x)·S with rot a signed pairing π of the last axis: y_u = c x_u − s x_w,
        y_w = c x_w + s x_u on each pair (u, w) — a rotation, so M must commute with J on the pair."""
        if fa.code.shape != fb.code.shape or fa.code.ndim == 0 or (fa.code < 0).any() or (fb.code < 0).any():
            return None
        if not torch.equal(fa.row, fb.row):
            return None
        n = fa.code.shape[-1]
        la, lb = (fa.code >> 1).reshape(-1, n), (fb.code >> 1).reshape(-1, n)
        sa, sb = 1 - 2 * (fa.code & 1).reshape(-1, n), 1 - 2 * (fb.code & 1).reshape(-1, n)
        perm = (lb.unsqueeze(2) == la.unsqueeze(1)).float().argmax(2)      # fb[j] copies fa[perm[j]]
        if not (torch.gather(la, 1, perm) == lb).all() or not (perm == perm[:1]).all():
            return None
        p = perm[0]
        idx = torch.arange(n)
        if (p == idx).any() or not torch.equal(p[p], idx):
            return None                                # an involution without fixed points: pairs
        if not ((sa == sa[:1]).all() and (sb == sb[:1]).all()):
            return None
        if not ((sa[0] == sa[0][p]).all() and (sb[0] == -sb[0][p]).all()):
            return None                                # c·I on each pair plus s·J (antisymmetric)
        plist = p.tolist()
        if not (pair_symmetric(self.g, fa.scaled, plist) and pair_symmetric(self.g, fb.scaled, plist)):
            return None
        uniq = torch.unique(la, dim=0).tolist()
        pairs = {tuple(sorted((r[j], r[plist[j]]))) for r in uniq for j in range(n)}
        return Flow(fa.code, fa.row, fa.pv or fb.pv, fa.rope | fb.rope | frozenset(pairs))

    # -- endpoints -----------------------------------------------------------------------------------
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

    def matmul(self, name: str, d: dict, ins: dict[str, Flow], first: int = 0) -> Any:
        a, b = tensor_arg(arg(d["args"], first)), tensor_arg(arg(d["args"], first + 1))
        sa, sb = self.g.nodes[a]["shape"], self.g.nodes[b]["shape"]
        if sa is None or sb is None or len(sa) < 2 or len(sb) < 2:
            return self._blocked(ins, f"{d['target']} of vectors")
        if a in ins and b in ins:
            return self.contraction(name, ins[a], ins[b].code.transpose(-1, -2), ins[b].row.transpose(-1, -2),
                                    ins[b].rope, ins)
        if b in ins:
            return self.values(name, d, ins[b], ins)
        return self._blocked(ins, f"{d['target']}: features contracted with an unlabeled matrix")

    def sdpa(self, name: str, d: dict, ins: dict[str, Flow]) -> Any:
        args = d["args"]
        q, k, v = (tensor_arg(arg(args, i)) for i in range(3))
        extra = [n for n in ins if n not in (q, k, v)]
        if extra:
            return self._blocked(ins, "attention mask carries labels")
        if (q in ins) != (k in ins):                   # the logits change; the values may still be fine
            self.block([ins[n] for n in (q, k) if n in ins], "query or key without its partner")
        fk = ins.get(k)
        fv = ins.get(v)
        hq = self.g.nodes[q]["shape"][-3] if len(self.g.nodes[q]["shape"]) >= 3 else None
        if _kw(d, "enable_gqa", 7, False) and hq is not None:
            fk = _repeat_heads(fk, hq) if fk is not None else None
            fv = _repeat_heads(fv, hq) if fv is not None else None
        if q in ins and k in ins:
            self.contraction(name, ins[q], fk.code, fk.row, fk.rope, {q: ins[q], k: ins[k]})
        return self.values(name, d, fv, {v: ins[v]}) if fv is not None else None

    def contraction(self, name: str, fa: Flow, code_b: torch.Tensor, row_b: torch.Tensor, rope_b: frozenset,
                    ins: dict[str, Flow]) -> None:
        """A [..., i, c] · B [..., j, c] (B given with its contracted axis last): logits invariant."""
        try:
            batch = torch.broadcast_shapes(fa.code.shape[:-2], code_b.shape[:-2])
        except RuntimeError:
            return self._blocked(ins, "contraction batch shapes")
        ca = fa.code.expand(*batch, *fa.code.shape[-2:]).reshape(-1, *fa.code.shape[-2:])
        ra = fa.row.expand(*batch, *fa.row.shape[-2:]).reshape(-1, *fa.row.shape[-2:])
        cb = code_b.expand(*batch, *code_b.shape[-2:]).reshape(-1, *code_b.shape[-2:])
        rb = row_b.expand(*batch, *row_b.shape[-2:]).reshape(-1, *row_b.shape[-2:])
        pairs: set[tuple[tuple[int, ...], tuple[int, ...]]] = set()
        for n in range(ca.shape[0]):
            pa, pb = _patterns(ca[n], ra[n]), _patterns(cb[n], rb[n])
            if pa is None or pb is None:
                return self._blocked(ins, "query/key fibers mix vectors")
            for x in pa:
                for y in pb:
                    if [i for i, v in enumerate(x) if v < 0] != [i for i, v in enumerate(y) if v < 0]:
                        return self._blocked(ins, "query/key fibers not aligned")
                    if any(v >= 0 for v in x):
                        pairs.add((tuple(v >> 1 for v in x if v >= 0), tuple(v >> 1 for v in y if v >= 0)))
        self.res.qk.append(QKUse(name, sorted(pairs), fa.rope | rope_b))
        return None

    def einsum(self, name: str, d: dict, ins: dict[str, Flow]) -> Flow | None:
        """Two-operand einsum with one summed letter, read as a query/key contraction (both operands
        labeled) or probabilities × values (one labeled operand with one free letter)."""
        eq, ops = arg(d["args"], 0), arg(d["args"], 1)
        if not isinstance(eq, str) or not isinstance(ops, (list, tuple)) or len(ops) != 2 or "." in eq:
            return self._blocked(ins, "einsum form not modelled")
        lhs, out = eq.replace(" ", "").split("->") if "->" in eq else (None, None)
        if lhs is None or lhs.count(",") != 1:
            return self._blocked(ins, "einsum form not modelled")
        la, lb = lhs.split(",")
        names = [tensor_arg(o) for o in ops]
        shapes = [self.g.nodes[n]["shape"] if n else None for n in names]
        summed = [c for c in la if c in lb and c not in out]
        batch = [c for c in la if c in lb and c in out]
        fa, fb = [c for c in la if c not in lb], [c for c in lb if c not in la]
        simple = all(len(set(x)) == len(x) for x in (la, lb, out)) and set(out) == set(batch + fa + fb)
        if not simple or len(summed) != 1 or None in shapes or not all(c in out for c in fa + fb):
            return self._blocked(ins, "einsum form not modelled")
        c = summed[0]

        def canon(flow: Flow, letters: str, order: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
            perm = [letters.index(x) for x in order]
            return flow.code.permute(perm), flow.row.permute(perm)

        sa, sb = (dict(zip(la, shapes[0])), dict(zip(lb, shapes[1])))
        if names[0] in ins and names[1] in ins:         # query/key: both contracted along c
            ca, ra = canon(ins[names[0]], la, batch + fa + [c])
            cb, rb = canon(ins[names[1]], lb, batch + fb + [c])
            nb = len(batch)
            ca, ra = ca.reshape(*ca.shape[:nb], -1, ca.shape[-1]), ra.reshape(*ra.shape[:nb], -1, ra.shape[-1])
            cb, rb = cb.reshape(*cb.shape[:nb], -1, cb.shape[-1]), rb.reshape(*rb.shape[:nb], -1, rb.shape[-1])
            return self.contraction(name, Flow(ca, ra, rope=ins[names[0]].rope), cb, rb, ins[names[1]].rope, ins)
        (lab_name,) = [n for n in names if n in ins]
        letters, free, other_free = (la, fa, fb) if lab_name == names[0] else (lb, fb, fa)
        if len(free) != 1:
            return self._blocked(ins, "einsum: labeled operand with several free letters")
        code, row = canon(ins[lab_name], letters, batch + [c] + free)
        size = {**sa, **sb}
        shape = [size[x] for x in batch] + [int(np.prod([size[x] for x in other_free], dtype=np.int64))] + [size[free[0]]]
        f = self.values(name, {"shape": tuple(shape)}, Flow(code, row, ins[lab_name].pv, ins[lab_name].rope), ins)
        if f is None:
            return None
        full = [size[x] for x in batch + other_free + free]
        order = [(batch + other_free + free).index(x) for x in out]
        return Flow(f.code.reshape(full).permute(order).contiguous(), f.row.reshape(full).permute(order).contiguous(),
                    True, f.rope)

    def values(self, name: str, d: dict, fv: Flow, ins: dict[str, Flow]) -> Flow | None:
        """P [..., i, j] · V [..., j, c]: every key row j must carry the same labels; new row per output."""
        code, shape = fv.code, d["shape"]
        if shape is None or code.shape[-2] == 0:
            return self._blocked(ins, "values without shape")
        if not (code == code[..., :1, :]).all() or not _one_row_per_fiber(fv.code, fv.row):
            return self._blocked(ins, "value rows carry different labels")
        out_code = code[..., :1, :].expand(*shape[:-2], 1, shape[-1]).expand(shape).contiguous()
        rows = self.fresh_rows(int(np.prod(shape[:-1], dtype=np.int64)))
        row = rows.reshape(shape[:-1]).unsqueeze(-1).expand(shape).contiguous()
        row = torch.where(out_code >= 0, row, torch.full_like(row, -1))
        return Flow(out_code, row, True, fv.rope)


# -- label helpers ---------------------------------------------------------------------------------------
def _negate(f: Flow) -> Flow:
    return Flow(torch.where(f.code >= 0, f.code ^ 1, f.code), f.row, f.pv, f.rope, f.scaled)


def _repeat_heads(f: Flow, heads: int) -> Flow:
    n = heads // f.code.shape[-3]
    return Flow(f.code.repeat_interleave(n, -3), f.row.repeat_interleave(n, -3), f.pv, f.rope)


def _one_row_per_fiber(code: torch.Tensor, row: torch.Tensor) -> bool:
    c, r = code.reshape(-1, code.shape[-1]), row.reshape(-1, row.shape[-1])
    r = torch.where(c >= 0, r, torch.full_like(r, -2))
    first = r.max(1, keepdim=True).values
    return bool(((r == first) | (r == -2)).all())


def _patterns(code: torch.Tensor, row: torch.Tensor) -> set[tuple[int, ...]] | None:
    """Distinct label patterns of the fibers (rows of ``code`` [n, c]); None when a fiber mixes vectors
    or repeats a label."""
    if not _one_row_per_fiber(code, row):
        return None
    out = set()
    for p in torch.unique(code, dim=0).tolist():
        lab = [v >> 1 for v in p if v >= 0]
        if len(set(lab)) != len(lab):
            return None
        out.add(tuple(p))
    return out


def _fibers(f: Flow, axis: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]] | None:
    """Consumer input fibers along ``axis``: the label pattern must be the same in every fiber that has
    labels, and so must the split of its positions by producer vector.  Returns per (vector, copy) group
    its labels and positions."""
    code = f.code.movedim(axis, -1).reshape(-1, f.code.shape[axis])
    row = f.row.movedim(axis, -1).reshape(code.shape)
    live = (code >= 0).any(1)
    if not live.any():
        return []
    code, row = code[live], row[live]
    if not (code == code[:1]).all():
        return None
    # split fiber 0's labeled positions by producer vector (row), then check every fiber splits the same way:
    # same row wherever fiber 0 has the same row, different rows wherever fiber 0's differ
    live0 = (code[0] >= 0).nonzero().flatten()
    _, inv = torch.unique(row[0, live0], return_inverse=True)
    rep0_of_group: dict[int, int] = {}
    for pos, gi in zip(live0.tolist(), inv.tolist()):
        rep0_of_group.setdefault(gi, pos)
    reps = torch.tensor([rep0_of_group[gi] for gi in inv.tolist()], dtype=torch.int64)
    if not (row[:, live0] == row[:, reps]).all():
        return None
    heads = sorted(rep0_of_group.values())
    hr = row[:, heads]
    if len(heads) > 1 and ((hr.unsqueeze(2) == hr.unsqueeze(1)).sum((1, 2)) != len(heads)).any():
        return None
    rep = torch.full((code.shape[1],), -1, dtype=torch.int64)
    rep[live0] = reps
    rep = rep.unsqueeze(0)
    rep0, lab = rep[0].tolist(), (code[0] >> 1).tolist()
    by_rep: dict[int, list[int]] = {}
    for pos, r in enumerate(rep0):
        if code[0, pos] >= 0:
            by_rep.setdefault(r, []).append(pos)
    out = []
    for positions in by_rep.values():
        seen: dict[int, list[int]] = {}
        for pos in positions:
            seen.setdefault(lab[pos], []).append(pos)
        copies = {len(v) for v in seen.values()}
        if len(copies) != 1:
            return None
        labels = tuple(sorted(seen))
        for c in range(copies.pop()):
            out.append((labels, tuple(seen[lbl][c] for lbl in labels)))
    return out


def propagate(cg: CapturedGraph) -> FlowResult:
    """Label flow of every producer in ``cg`` (see the module docstring)."""
    return _Propagate(cg).run()
