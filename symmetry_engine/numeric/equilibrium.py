"""Spherical motion of scale-invariant groups: the angular update per step and its equilibrium.

For a group whose loss is scale-invariant (BN), weight decay shrinks |θ_A| while the gradient, orthogonal
to θ_A, grows it; the two balance at an equilibrium where the angle θ_A turns through per step is
√(2ηλ/(1+β)) (spherical motion dynamics / rotational equilibrium; with dampening η → η(1−d)). Derivation:
at equilibrium N_{n+1} = N_n, so the exact law gives |Δ|² ≈ 2ηλN/(1+β) for heavy ball with Δ ⟂ θ.

The angle is computed exactly from logged statistics, with no checkpoint: U_n = (N_{n+1} − N_n − D_n)/2 is
⟨θ_n, Δ_n⟩, the part of Δ_n orthogonal to θ_n has |Δ_⟂|² = D_n − U_n²/N_n, and
tan(angle_n) = |Δ_⟂| / (|θ_n| + U_n/|θ_n|). (No arccos of a cosine near 1, which would lose half the digits.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class AngularUpdates:
    angles: np.ndarray        # [T, G] radians turned by each scale group at each step
    predicted: np.ndarray     # [T] equilibrium angle √(2η_n(1−d)λ/(1+β)) at each step's learning rate
    relaxation_steps: float   # ~ steps the norms need to reach equilibrium: (1−β) / (2 η(1−d) λ) at the final η

    def tail_ratio(self, fraction: float = 0.1) -> np.ndarray:
        """Per group: mean angle over the last ``fraction`` of steps divided by the prediction there."""
        k = max(1, int(round(self.angles.shape[0] * fraction)))
        return self.angles[-k:].mean(axis=0) / max(float(self.predicted[-k:].mean()), 1e-300)


def angular_updates(N: np.ndarray, D: np.ndarray, lrs: np.ndarray, momentum: float, dampening: float,
                    weight_decay: float) -> AngularUpdates:
    """Angles per step from the logged N (rows 0..T) and D (rows 0..T−1) of scale groups."""
    T = len(lrs)
    n0, n1, d = N[:T], N[1 : T + 1], D[:T]
    u = (n1 - n0 - d) / 2
    perp = np.sqrt(np.maximum(d - u * u / n0, 0.0))
    root = np.sqrt(n0)
    angles = np.arctan2(perp, root + u / root)
    eta = np.asarray(lrs, dtype=float) * (1 - dampening)
    predicted = np.sqrt(2 * eta * weight_decay / (1 + momentum))
    final = float(eta[-1]) * weight_decay if T else 0.0
    relax = (1 - momentum) / (2 * final) if final > 0 else float("inf")
    return AngularUpdates(angles, predicted, relax)
