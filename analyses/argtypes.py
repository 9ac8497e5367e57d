"""Typed command-line values, checked at parse time, and the help format every sub-command shares.

Why: a value outside its domain (``--batch-size 0``, ``--momentum 1``, ``--lr nan``) used to surface
minutes later as "integer division or modulo by zero" or as laws labelled with the wrong regime. Each
numeric option names its domain with one ``type=`` below, argparse refuses anything else in one line,
and :func:`check_value` applies the same domains to configurations built in Python (``TrainConfig``).
Standard library only: ``nmech … --help`` must not import torch.

Adding an option is one line: ``p.add_argument("--lr", type=positive_float, default=0.1, help=...)``.
"""

from __future__ import annotations

import argparse
import math
import os
from typing import Callable

EXIT_BAD_INPUT = 2

#: domain name → (test, what the user is told the value must be)
DOMAINS: dict[str, tuple[Callable[[float], bool], str]] = {
    "positive": (lambda v: math.isfinite(v) and v > 0, "a finite number > 0"),
    "nonneg": (lambda v: math.isfinite(v) and v >= 0, "a finite number ≥ 0"),
    "unit_closed": (lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "unit_open": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "finite": (lambda v: math.isfinite(v), "a finite number"),
}


class OneLineParser(argparse.ArgumentParser):
    """Usage errors in one line (the contract for bad input), with a pointer to --help; help shows every
    option's default (:class:`HelpFormatter`, also for sub-parsers made with ``parser_class``)."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


class HelpFormatter(argparse.HelpFormatter):
    """Shows every option's default: ``(default: X)``, ``(default: off)`` for switches; a help text that
    already says what its default is is left as it is."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not action.option_strings or "default" in text or action.default is argparse.SUPPRESS:
            return text
        if action.nargs == 0:  # switches
            return f"{text} (default: {'on' if action.default else 'off'})"
        if action.default is None or action.default == []:
            return f"{text} (default: none)"
        return f"{text} (default: %(default)s)"


def check_value(value: float, domain: str) -> str | None:
    """None if ``value`` lies in ``domain`` (a key of :data:`DOMAINS`), else what it must be."""
    test, what = DOMAINS[domain]
    try:
        ok = test(float(value))
    except (TypeError, ValueError):
        ok = False
    return None if ok else f"must be {what}, got {value!r}"


def _number(text: str, integer: bool) -> float:
    try:
        return int(text) if integer else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if integer else 'a number'}, got {text!r}") from None


_INT_WHAT = {"positive": "an integer ≥ 1", "nonneg": "an integer ≥ 0"}


def _typed(domain: str, integer: bool) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = _number(text, integer)
        problem = check_value(value, domain)
        if problem:
            raise argparse.ArgumentTypeError(f"must be {_INT_WHAT[domain]}, got {text!r}" if integer else problem)
        return value

    parse.__name__ = f"{'int' if integer else 'float'}_{domain}"
    return parse


positive_int = _typed("positive", True)          # ≥ 1: batch size, steps, widths, counts
nonneg_int = _typed("nonneg", True)              # ≥ 0: seeds, worker counts, warmup length
positive_float = _typed("positive", False)       # > 0 and finite: learning rate, width multiplier, epochs
nonneg_float = _typed("nonneg", False)           # ≥ 0 and finite: weight decay
unit_interval = _typed("unit_closed", False)     # [0, 1]: dampening
unit_interval_open = _typed("unit_open", False)  # [0, 1): momentum β
finite_float = _typed("finite", False)


def int_list(element: Callable[[str], float]) -> Callable[[str], tuple[int, ...]]:
    """A comma- or space-separated list whose elements each pass ``element`` (e.g. ``nonneg_int``)."""
    def parse(text: str) -> tuple[int, ...]:
        parts = [t for t in text.replace(",", " ").split() if t]
        if not parts:
            raise argparse.ArgumentTypeError(f"expected integers like 3,32,32, got {text!r}")
        return tuple(int(element(t)) for t in parts)

    parse.__name__ = f"list_of_{getattr(element, '__name__', 'int')}"
    return parse


def default_threads() -> int:
    """Intra-op threads when ``--threads`` is not given: $OMP_NUM_THREADS if set, else half the CPUs this
    process may run on (at least 1, at most 8). Torch's own default (every core) oversubscribes a shared
    machine: 100 steps of the digits preset on a 2-core machine at load ~6 took 21 s with one thread and
    ~175 s with torch's two (docs/model_zoo.md)."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus // 2))


def threads(text: str) -> int:
    """``auto`` (see :func:`default_threads`), ``0`` (torch's default) or a thread count."""
    if text.strip().lower() == "auto":
        return default_threads()
    return int(nonneg_int(text))


def add_threads_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=threads, default="auto", metavar="N",
                   help="torch intra-op threads: N, 0 for torch's default (every core), or auto = $OMP_NUM_THREADS "
                        "or half the CPUs (≤ 8), which avoids oversubscribing a shared machine (default: auto)")


def apply_threads(n: int | None) -> None:
    """Set torch's intra-op thread count (0 or None: leave torch's default). Imports torch."""
    if n:
        import torch

        torch.set_num_threads(int(n))


__all__ = ["DOMAINS", "EXIT_BAD_INPUT", "HelpFormatter", "OneLineParser", "add_threads_argument", "apply_threads",
           "check_value", "default_threads", "finite_float", "int_list", "nonneg_float", "nonneg_int", "positive_float",
           "positive_int", "threads", "unit_interval", "unit_interval_open"]
