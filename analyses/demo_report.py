"""The demo's front page: VGG-16 with and without BN, each run's headline numbers and Figure 5.

``nmech demo`` writes a full report per run (``<run>/report/``) and this page above them, as
``report.md`` and a self-contained ``report.html`` that embeds each run's Figure 5.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from .report_doc import Document, Figure, Para, Section, Table

VERDICTS = ("holds", "approximate", "broken", "degenerate")


@dataclass
class DemoRun:
    title: str
    run_dir: Path
    report: Path                    # the run's report.md
    data: Mapping[str, Any]         # its evaluation JSON
    test_accuracy: float | None


def demo_document(runs: Sequence[DemoRun], out: Path) -> Document:
    has_law = any((s or {}).get("law") for r in runs for s in (r.data.get("summary") or {}).values())
    law = "law" if has_law else "exact"
    rows = []
    for r in runs:
        for kind, s in (r.data.get("summary") or {}).items():
            v = s.get("verdicts") or {}
            rows.append([r.title, kind, s.get("groups"), *(["/".join(str(v.get(x, 0)) for x in VERDICTS)] if has_law else []),
                         (s.get(law) or {}).get("max"), (s.get("continuous") or {}).get("max"),
                         (s.get("breaking") or {}).get("max")])
    header = ["run", "kind", "groups", *(["holds/approx./broken/degen."] if has_law else []),
              f"{'symmetry law' if has_law else 'exact law'}, max rel. error", "continuous law, max rel. error",
              "symmetry breaking, max"]
    doc = Document("neural-mechanics demo: VGG-16 on digits, measured against theory", [
        Para("Each symmetry group's conserved quantity (column sums, squared channel norms, differences of squared "
             "norms) is measured every step and compared with the exact discrete law of PyTorch's SGD (a forecast from "
             "step 0) and with the paper's continuous law. Errors: max over steps, relative to the group's size."),
        Table(header, rows, caption="Symmetry breaking is the drift the symmetry forbids, measured from the "
              "recorded ⟨ĝ, ξ⟩ (BN's ε, float32 round-off) on the same scale. Where it is as large as the continuous "
              "error (zero-initialised biases before BN, whose quantity is round-off), that error is the breaking "
              "showing, not the paper's modelling.")])
    for r in runs:
        acc = "n/a" if r.test_accuracy is None else f"{r.test_accuracy:.3f}"
        rel = r.report.parent.relative_to(out) if r.report.parent.is_relative_to(out) else r.report.parent
        blocks: list[Any] = [Para(f"Run `{r.run_dir}`; test accuracy {acc}; full report: `{rel}/report.html` "
                                  f"(and `{rel}/report.md`).")]
        fig = r.report.parent / "conservation.png"
        if fig.exists():
            blocks.append(Figure(fig, f"Figure 5 of {r.title}", "Conserved quantities of one layer per kind, "
                                 "measured against the laws, with their residuals below (see the run's report for "
                                 "how to read it)."))
        doc.sections.append(Section(r.title, blocks))
    doc.sections.append(Section("Re-run", [Para("`make demo` (or `nmech demo --out DIR --steps N --width W`).")]))
    return doc


__all__ = ["DemoRun", "demo_document"]
