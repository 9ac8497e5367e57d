"""Graph analyzer: capture a PyTorch model as a NetworkX graph and find its parameter symmetries.

This sub-package must not import sympy: the analyzer and the symbolic engine meet only through
`Symmetry` objects.
"""

from .capture import CapturedGraph, CaptureError, capture
from .detect import detect_symmetries

__all__ = ["CapturedGraph", "CaptureError", "capture", "detect_symmetries"]
