"""Per-step partial sums of one parameter: the tracker's hot path, fused (numba) or in torch ops.

Why a module of its own: the tracker (tracker.py) must cost a training step almost nothing, and the cost
is memory traffic. Every statistic of theory.md §5 is a per-index sum, along one axis of a parameter, of
θ², ĝθ, ĝ², θ, ĝ, |θ| (before the step) and |Δ|², θΔ, Δ (after it). Computed with torch ops, each one
materialises a product tensor and reads it back (one pass per product and axis, float64 copies of the
weights on top); a fused loop reads θ and ĝ once and keeps every product in registers (measured side by
side on VGG-16-BN: ~3× to ~10× less time, benchmarks/README.md). So:

* on CPU, with numba installed (the ``fast`` extra), one compiled loop per parameter reads the tensor
  as ``[P, A, Q]`` (P = size of axis 0, A = size of axis 1, Q = the rest) and writes both the axis-0 sums
  (``rows``, P of them) and the axis-1 sums (``cols``, A of them) in one pass. Products and sums are
  float64 whatever the parameter's dtype (a float32 product is exact in float64), summed in a fixed but
  vectorised (re-associated) order: deterministic run to run, within ~1e-16 of any other order;
* everywhere else (CUDA, bfloat16/float16 parameters, no numba) the same sums in float64 torch ops,
  on the parameter's device, with no host synchronisation.

Columns of a partial-sum row (``COLS``): ``θθ gθ gg θ g |θ| DD θD D``; ``DD`` is |Δ|², or the unscaled
|v|² / |ĝ + λθ|² when Δ is −η times it (the tracker multiplies by η² on the host, per class).
"""

from __future__ import annotations

import os
import numpy as np
import torch

COLS = ("tt", "gt", "gg", "t", "g", "at", "dd", "td", "d")
PRE_COLS = slice(0, 7)        # written before the step (dd: |ĝ + λθ|², used when Δ = −η(ĝ + λθ))
STATE_COLS = (0, 3, 5)        # what a parameter without gradient (or the final record) has
F64 = torch.float64

try:  # numba is optional (extra "fast"); NMECH_NO_NUMBA=1 forces the torch path (tests compare both)
    if os.environ.get("NMECH_NO_NUMBA"):
        raise ImportError
    import numba

    _FM = {"reassoc", "nsz", "arcp", "contract"}  # re-association lets LLVM vectorise the float64 sums
    _jit = numba.njit(fastmath=_FM, boundscheck=False, nogil=True, cache=True)

    @_jit
    def _nb_pre(x, y, gscale, lam, rows, cols):  # pragma: no cover - compiled
        P, A, Q = x.shape
        cols[:, :7] = 0.0
        for p in range(P):
            r0 = r1 = r2 = r3 = r4 = r5 = r6 = 0.0
            for a in range(A):
                c0 = c1 = c2 = c3 = c4 = c5 = c6 = 0.0
                for q in range(Q):
                    u = np.float64(x[p, a, q])
                    v = np.float64(y[p, a, q]) * gscale
                    w = v + lam * u
                    c0 += u * u
                    c1 += v * u
                    c2 += v * v
                    c3 += u
                    c4 += v
                    c5 += abs(u)
                    c6 += w * w
                cols[a, 0] += c0
                cols[a, 1] += c1
                cols[a, 2] += c2
                cols[a, 3] += c3
                cols[a, 4] += c4
                cols[a, 5] += c5
                cols[a, 6] += c6
                r0 += c0
                r1 += c1
                r2 += c2
                r3 += c3
                r4 += c4
                r5 += c5
                r6 += c6
            rows[p, 0] = r0
            rows[p, 1] = r1
            rows[p, 2] = r2
            rows[p, 3] = r3
            rows[p, 4] = r4
            rows[p, 5] = r5
            rows[p, 6] = r6

    @_jit
    def _nb_state(x, rows, cols):  # pragma: no cover - compiled
        P, A, Q = x.shape
        cols[:, :7] = 0.0
        rows[:, :7] = 0.0
        for p in range(P):
            r0 = r3 = r5 = 0.0
            for a in range(A):
                c0 = c3 = c5 = 0.0
                for q in range(Q):
                    u = np.float64(x[p, a, q])
                    c0 += u * u
                    c3 += u
                    c5 += abs(u)
                cols[a, 0] += c0
                cols[a, 3] += c3
                cols[a, 5] += c5
                r0 += c0
                r3 += c3
                r5 += c5
            rows[p, 0] = r0
            rows[p, 3] = r3
            rows[p, 5] = r5

    @_jit
    def _nb_sq(x, rows, cols):  # pragma: no cover - compiled
        P, A, Q = x.shape
        cols[:, 6] = 0.0
        for p in range(P):
            r = 0.0
            for a in range(A):
                c = 0.0
                for q in range(Q):
                    u = np.float64(x[p, a, q])
                    c += u * u
                cols[a, 6] += c
                r += c
            rows[p, 6] = r

    @_jit
    def _nb_delta(old, new, rows, cols):  # pragma: no cover - compiled
        P, A, Q = old.shape
        cols[:, 6:9] = 0.0
        for p in range(P):
            r0 = r1 = r2 = 0.0
            for a in range(A):
                c0 = c1 = c2 = 0.0
                for q in range(Q):
                    t = np.float64(old[p, a, q])
                    d = np.float64(new[p, a, q]) - t
                    c0 += d * d
                    c1 += t * d
                    c2 += d
                cols[a, 6] += c0
                cols[a, 7] += c1
                cols[a, 8] += c2
                r0 += c0
                r1 += c1
                r2 += c2
            rows[p, 6] = r0
            rows[p, 7] = r1
            rows[p, 8] = r2

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - depends on the environment
    HAVE_NUMBA = False


def uses_numba(t: torch.Tensor) -> bool:
    """Whether the fused CPU loop handles this tensor (CPU, float32/float64, numba importable)."""
    return HAVE_NUMBA and t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64)


def _np3(t: torch.Tensor, shape3: tuple[int, int, int]) -> np.ndarray:
    if not t.is_contiguous():  # e.g. channels_last: one copy, the sums do not depend on the layout
        t = t.contiguous()
    return t.detach().view(shape3).numpy()


# -- torch fallback (any device; float64 products) ------------------------------------------------------
def _t3(t: torch.Tensor, shape3: tuple[int, int, int]) -> torch.Tensor:
    return t.detach().reshape(shape3).to(F64)


def _put(rows: torch.Tensor, cols: torch.Tensor, idx: list[int], parts: torch.Tensor) -> None:
    """parts [k, P, A] per-(p, a) sums → rows[:, idx] (sum over a) and cols[:, idx] (sum over p)."""
    rows[:, idx] = parts.sum(2).T
    cols[:, idx] = parts.sum(1).T


def _torch_pre(x: torch.Tensor, y: torch.Tensor, gscale: float, lam: float, rows: torch.Tensor,
               cols: torch.Tensor, shape3: tuple[int, int, int]) -> None:
    u, v = _t3(x, shape3), _t3(y, shape3)
    if gscale != 1.0:
        v = v * gscale
    w = v + lam * u if lam else v
    parts = torch.stack([(u * u).sum(2), (v * u).sum(2), (v * v).sum(2), u.sum(2), v.sum(2), u.abs().sum(2),
                         (w * w).sum(2)])
    _put(rows, cols, list(range(7)), parts)


def _torch_state(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, shape3: tuple[int, int, int]) -> None:
    u = _t3(x, shape3)
    rows[:, :7] = 0.0
    cols[:, :7] = 0.0
    _put(rows, cols, list(STATE_COLS), torch.stack([(u * u).sum(2), u.sum(2), u.abs().sum(2)]))


def _torch_sq(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, shape3: tuple[int, int, int]) -> None:
    u = _t3(x, shape3)
    _put(rows, cols, [6], (u * u).sum(2)[None])


def _torch_delta(old: torch.Tensor, new: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                 shape3: tuple[int, int, int]) -> None:
    t = _t3(old, shape3)
    d = _t3(new, shape3) - t
    _put(rows, cols, [6, 7, 8], torch.stack([(d * d).sum(2), (t * d).sum(2), d.sum(2)]))


# -- dispatch ---------------------------------------------------------------------------------------------
class Target:
    """Where one fused read of a parameter writes: ``rows`` [P, 9] and ``cols`` [A, 9] views of the
    tracker's buffer (numpy views too when the numba loop is used), and the read shape ``[P, A, Q]``."""

    __slots__ = ("shape3", "rows", "cols", "rows_np", "cols_np", "fused")

    def __init__(self, shape3: tuple[int, int, int], rows: torch.Tensor, cols: torch.Tensor, fused: bool) -> None:
        self.shape3, self.rows, self.cols, self.fused = shape3, rows, cols, fused
        self.rows_np = rows.numpy() if fused else None
        self.cols_np = cols.numpy() if fused else None


def pre_sums(x: torch.Tensor, y: torch.Tensor, gscale: float, lam: float, t: Target) -> None:
    """rows/cols columns 0–6 from θ = x and ĝ = gscale·y (column 6: |ĝ + λθ|²)."""
    if t.fused:
        _nb_pre(_np3(x, t.shape3), _np3(y, t.shape3), float(gscale), float(lam), t.rows_np, t.cols_np)
    else:
        _torch_pre(x, y, gscale, lam, t.rows, t.cols, t.shape3)


def state_sums(x: torch.Tensor, t: Target) -> None:
    """Columns 0–6 for a parameter without gradient: θθ, θ, |θ|; the gradient columns 0."""
    if t.fused:
        _nb_state(_np3(x, t.shape3), t.rows_np, t.cols_np)
    else:
        _torch_state(x, t.rows, t.cols, t.shape3)


def sq_sums(x: torch.Tensor, t: Target) -> None:
    """Column 6 = Σ x² (x a momentum buffer: Δ = −η x)."""
    if t.fused:
        _nb_sq(_np3(x, t.shape3), t.rows_np, t.cols_np)
    else:
        _torch_sq(x, t.rows, t.cols, t.shape3)


def delta_sums(old: torch.Tensor, new: torch.Tensor, t: Target) -> None:
    """Columns 6–8 of Δ = new − old (float64 difference): |Δ|², ⟨old, Δ⟩, ⟨1, Δ⟩."""
    if t.fused and old.dtype == new.dtype:
        _nb_delta(_np3(old, t.shape3), _np3(new, t.shape3), t.rows_np, t.cols_np)
    else:
        _torch_delta(old, new, t.rows, t.cols, t.shape3)


def vector_pre_fused(thetas: list[np.ndarray], grads: list[np.ndarray], gscale: float, lam: float,
                     rows: np.ndarray, scratch: np.ndarray) -> None:
    """Columns 0–6 for many 1-D parameters at once: their values concatenated, one fused pass (CPU)."""
    th = np.concatenate(thetas)
    g = np.concatenate(grads)
    n = th.shape[0]
    _nb_pre(th.reshape(n, 1, 1), g.reshape(n, 1, 1), float(gscale), float(lam), rows, scratch)


def vector_sq_fused(bufs: list[np.ndarray], rows: np.ndarray, scratch: np.ndarray) -> None:
    """Column 6 = x² for many 1-D momentum buffers at once (CPU)."""
    v = np.concatenate(bufs)
    _nb_sq(v.reshape(v.shape[0], 1, 1), rows, scratch)
