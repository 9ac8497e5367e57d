"""The inputs of the scale and rescale laws between checkpoints, estimated by short replicas of training.

Why: the exact laws (theory.md §5) need, per step n and group, |ĝ_n|²_A (plain SGD: ``G``) or
D_n = |Δ_n|²_A (momentum: ``D``; Nesterov both) — what the tracker records and a directory of
checkpoints does not.

**What D is for heavy ball.** PyTorch's buffer is v_{n+1} = β v_n + (1−d)(ĝ_n + λθ_n) (v_1 undampened)
and D_n = η_n² |v_{n+1}|². Write ĝ_n + λθ_n = d̄_n + ζ_n (mean over minibatches, and noise independent
across steps with variance σ_n²). Then E|v_{n+1}|² = |Σ_k β^k (1−d) d̄_{n−k}|² + (1−d)² Σ_k β^{2k} σ²_{n−k}:
at stationarity D ≈ η²|v|² lies between η²(1−d)²(|d̄|² + σ²)/(1−β²) (mean gradients that decorrelate
from step to step) and η²(1−d)²(|d̄|²/(1−β)² + σ²/(1−β²)) (mean gradients that stay aligned over the
buffer's memory 1/(1−β)) — a factor up to (1+β)/(1−β) = 19 apart at β = 0.9. Which one holds depends on
how fast the mean gradient turns, which one checkpoint cannot show: measured on a float64 VGG-style run
(tests/test_checkpoint_eval.py), the aligned form over-estimated ΣD by 5–20× and the decorrelated form
by ~25%, and the N forecast is about as sensitive to D as D itself (a 5% bias in D gave a 4% error in N).

**The estimate.** So D is measured, not modelled: at each checkpoint a short *replica* continues
training with the flags' SGD for L steps on freshly sampled minibatches of the training batch size
(numeric/checkpoint_stats.py), from the saved momentum buffer (then its steps are distributed exactly
like the real steps after the checkpoint), from a fresh buffer at step 0, or, without either, after a
burn-in that fills a zero buffer to its stationary size. Per group the replica's mean of |ĝ_j|²_A and of
D_j/η_j² is placed at the replica's centre step, c + (L−1)/2, interpolated linearly in the step between
checkpoints (held constant beyond the first and last), and multiplied by η_n². These are estimates of
E[G_n] and E[D_n]; the real run's own D_n scatter around them, and that scatter, accumulated by the law,
is most of the remaining error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .checkpoint_stats import CheckpointStats


def interpolate(values: np.ndarray, positions: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``[C, ...]`` values at increasing ``positions`` → ``[len(steps), ...]``;
    constant beyond the first and last position."""
    positions = np.asarray(positions, dtype=np.float64)
    C = positions.shape[0]
    if C == 1:
        return np.repeat(values[:1], len(steps), axis=0)
    j = np.clip(np.searchsorted(positions, steps, side="right") - 1, 0, C - 2)
    w = np.clip((steps - positions[j]) / (positions[j + 1] - positions[j]), 0.0, 1.0)
    w = w.reshape(-1, *([1] * (values.ndim - 1)))
    return (1 - w) * values[j] + w * values[j + 1]


@dataclass
class DriveEstimate:
    """The law's inputs ``[T, G]`` and the buffer states it starts from (``[G]``; empty for a fresh buffer)."""

    inputs: dict[str, np.ndarray]
    initial: dict[str, np.ndarray]
    buffer_source: str


def estimate_drive(stats: Sequence[CheckpointStats], kind: str, cols: slice, lrs: np.ndarray) -> DriveEstimate:
    """E G_n and E D_n for every step from the first checkpoint on (groups ``cols`` of ``kind``)."""
    T = lrs.shape[0]
    centre = np.array([s.step + (s.replica_steps - 1) / 2.0 for s in stats])
    steps = stats[0].step + np.arange(T, dtype=np.float64)
    G = np.stack([s.kinds[kind].drive["G"][cols] for s in stats])
    D = np.stack([s.kinds[kind].drive["D"][cols] for s in stats])
    inputs = {"G": interpolate(G, centre, steps), "D": lrs[:, None] ** 2 * interpolate(D, centre, steps)}
    buf = stats[0].kinds[kind].buffer
    initial = {k: v[cols] for k, v in buf.items()} if buf else {}
    return DriveEstimate(inputs, initial, stats[0].buffer_source)
