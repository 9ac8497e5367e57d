"""Jupyter display: ``Analysis._repr_html_`` and ``Evaluation._repr_html_`` render the objects that
``nm.analyze`` and ``nm.evaluate_run`` return — counts and verdicts equal to the objects' own, well-formed
HTML, no script and nothing fetched."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import torch
import torch.nn.functional as F

import symmetry_engine as nm

VOID = {"br", "hr", "img", "meta", "link", "input"}


class _Checker(HTMLParser):
    """Tags must nest and close; collects the text."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.text: list[str] = []
        self.bad: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in VOID:
            self.stack.append(tag)
        for k, v in attrs:
            if k in ("src", "href") and v and "://" in v:
                self.bad.append(f"remote {k} {v}")

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.bad.append(f"unbalanced </{tag}>")

    def handle_data(self, data):
        self.text.append(data)


def _parse(page: str) -> str:
    c = _Checker()
    c.feed(page)
    c.close()
    assert not c.bad and not c.stack, (c.bad, c.stack)
    assert "<script" not in page.lower()
    return " ".join(" ".join(c.text).split())


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                               torch.nn.Conv2d(4, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 4 * 4, 3)).double()


def test_analysis_repr_html_counts_are_the_analysis(tmp_path):
    model = _net()
    a = nm.analyze(model, torch.randn(2, 3, 8, 8, dtype=torch.float64))
    text = _parse(a._repr_html_())
    for kind, n in a.counts.items():
        assert f"{n} {kind}" in text
    # the per-layer rows: layer 3 (the second conv) owns the rescale groups of its 4 channels
    rows = re.findall(r"<tr><td>([^<]+)</td>((?:<td[^>]*>[^<]*</td>)+)</tr>", a._repr_html_())
    cells = {name: re.findall(r"<td[^>]*>([^<]*)</td>", rest) for name, rest in rows}   # translation, scale, rescale, ...
    owned = {s.layer for s in a.symmetries if s.kind == "rescale"}
    assert "3" in owned and cells["3"][2] == str(sum(1 for s in a.symmetries if s.kind == "rescale" and s.layer == "3"))


def test_evaluation_repr_html_verdicts_are_the_evaluation(tmp_path):
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    x, y = torch.randn(32, 3, 8, 8, dtype=torch.float64), torch.randint(0, 3, (32,))
    tr = nm.track(model, opt, tmp_path / "r", example_inputs=x[:2])
    for n in range(6):
        opt.zero_grad()
        F.cross_entropy(model(x[n * 4:(n + 1) * 4]), y[n * 4:(n + 1) * 4]).backward()
        opt.step()
    tr.close()
    ev = nm.evaluate_run(tmp_path / "r", checkpoints=False)
    page = ev._repr_html_()
    text = _parse(page)
    assert f"{ev.T} steps" in text and "dtype float64" in text
    for verdict, n in ev.verdicts.items():
        assert f"{n} {verdict}" in text
    for kind, s in ev.summary.items():   # each kind's row: its group count and exact-law max as formatted
        from symmetry_engine.html_repr import fmt_value

        assert re.search(rf"<td>{kind}</td><td class=\"num\">{s['groups']}</td><td class=\"num\">"
                         rf"{re.escape(fmt_value(s['exact']['max']))}</td>", page), kind
    assert ev._repr_html_() == page   # deterministic
