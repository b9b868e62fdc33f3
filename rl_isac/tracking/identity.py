"""Track identities through close encounters: which track is which target after two tracks were confusable.

While two targets are closer than the front end resolves (range cell 2.4 m, beam ~0.06 in ``u``), every
peak near them is a merge, the assignment cannot tell the echoes apart, and two tracks can leave the
encounter swapped, or both on the same target (coalescence, the other target's echoes then unclaimed).
At start-up this is common: the velocity is still unknown (uniform heading prior) and targets spawn a
few metres apart (tracks_findings.md, mechanism A).

What still tells the targets apart is where each was *before* the encounter and where it goes *after*
it, both measured cleanly. Each track keeps an *anchor*: its last position while it was confusable with
no other track (at reset: the acquisition), with its variance and block. When two tracks that were
confusable separate, their current states are retrodicted to the anchors' blocks and the pairing of
{current states} with {anchors} of lower cost wins (2 hypotheses: as they are, or swapped)::

    p_back = p_q - n dT v_q,                          n = q - q_anchor
    s^2    = var_anchor + var(p_q) + (n dT)^2 var(v_q) + (v dT)^2 sigma_h^2 n^3 / 3
    cost   = ||p_back - p_anchor||^2 / s^2 + 2 ln s^2  (-2 ln of an isotropic 2-D Gaussian, up to a constant)

``sigma_h^2 = h^2 / 3`` is the heading step's variance (``db ~ U(-h, h)``); ``n^3 / 3`` the growth of the
position deviation of a heading random walk over ``n`` blocks (``sum_k k^2``). Two tracks that stay
indistinguishable for several blocks (NIS of their difference below the median) are one target tracked
twice: the one whose anchor the common state explains worse is a duplicate and goes searching
(:attr:`~rl_isac.tracking.ekf.EKFSettings.search_after_blocks`), which lets it take the unclaimed peaks of
the target it lost.

Pure numpy, no state; :class:`~rl_isac.tracking.ekf.EKFEstimator` keeps the anchors. Off by default
(``EKFSettings.resolve_identities``): on development worlds the signal-level retrodiction margins of true
start-up swaps were no larger than those of correct pairs, and the rule lost more target-blocks than it
saved (figures in :attr:`~rl_isac.tracking.ekf.EKFSettings.resolve_identities`). What the start-up case
needs is a multi-hypothesis assignment (track-oriented MHT or fixed-lag smoothing), not built.
"""

from __future__ import annotations

import numpy as np

CHI2_MEDIAN_2DOF = 1.3862943611198906
"""Median of chi-square with 2 degrees of freedom, ``2 ln 2``: two tracks whose position difference has an
NIS below it are statistically the same track."""


def pairwise_nis(x: np.ndarray, P: np.ndarray) -> np.ndarray:
    """``(I, I)`` NIS of the position difference of every pair of tracks, ``d^T (P_i + P_j)^-1 d``
    (``inf`` on the diagonal). ``x: (I, 4)``, ``P: (I, 4, 4)``."""
    d = x[:, None, :2] - x[None, :, :2]  # (I, I, 2)
    S = P[:, None, :2, :2] + P[None, :, :2, :2]
    det = np.maximum(S[..., 0, 0] * S[..., 1, 1] - S[..., 0, 1] * S[..., 1, 0], 1e-300)
    dx, dy = d[..., 0], d[..., 1]
    nis = (S[..., 1, 1] * dx * dx - 2 * S[..., 0, 1] * dx * dy + S[..., 0, 0] * dy * dy) / det
    np.fill_diagonal(nis, np.inf)
    return nis


def retrodiction_cost(x: np.ndarray, P: np.ndarray, anchor_m: np.ndarray, anchor_var_m2: np.ndarray,
                      blocks_back: np.ndarray, block_duration_s: float, step_m: float, heading_var_rad2: float
                      ) -> np.ndarray:
    """Cost of explaining anchor ``a`` by the current state of track ``k`` (module docstring), ``(K, A)``.

    Args:
        x: ``(K, 4)`` current states; P: ``(K, 4, 4)``.
        anchor_m: ``(A, 2)`` anchor positions; anchor_var_m2: ``(A,)`` their variance per axis, m^2.
        blocks_back: ``(A,)`` blocks since each anchor (``n``).
        block_duration_s: ``dT``; step_m: ``v dT``; heading_var_rad2: ``sigma_h^2``.
    """
    n = np.asarray(blocks_back, float)[None, :]  # (1, A)
    back = x[:, None, :2] - (n * block_duration_s)[..., None] * x[:, None, 2:]  # (K, A, 2)
    var_p = 0.5 * np.trace(P[:, :2, :2], axis1=-2, axis2=-1)[:, None]
    var_v = 0.5 * np.trace(P[:, 2:, 2:], axis1=-2, axis2=-1)[:, None]
    s2 = (np.asarray(anchor_var_m2, float)[None, :] + var_p + (n * block_duration_s) ** 2 * var_v
          + step_m**2 * heading_var_rad2 * n**3 / 3.0)
    dist2 = np.sum((back - np.asarray(anchor_m, float)[None]) ** 2, axis=-1)
    return dist2 / s2 + 2.0 * np.log(s2)


DECISIVE_COST = 4.0
"""Tracks are swapped only once the swapped pairing is this much cheaper (``-2 ln`` of a likelihood ratio:
odds ``e^2 = 7.4`` to 1); until then the anchors stay and the test is repeated, for a few blocks. On the
development worlds the evidence is weak: true start-up swaps reached margins of 1.9-2.8 only, and at 2.0 a
pair that had been right all along was swapped (its velocities, learnt through the merged echoes, bias the
retrodiction); at 4.0 neither happens there, so this rule resolves clear cases (tests) and leaves the rest."""


def swap_margin(cost: np.ndarray) -> float:
    """For a ``(2, 2)`` :func:`retrodiction_cost` of tracks ``(i, j)`` against anchors ``(i, j)``: how much
    cheaper the swapped pairing is than the current one (positive: swap more likely)."""
    return float(cost[0, 0] + cost[1, 1] - cost[0, 1] - cost[1, 0])


def should_swap(cost: np.ndarray) -> bool:
    """Is the swapped pairing more likely than the current one (:func:`swap_margin` > 0)?"""
    return swap_margin(cost) > 0.0


__all__ = ["CHI2_MEDIAN_2DOF", "DECISIVE_COST", "pairwise_nis", "retrodiction_cost", "swap_margin", "should_swap"]
