"""Natural sort: ``features.3`` before ``features.10``, as a person reads layer names.

Plain string sorting puts ``features.10`` before ``features.3``; every table and figure that lists layers
or groups sorts with :func:`natural_key` instead.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable, TypeVar

T = TypeVar("T")
_PARTS = re.compile(r"(\d+)")


def natural_key(text: Any) -> tuple:
    """Sort key splitting ``text`` into text and integer runs (``"b.10"`` → ``("b.", 10, "")``).

    Integers and strings never meet in a comparison: each run is tagged, so ``"a1"`` and ``"1a"`` compare
    without a TypeError. ``None`` sorts first (with the empty string).
    """
    if text is None:
        return ()
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in _PARTS.split(str(text)) if p != "")


def natsorted(items: Iterable[T], key: Callable[[T], Any] | None = None) -> list[T]:
    """``items`` sorted by :func:`natural_key` of ``key(item)`` (or of the item itself)."""
    get = key or (lambda x: x)
    return sorted(items, key=lambda x: natural_key(get(x)))


__all__ = ["natural_key", "natsorted"]
