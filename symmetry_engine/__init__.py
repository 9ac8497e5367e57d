"""neural-mechanics: symmetries of a network's parameters and the laws they impose on training.

The top level imports no torch: ``analyze``, ``track``, ``Tracker``, ``evaluate_run`` and
``evaluate_checkpoints`` are loaded on first use, so the symbolic engine stays importable on its own.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .symmetry import KINDS, Member, Symmetry, apply_action, canonical_form, count_by_kind

_LAZY = {
    "analyze": ("symmetry_engine.graph.analysis", "analyze"),
    "Analysis": ("symmetry_engine.graph.analysis", "Analysis"),
    "certify": ("symmetry_engine.graph.certify", "certify"),
    "track": ("symmetry_engine.numeric.tracker", "track"),
    "Tracker": ("symmetry_engine.numeric.tracker", "Tracker"),
    "evaluate_run": ("symmetry_engine.numeric.evaluate", "evaluate_run"),
    "evaluate_checkpoints": ("symmetry_engine.numeric.checkpoint_eval", "evaluate_checkpoints"),
    "read_run": ("symmetry_engine.numeric.runlog", "read_run"),
    "OptimizerConfig": ("symmetry_engine.numeric.predict", "OptimizerConfig"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(import_module(module), attr)
    raise AttributeError(f"module 'symmetry_engine' has no attribute {name!r}")


__all__ = ["KINDS", "Member", "Symmetry", "apply_action", "canonical_form", "count_by_kind", *_LAZY]
