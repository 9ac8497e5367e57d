"""Self-contained HTML for a report document: figures inline (base64 PNG), formulas as SVG.

Nothing is fetched when the page opens — no fonts, scripts or style sheets from the network — so a
report can be mailed, archived or opened offline. Formulas are typeset locally by matplotlib's
mathtext (a LaTeX subset) into SVG with glyphs as paths, each embedded as an ``<img>`` data URI so their
internal ids cannot clash.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import re
from pathlib import Path

import matplotlib

from .report_doc import Block, Bullets, Code, Document, Figure, Formula, Para, Table, fmt_value

VERDICT_CLASSES = {"holds": "v-holds", "approximate": "v-approx", "broken": "v-broken", "degenerate": "v-degen"}

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;color:#1d2430;
 background:#fbfbfd;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:1.2rem 1.6rem 3rem}
h1{font-size:1.55rem;margin:.4rem 0 .6rem}h2{font-size:1.22rem;margin-top:2rem;border-bottom:1px solid #d6dae3;
 padding-bottom:.2rem}h3{font-size:1.05rem;margin-top:1.4rem}
nav{font-size:.9rem;margin:.4rem 0 1rem;color:#4a5263}nav a{margin-right:.8rem;color:#2457a6;text-decoration:none}
code{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:.88em;background:#eef0f5;padding:0 .25em;
 border-radius:3px}
pre{background:#eef0f5;padding:.7rem .9rem;overflow-x:auto;border-radius:4px}pre code{background:none;padding:0}
.table-wrap{overflow-x:auto;margin:.6rem 0}
table{border-collapse:collapse;font-size:.86rem}th,td{border:1px solid #d6dae3;padding:.25rem .55rem;
 text-align:left;white-space:nowrap}th{background:#eef0f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
.caption{font-size:.85rem;color:#4a5263;margin:.3rem 0 1rem;max-width:62rem}
figure{margin:1rem 0 1.6rem}figure img{max-width:100%;height:auto;border:1px solid #e3e6ee;background:#fff}
figcaption{font-size:.88rem;color:#333a48;max-width:62rem;margin-top:.35rem}
.formula{margin:.35rem 0 .9rem}.formula .label{font-size:.88rem;color:#4a5263}.formula img{display:block;
 margin:.2rem 0 .2rem 1rem;max-width:100%}
.v-holds{background:#dff3e4}.v-approx{background:#fff1cc}.v-broken{background:#fbd9d7;font-weight:600}
.v-degen{background:#eceef2;color:#5b6272}
"""


def inline(text: str) -> str:
    """Escape ``text`` for HTML and turn ``code`` and **bold** marks into tags."""
    t = html.escape(text, quote=False)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", t)


def _sanitize_tex(tex: str) -> str:
    """The few LaTeX spellings sympy emits that mathtext does not parse, in equivalent forms."""
    return tex.replace(r"\limits", "").replace(r"\displaystyle", "")


@functools.lru_cache(maxsize=512)
def mathtext_svg(tex: str, fontsize: float = 13.0) -> str:
    """SVG text of ``tex`` typeset by matplotlib mathtext (no LaTeX install, no network).

    Raises ``ValueError`` when mathtext cannot parse the formula, so callers decide how to show it.
    """
    from matplotlib.font_manager import FontProperties
    from matplotlib.mathtext import math_to_image

    buf = io.BytesIO()
    try:
        with matplotlib.rc_context({"svg.hashsalt": "nmech", "svg.fonttype": "path"}):
            math_to_image(f"${_sanitize_tex(tex)}$", buf, prop=FontProperties(size=fontsize), format="svg",
                          color="#1d2430")
    except ValueError as exc:
        why = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ValueError(f"mathtext cannot typeset {tex!r}: {why}") from None
    return buf.getvalue().decode("utf-8")


def data_uri(raw: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(raw).decode('ascii')}"


def _formula_html(f: Formula) -> str:
    parts = [f'<div class="formula"><div class="label">{inline(f.label)}</div>']
    for line in f.lines:
        try:
            svg = mathtext_svg(line)
            parts.append(f'<img alt="{html.escape(line)}" src="{data_uri(svg.encode(), "image/svg+xml")}">')
        except ValueError:  # shown as source rather than dropped: the reader still gets the formula
            parts.append(f"<pre><code>{html.escape(line)}</code></pre>")
    return "".join(parts) + "</div>"


def _cell(v: object, numeric: bool) -> str:
    text = fmt_value(v) if numeric or not isinstance(v, float) else str(v)
    cls = VERDICT_CLASSES.get(text)
    if cls:
        return f'<td class="{cls}">{html.escape(text)}</td>'
    if numeric and isinstance(v, (int, float)) and not isinstance(v, bool):
        return f'<td class="num">{html.escape(text)}</td>'
    return f"<td>{inline(text)}</td>"


def block_html(b: Block) -> str:
    if isinstance(b, Para):
        return f"<p>{inline(b.text)}</p>"
    if isinstance(b, Bullets):
        return "<ul>" + "".join(f"<li>{inline(t)}</li>" for t in b.items) + "</ul>"
    if isinstance(b, Table):
        head = "".join(f"<th>{inline(h)}</th>" for h in b.header)
        body = "".join("<tr>" + "".join(_cell(v, b.numeric) for v in r) + "</tr>" for r in b.rows)
        cap = f'<div class="caption">{inline(b.caption)}</div>' if b.caption else ""
        return f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>{cap}'
    if isinstance(b, Figure):
        raw = Path(b.path).read_bytes()
        return (f'<figure id="fig-{html.escape(Path(b.path).stem)}"><img alt="{html.escape(b.title)}" '
                f'src="{data_uri(raw, "image/png")}"><figcaption><strong>{inline(b.title)}.</strong> '
                f"{inline(b.caption)}</figcaption></figure>")
    if isinstance(b, Formula):
        return _formula_html(b)
    if isinstance(b, Code):
        return f"<pre><code>{html.escape(b.text.rstrip())}</code></pre>"
    raise TypeError(f"unknown block {type(b).__name__}")


def to_html(doc: Document) -> str:
    """The whole page as one string (UTF-8, no external references)."""
    body = [f"<h1>{inline(doc.title)}</h1>"]
    body += [block_html(b) for b in doc.intro]
    top = [s for s in doc.sections if s.level == 2]
    if len(top) > 2:
        body.append("<nav>" + "".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in top) + "</nav>")
    for s in doc.sections:
        body.append(f'<h{s.level} id="{s.anchor}">{inline(s.title)}</h{s.level}>')
        body += [block_html(b) for b in s.blocks]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(doc.title)}</title><style>{CSS}</style></head>"
            f"<body><main>{''.join(body)}</main></body></html>\n")


__all__ = ["to_html", "block_html", "mathtext_svg", "inline", "data_uri", "CSS"]
