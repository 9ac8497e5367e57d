"""Affine recurrences over many independent columns: x_{n+1} = A_n x_n + C_n u_n + c_n, chunk by chunk.

Why: every law the evaluation runs — the exact discrete laws (symbolic/laws.py), the continuous laws'
first-order steps and the oscillator's zero-order hold (numeric/predict.py) — is such a recurrence with
k ≤ 3 states, m ≤ 3 recorded inputs (Q, D, G, P …) and per-step coefficients (schedules, OneCycle's
momentum, idle steps, the first-step buffer fill). One compiled loop over steps and columns (numba, the
``fast`` extra) runs it at memory speed for any schedule; it returns the state after the chunk, so a
long log is processed in chunks of steps with bounded memory. Without numba the same recurrence runs
as a numpy loop over steps, vectorised over columns.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

try:  # the ``fast`` extra; NMECH_NO_NUMBA=1 forces the numpy loop (tests compare both)
    if os.environ.get("NMECH_NO_NUMBA"):
        raise ImportError
    import numba

    _jit = numba.njit(cache=True, nogil=True, boundscheck=False)

    @_jit
    def _scan1(A, C, c, u0, u1, u2, x, y):  # pragma: no cover - compiled
        L, G = y.shape
        for n in range(L):
            a, c0, c1, c2, cc = A[n, 0, 0], C[n, 0, 0], C[n, 0, 1], C[n, 0, 2], c[n, 0]
            for g in range(G):
                v = a * x[0, g] + c0 * u0[n, g] + c1 * u1[n, g] + c2 * u2[n, g] + cc
                x[0, g] = v
                y[n, g] = v

    @_jit
    def _scan2(A, C, c, u0, u1, u2, x, y):  # pragma: no cover - compiled
        L, G = y.shape
        for n in range(L):
            a00, a01, a10, a11 = A[n, 0, 0], A[n, 0, 1], A[n, 1, 0], A[n, 1, 1]
            c00, c01, c02, cc0 = C[n, 0, 0], C[n, 0, 1], C[n, 0, 2], c[n, 0]
            c10, c11, c12, cc1 = C[n, 1, 0], C[n, 1, 1], C[n, 1, 2], c[n, 1]
            for g in range(G):
                x0, x1 = x[0, g], x[1, g]
                i0, i1, i2 = u0[n, g], u1[n, g], u2[n, g]
                v0 = a00 * x0 + a01 * x1 + c00 * i0 + c01 * i1 + c02 * i2 + cc0
                v1 = a10 * x0 + a11 * x1 + c10 * i0 + c11 * i1 + c12 * i2 + cc1
                x[0, g] = v0
                x[1, g] = v1
                y[n, g] = v0

    @_jit
    def _scan3(A, C, c, u0, u1, u2, x, y):  # pragma: no cover - compiled
        L, G = y.shape
        for n in range(L):
            a00, a01, a02 = A[n, 0, 0], A[n, 0, 1], A[n, 0, 2]
            a10, a11, a12 = A[n, 1, 0], A[n, 1, 1], A[n, 1, 2]
            a20, a21, a22 = A[n, 2, 0], A[n, 2, 1], A[n, 2, 2]
            c00, c01, c02, cc0 = C[n, 0, 0], C[n, 0, 1], C[n, 0, 2], c[n, 0]
            c10, c11, c12, cc1 = C[n, 1, 0], C[n, 1, 1], C[n, 1, 2], c[n, 1]
            c20, c21, c22, cc2 = C[n, 2, 0], C[n, 2, 1], C[n, 2, 2], c[n, 2]
            for g in range(G):
                x0, x1, x2 = x[0, g], x[1, g], x[2, g]
                i0, i1, i2 = u0[n, g], u1[n, g], u2[n, g]
                v0 = a00 * x0 + a01 * x1 + a02 * x2 + c00 * i0 + c01 * i1 + c02 * i2 + cc0
                v1 = a10 * x0 + a11 * x1 + a12 * x2 + c10 * i0 + c11 * i1 + c12 * i2 + cc1
                v2 = a20 * x0 + a21 * x1 + a22 * x2 + c20 * i0 + c21 * i1 + c22 * i2 + cc2
                x[0, g] = v0
                x[1, g] = v1
                x[2, g] = v2
                y[n, g] = v0

    _KERNELS = {1: _scan1, 2: _scan2, 3: _scan3}
    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - depends on the environment
    HAVE_NUMBA = False
    _KERNELS = {}


def scan_affine(A: np.ndarray, C: np.ndarray, c: np.ndarray, inputs: Sequence[np.ndarray], x: np.ndarray,
                out: np.ndarray | None = None) -> np.ndarray:
    """Run L steps: ``A [L, k, k]``, ``C [L, k, m]``, ``c [L, k]``, inputs m arrays ``[L, G]`` (any float
    dtype, row-contiguous), state ``x [k, G]`` float64, updated in place to the state after the chunk.
    Returns (or fills ``out``) the first state component after each step, ``[L, G]`` float64."""
    L, k = A.shape[0], A.shape[1]
    m = len(inputs)
    if k > 3 or m > 3:
        raise ValueError(f"recurrences up to 3 states and 3 inputs are supported (got {k}, {m})")
    G = x.shape[1]
    y = np.empty((L, G)) if out is None else out
    if L == 0 or G == 0:
        return y
    Cp = np.zeros((L, k, 3))
    Cp[:, :, :m] = C
    ins = [np.ascontiguousarray(u) if not u.flags.c_contiguous else u for u in inputs]
    if not ins:
        ins = [np.zeros((L, G))]
    while len(ins) < 3:
        ins.append(ins[0])  # its coefficient is 0
    kern = _KERNELS.get(k)
    if kern is not None and x.dtype == np.float64 and x.flags.c_contiguous:
        kern(np.ascontiguousarray(A, dtype=np.float64), Cp, np.ascontiguousarray(c, dtype=np.float64),
             ins[0], ins[1], ins[2], x, y)
        return y
    for n in range(L):  # numpy fallback: loop over steps, vectorised over columns
        new = A[n] @ x + c[n][:, None]
        for j in range(m):
            new += np.outer(C[n, :, j], ins[j][n])
        x[...] = new
        y[n] = new[0]
    return y
