"""Shared pieces of the scaling pass: label constants, argument helpers, the signed union-find."""

from __future__ import annotations

from typing import Any

FIX, ZERO = -1, -2
FLAT = -1                      # incidence axis of an elementwise parameter entry (index = flat index)
PARAM_ENTRY_LIMIT = 1 << 21    # a parameter used as data with more entries than this is held fixed


def tensor_arg(arg: Any) -> str | None:
    if isinstance(arg, tuple) and len(arg) == 2 and arg[0] == "node":
        return arg[1]
    return None


def arg(args: tuple, i: int, default: Any = None) -> Any:
    return args[i] if len(args) > i else default


class SignedUnionFind:
    """Union-find over slot ids with a parity: ``factor(x) = factor(root) ** parity(x)``."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.parity: list[int] = []
        self.bad: set[int] = set()

    def add(self, n: int) -> int:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        self.parity.extend([1] * n)
        return start

    def find(self, x: int) -> tuple[int, int]:
        path, p = [], 1
        while self.parent[x] != x:
            path.append(x)
            x = self.parent[x]
        root = x
        # compress: recompute parities from the root down
        acc = 1
        for node in reversed(path):
            acc *= self.parity[node]
            self.parity[node] = acc
            self.parent[node] = root
        if path:
            p = self.parity[path[0]]
        return root, p

    def union(self, a: int, b: int, rel: int = 1) -> None:
        """Require ``factor(b) = factor(a) ** rel``."""
        ra, pa = self.find(a)
        rb, pb = self.find(b)
        if ra == rb:
            if pa * rel != pb:
                self.bad.add(ra)
            return
        self.parent[rb] = ra
        self.parity[rb] = pa * rel * pb
        if rb in self.bad:
            self.bad.add(ra)
