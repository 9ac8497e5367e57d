"""Small helpers shared by the benchmarks: timing, medians, machine description, model building.

Why it exists: every benchmark must report raw timings and same-run ratios the same way, and must say
on which machine they were taken; keeping that in one place keeps each benchmark module short.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Callable, Iterator


def now() -> float:
    return time.perf_counter()


def median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def timed(fn: Callable[[], Any], repeats: int) -> tuple[list[float], Any]:
    """Call ``fn`` ``repeats`` times; return the wall times (s) and the last result."""
    times, out = [], None
    for _ in range(repeats):
        t = now()
        out = fn()
        times.append(now() - t)
    return times, out


@contextmanager
def section(title: str) -> Iterator[None]:
    """Print a header and the section's total wall time (progress for a user watching the run)."""
    print(f"\n=== {title} ===", flush=True)
    t = now()
    yield
    print(f"--- {title}: {now() - t:.1f} s", flush=True)


def progress(msg: str) -> None:
    print(f"  .. {msg}", flush=True)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> dict[str, Any]:
    import numpy as np
    import torch

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    return {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cpu": cpu_name(),
            "cores": cores, "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
            "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "platform": platform.platform()}


def build_zoo_model(spec: str, **kwargs: Any):
    """``model_zoo.build_model`` (or ``model_zoo.specs.build_model`` while the package does not export it)."""
    try:
        from model_zoo import build_model
    except ImportError:
        from model_zoo.specs import build_model
    return build_model(spec, **kwargs)


def table(rows: list[list[Any]], header: list[str]) -> str:
    """Plain fixed-width table (no dependencies)."""
    cells = [header] + [[c if isinstance(c, str) else f"{c:.4g}" if isinstance(c, float) else str(c) for c in r]
                        for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join("  " + line for line in lines)
