"""Run report: ``report.md``, ``report.html`` (self-contained), ``report.json`` and the figures' PNGs.

The report is for a person deciding whether a run obeys the theory and for the colleagues they show it
to: verdicts and warnings first, then the configuration, training curves, the paper's Figures 5 and 1,
tables per kind and per layer, the laws as formulas, the checkpoint cross-check and how to re-run it.
The JSON holds the same numbers for programs (the evaluation JSON plus the figure names).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from symmetry_engine.numeric.runfile import write_json_atomic

from .report_doc import Document, to_markdown
from .report_html import to_html
from .report_sections import run_document


def evaluation_json(ev: Any) -> dict[str, Any]:
    """The evaluation's JSON (``Evaluation.to_json()``), with the training config from run.json when the
    evaluation does not carry it itself."""
    data = ev.to_json()
    if data.get("train") is None and isinstance(getattr(ev, "meta", None), Mapping):
        data["train"] = ev.meta.get("train")
    return data


def render_markdown(ev: Any, out_dir: str | Path | None = None, data: Mapping[str, Any] | None = None) -> str:
    """The text of report.md for ``ev`` (figures are written to ``out_dir``, a temporary one if None)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(out_dir or tmp)
        doc = run_document(ev, data if data is not None else evaluation_json(ev), out)
        return to_markdown(doc, out)


def write_document(doc: Document, out: Path, data: Mapping[str, Any]) -> Path:
    """Write ``doc`` as report.md and report.html and ``data`` (plus the figure names) as report.json
    into ``out``; returns report.md's path. The figures are already in ``out``."""
    data = dict(data)
    data["figures"] = [_relative_name(f.path, out) for f in doc.figures()]
    write_json_atomic(out / "report.json", data)
    (out / "report.html").write_text(to_html(doc), encoding="utf-8")
    md = out / "report.md"
    md.write_text(to_markdown(doc, out), encoding="utf-8")
    return md


def _relative_name(path: Path, out: Path) -> str:
    try:
        return Path(path).resolve().relative_to(Path(out).resolve()).as_posix()
    except ValueError:
        return str(path)


def write_report(evaluation: Any, out_dir: str | Path, layers: Sequence[str] = (), channels: int = 4,
                 data: Mapping[str, Any] | None = None) -> Path:
    """Write report.md, report.html, report.json and the figures into ``out_dir``; returns report.md's path.

    ``layers`` chooses the layer Figure 5 shows per kind (the first one that has groups of the kind);
    ``channels`` how many groups each panel shows. ``data`` overrides the evaluation JSON (tests).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = dict(data) if data is not None else evaluation_json(evaluation)
    return write_document(run_document(evaluation, data, out, layers, channels), out, data)


def write_sweep_report(evaluations: Sequence[Any], out_dir: str | Path, layers: Sequence[str] = ()) -> Path:
    """Runs side by side (see ``analyses.sweep``): report.md, report.html, report.json, sweep.png."""
    from .sweep import sweep_document

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    datas = [evaluation_json(ev) for ev in evaluations]
    doc, info = sweep_document(evaluations, datas, out, layers)
    runs = [{"run_dir": str(ev.run_dir), "label": label, "steps": d.get("steps"), "verdicts": d.get("verdicts"),
             "summary": d.get("summary"), "warnings": d.get("warnings")}
            for ev, d, label in zip(evaluations, datas, info["labels"])]
    return write_document(doc, out, {"format": "nmech-sweep-report/1", "differing": info["differing"],
                                     "groups_shown": info["groups_shown"], "runs": runs})


def write_architecture_report(analysis: Mapping[str, Any], optimizer: Mapping[str, Any], out_dir: str | Path) -> Path:
    """The no-run report of a model (see ``analyses.arch_report``)."""
    from .arch_report import arch_document, layer_table

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = arch_document(analysis, optimizer, out)
    layers = [{"layer": name, "parameters": info.params, "groups": info.groups, "rescale_consumer_of": info.consumes_from,
               "gl": info.gl} for name, info in layer_table(analysis).items()]
    return write_document(doc, out, {"format": "nmech-architecture-report/1", "optimizer": dict(optimizer),
                                     "layers": layers, "analysis": dict(analysis)})


__all__ = ["write_report", "write_sweep_report", "write_architecture_report", "write_document", "render_markdown",
           "evaluation_json"]
