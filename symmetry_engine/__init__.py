"""neural-mechanics: symmetries of a network's parameters and the laws they impose on training."""

from .symmetry import KINDS, Member, Symmetry, apply_action, canonical_form, count_by_kind

__all__ = ["KINDS", "Member", "Symmetry", "apply_action", "canonical_form", "count_by_kind"]
