"""Attention ends of the label flow: query/key contractions, probabilities × values, rotary embeddings.

Why separate: these are the only places where two labeled tensors meet or where an unlabeled tensor
(the probabilities, the cos/sin tables) multiplies a labeled one.  Read by ``matrix_flow._Propagate``:
``matmul``/``bmm``/``baddbmm``/two-operand ``einsum``/``scaled_dot_product_attention`` with both sides
labeled are contractions (the logits are invariant, nothing labeled comes out); with one side labeled
they are probabilities × values (the labels pass on the free axis, with a new row per output vector);
``x·C ± rot(x)·S`` is a rotary embedding when rot is a signed pairing and C, S are proved pair-symmetric.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .matrix_labels import Flow, QKUse, _kw, _one_row_per_fiber, _patterns, _repeat_heads
from .rotary import pair_symmetric
from .scaling import arg, tensor_arg


class AttentionEnds:
    """Mixin of ``matrix_flow._Propagate`` (uses its ``g``, ``res``, ``block``, ``_blocked``, ``fresh_rows``)."""

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
