"""A report as a small document tree, rendered to Markdown (here) and HTML (``report_html``).

Why a tree: report.md and report.html must say the same thing. The sections are built once
(``report_sections``, ``sweep``, ``arch_report``) from the evaluation and rendered twice; a renderer
never decides content. Inline text may use two marks only: ``code`` in backticks and **bold**.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union


@dataclass
class Para:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    header: list[str]
    rows: list[list[Any]]
    caption: str = ""
    numeric: bool = True   # format floats as 1.23e-04


@dataclass
class Figure:
    """A figure already written as ``path`` (PNG); ``caption`` says what it shows and how to read it."""

    path: Path
    title: str
    caption: str


@dataclass
class Formula:
    """A LaTeX formula (matplotlib mathtext subset) with a label; ``lines`` split on ``\\\\``."""

    label: str
    tex: str

    @property
    def lines(self) -> list[str]:
        return [t.strip() for t in self.tex.split(r"\\") if t.strip()]


@dataclass
class Code:
    text: str
    lang: str = "sh"


Block = Union[Para, Bullets, Table, Figure, Formula, Code]


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)
    level: int = 2

    @property
    def anchor(self) -> str:
        return "".join(c if c.isalnum() else "-" for c in self.title.lower()).strip("-")


@dataclass
class Document:
    title: str
    intro: list[Block] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)

    def figures(self) -> list[Figure]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Figure)]


def fmt_value(x: Any) -> str:
    """A table cell: floats as ``1.23e-04`` (``0`` and ``n/a`` spelled out), the rest as ``str``."""
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        if math.isnan(x):
            return "n/a"
        if x == 0:
            return "0"
        return f"{x:.2e}" if abs(x) < 1e-2 or abs(x) >= 1e4 else f"{x:.4g}"
    return str(x)


def _md_cell(x: Any, numeric: bool) -> str:
    text = fmt_value(x) if numeric or not isinstance(x, float) else str(x)
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(doc: Document, base: Path | None = None) -> str:
    """Markdown text; figures are linked relative to ``base`` (the directory report.md is written to)."""
    out = [f"# {doc.title}", ""]
    for b in doc.intro:
        out += _md_block(b, base)
    if len(doc.sections) > 2:
        out += ["Contents: " + " · ".join(f"[{s.title}](#{s.anchor})" for s in doc.sections if s.level == 2), ""]
    for s in doc.sections:
        out += ["#" * s.level + " " + s.title, ""]
        for b in s.blocks:
            out += _md_block(b, base)
    return "\n".join(out).rstrip() + "\n"


def _md_block(b: Block, base: Path | None) -> list[str]:
    if isinstance(b, Para):
        return [b.text, ""]
    if isinstance(b, Bullets):
        return [f"- {t}" for t in b.items] + [""]
    if isinstance(b, Table):
        lines = ["| " + " | ".join(b.header) + " |", "|" + "|".join("---" for _ in b.header) + "|"]
        lines += ["| " + " | ".join(_md_cell(v, b.numeric) for v in r) + " |" for r in b.rows]
        return lines + ([""] + [f"*{b.caption}*"] if b.caption else []) + [""]
    if isinstance(b, Figure):
        rel = b.path.name if base is None else _relative(b.path, base)
        return [f"![{b.title}]({rel})", "", f"**{b.title}.** {b.caption}", ""]
    if isinstance(b, Formula):
        body = " \\\\ ".join(b.lines)
        return [f"{b.label}:", "", "$$", body if len(b.lines) == 1 else r"\begin{aligned}" + body + r"\end{aligned}",
                "$$", ""]
    if isinstance(b, Code):
        return [f"```{b.lang}", b.text.rstrip(), "```", ""]
    raise TypeError(f"unknown block {type(b).__name__}")


def _relative(path: Path, base: Path) -> str:
    try:
        return Path(path).resolve().relative_to(Path(base).resolve()).as_posix()
    except ValueError:
        import os

        return Path(os.path.relpath(Path(path).resolve(), Path(base).resolve())).as_posix()


def table_of(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]], caption: str = "") -> Table:
    """A table from dict rows: ``columns`` is ``[(header, key), ...]``; a dotted key reads nested dicts."""
    def get(r: dict[str, Any], key: str) -> Any:
        for part in key.split("."):
            r = r.get(part) if isinstance(r, dict) else None
        return r

    return Table([h for h, _ in columns], [[get(r, k) for _, k in columns] for r in rows], caption)


__all__ = ["Document", "Section", "Para", "Bullets", "Table", "Figure", "Formula", "Code", "to_markdown",
           "fmt_value", "table_of"]
