"""``nmech report RUN --tensorboard DIR``: an evaluated run's per-step scalars written to TensorBoard after
the fact, with the same tags as live monitoring (``track(..., tensorboard=DIR)``, ``nmech train
--tensorboard DIR``); the writer and the tags are symmetry_engine/numeric/tensorboard.py's.

Needs the optional ``tensorboard`` package (``pip install 'neural-mechanics[tensorboard]'``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from symmetry_engine.numeric.tensorboard import (INSTALL_HINT, LiveMonitor, TensorBoardLog, evaluation_scalars,
                                                 layer_scalars, step_breaking)


def write_evaluation(ev: Any, log_dir: str | Path) -> int:
    """Write every kept step of an evaluated run (breaking per step from its log); returns the number of
    scalars written."""
    from symmetry_engine.numeric.runfile import RunLogError
    from symmetry_engine.numeric.runlog import read_run

    try:
        log = read_run(ev.run_dir) if getattr(ev, "source", "run") == "run" else None
    except RunLogError:
        log = None
    n = 0
    with TensorBoardLog(log_dir) as tb:
        for step, scalars in evaluation_scalars(ev, log):
            n += tb.write(step, scalars)
    return n


__all__ = ["TensorBoardLog", "LiveMonitor", "layer_scalars", "evaluation_scalars", "step_breaking",
           "write_evaluation", "INSTALL_HINT"]
