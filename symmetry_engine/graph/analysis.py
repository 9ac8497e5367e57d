"""The analyzer's public entry point: model + example input + loss kind → symmetries (+ certificates)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import networkx as nx
import torch
from torch import nn

from .certify import GRAD_TOL, LOSS_TOL, Certificate, certify
from .matrix_certify import certify_matrix
from .capture import capture
from .detect import detect_symmetries
from ..matrix_symmetry import GLSymmetry
from ..symmetry import Symmetry, count_by_kind


@dataclass
class Analysis:
    symmetries: list[Symmetry]
    graph: nx.DiGraph
    param_shapes: dict[str, tuple[int, ...]]
    loss: str
    capture_method: str
    unknown_ops: list[str]
    norm_eps: float
    blocked_reasons: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    certificates: list[Certificate] | None = None
    matrix_symmetries: list[GLSymmetry] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return count_by_kind(self.symmetries)

    @property
    def all_certified(self) -> bool | None:
        return None if self.certificates is None else all(c.certified for c in self.certificates)

    def _repr_html_(self) -> str:
        """Jupyter: counts per kind and a per-layer table (symmetry_engine/html_repr.py)."""
        from ..html_repr import analysis_html

        return analysis_html(self.to_json())

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": "nmech-analysis/2",
            "loss": self.loss,
            "capture": self.capture_method,
            "counts": self.counts,
            "unknown_ops": self.unknown_ops,
            "normalizer_eps": self.norm_eps,
            "parameters": {k: list(v) for k, v in self.param_shapes.items()},
            "warnings": self.warnings,
            "blocked": dict(sorted(self.blocked_reasons.items(), key=lambda kv: -kv[1])),
            "symmetries": [s.to_json() for s in self.symmetries],
            "matrix_symmetries": [m.to_json() for m in self.matrix_symmetries],
        }
        if self.certificates is not None:
            out["certification"] = {
                "all_certified": self.all_certified,
                "tolerances": {"loss_rel": LOSS_TOL, "grad_rel": GRAD_TOL},
                "method": "float64 copy, normalizer eps -> 1e-300; random alpha in [0.5, 2]; matrix groups: one "
                          "random group element (GL: U diag(s) V^T, s in [0.5, 2]; subgroups: expm over the basis)",
                "results": [c.to_json() for c in self.certificates],
            }
        return out


def analyze(model: nn.Module, example_inputs: torch.Tensor | Sequence[torch.Tensor], loss: str = "cross_entropy",
            certify_symmetries: bool = False, output: int | str | None = None, **certify_options: Any) -> Analysis:
    """Find every symmetry of ``model`` under ``loss`` with exact parameter slices.

    ``example_inputs`` is a batch (at least two samples, so batch norm sees a batch). With
    ``certify_symmetries=True`` each symmetry is also checked numerically (see ``certify``). A model with
    several outputs (auxiliary heads) is scored on ``output`` (index or name), by default the first.
    Integer inputs (token ids) are supported; certification draws ids in [0, max of the example].
    """
    cg = capture(model, example_inputs, loss=loss, output=output)
    det = detect_symmetries(cg)
    result = Analysis(det.symmetries, cg.graph, cg.param_shapes, loss, cg.method, det.unknown_ops, det.norm_eps,
                      det.blocked_reasons, list(cg.warnings), matrix_symmetries=det.matrix_symmetries)
    if det.unknown_ops:
        result.warnings.append("ops missing from the semantics table block symmetries: " + ", ".join(det.unknown_ops))
    if certify_symmetries:
        result.certificates = certify(model, example_inputs, det.symmetries, loss=loss, output=output, **certify_options)
        result.certificates += certify_matrix(model, example_inputs, det.matrix_symmetries, loss=loss, output=output,
                                              **{k: v for k, v in certify_options.items() if k in ("batch_size", "seed")})
    return result
