"""Jupyter HTML of analysis and evaluation JSON: the functions live in ``symmetry_engine.html_repr`` (the
library's ``Analysis`` and ``Evaluation`` objects render through them in ``_repr_html_``); re-exported
here for the reporting layer's users."""

from symmetry_engine.html_repr import analysis_html, evaluation_html, fmt_value, layer_counts, natural_key

__all__ = ["analysis_html", "evaluation_html", "layer_counts", "fmt_value", "natural_key"]
